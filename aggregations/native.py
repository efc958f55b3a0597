"""ClickHouse's Native format for the worker's blocks: clickhouse-connect's types, with shortcuts for their shapes.

A batch's own fields (account, session, video, country... 18 of events_raw's 37 columns) are the same for
each of its events. clickhouse-connect takes a value per row: they were copied to every row, and encoded
row by row (a LowCardinality column's dictionary in a Python loop over every row). Here a column may be
given as ``Runs`` (each value with the number of rows that repeat it): a LowCardinality dictionary is built
from the runs' values, and a run's bytes are encoded once and repeated by C loops (``bytes * count``, joined).
Rows, short runs (one-event batches) and every other type go through clickhouse-connect's own writer, whose
C loops beat a Python step per run there. A unit test holds the bytes equal to clickhouse-connect's.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from math import log
from operator import mul, truth
from typing import Any

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.common import array_type, write_leb128, write_uint64
from clickhouse_connect.driver.ctypes import data_conv
from clickhouse_connect.driver.insert import InsertContext

# LowCardinality's serialization: version 1 before the data; the index type (UInt8..UInt64 by how many
# distinct values) in the low bits of a word flagging a new dictionary (bit 9) and additional keys (bit 10).
_LC_VERSION = 1
_LC_FLAGS = (1 << 9) | (1 << 10)
_LITTLE = sys.byteorder == "little"

# Runs shorter than this on average are expanded and written by clickhouse-connect's C loops: at one row per
# run the shortcuts cost more than they save (bench/README.md, "7 December, late").
LONG_RUN = 8

# Fixed-width types whose runs are packed once per run: the format of one value.
_FIXED = {"UInt8": "<B", "UInt32": "<I", "UInt64": "<Q", "Int64": "<q", "Bool": "<B", "DateTime64(3, 'UTC')": "<q"}


@dataclass(frozen=True, slots=True)
class Runs:
    """A column as runs: ``values[i]`` repeated ``counts[i]`` times (a batch's fields, once per event)."""

    values: list[Any] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.values) != len(self.counts) or any(count < 0 for count in self.counts):
            raise ValueError(f"runs need a count >= 0 per value: {len(self.values)} values, counts {self.counts[:10]}")

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def long(self) -> bool:
        """Whether its runs are long enough (LONG_RUN rows on average) for a step per run to pay."""
        return len(self.values) * LONG_RUN <= len(self)

    def expand(self) -> list[Any]:
        """A value per row (``values`` itself when every run is one row: not to be changed)."""
        if self.counts.count(1) == len(self.counts):
            return self.values
        return list(chain.from_iterable(map(repeat, self.values, self.counts)))


Column = Sequence[Any] | Runs


def body(names: Sequence[str], types: Sequence[ClickHouseType], columns: Sequence[Column], server_tz: Any) -> bytes:
    """The Native body of one block: what clickhouse-connect's insert sends after its INSERT line."""
    rows = len(columns[0]) if columns else 0
    if not rows:
        return b""
    context = InsertContext("unused", list(names), list(types), column_oriented=True, block_size=rows,
                            server_tz=server_tz)
    out = bytearray()
    write_leb128(len(names), out)
    write_leb128(rows, out)
    for name, col_type, column in zip(names, types, columns, strict=True):
        if len(column) != rows:  # a block's columns must agree, or the server would read the next one's bytes
            raise ValueError(f"column {name} has {len(column)} rows, {names[0]} has {rows}")
        for text in (name, col_type.insert_name):
            encoded = text.encode()
            write_leb128(len(encoded), out)
            out += encoded
        context.start_column(name)
        data = _shortcut(col_type.name, column)
        if data is not None:
            out += data
        else:  # clickhouse-connect's writer, which also raises its own error for a value its type cannot take
            col_type.write_column(column.expand() if isinstance(column, Runs) else column, out, context)
    return bytes(out)


def _shortcut(type_name: str, column: Column) -> bytes | None:
    """The column's bytes (with its prefix) by a shortcut, or None where there is none for this type and shape.
    Rows, and short runs (one-event batches) expanded, are left to clickhouse-connect, whose loops (in C but for
    LowCardinality's dictionary) beat a Python step per run."""
    if not isinstance(column, Runs):
        return _per_row(type_name, column)
    if not column.long:
        return None
    if type_name == "LowCardinality(String)":
        return _low_cardinality_string(column)
    if type_name == "String":
        return _string_runs(column)
    if type_name == "Nullable(Float64)":
        return _nullable_float_runs(column)
    fmt = _FIXED.get(type_name)
    if fmt is not None:
        if type_name == "Bool":  # clickhouse-connect writes any true value as 1
            column = Runs([1 if value else 0 for value in column.values], column.counts)
        return _fixed_runs(struct.Struct(fmt).pack, column)
    return None


def _per_row(type_name: str, column: Sequence[Any]) -> bytes | None:
    """Two per-event columns most events leave at their default: flags (a byte each, by C's truth test) and
    quartile percentiles (empty arrays are just their offsets, all zero)."""
    if type_name == "Bool":
        return bytes(map(truth, column))
    if type_name == "Array(UInt8)" and column.count([]) == len(column):
        return bytes(8 * len(column))
    return None


def _low_cardinality_string(column: Runs) -> bytes | None:
    """The dictionary in first-seen order, as clickhouse-connect writes it, from the runs' values; each run's
    key packed once and repeated."""
    index = list(dict.fromkeys(compress(column.values, column.counts)))  # a value with no rows has no key
    if not all(type(value) is str for value in index):
        return None
    index_type = int(log(len(index), 2)) >> 3  # clickhouse-connect's choice of key width, kept for equal bytes
    code = array_type(1 << index_type, False)
    packed_key = {value: _packed(code, [key]) for key, value in enumerate(index)}
    keys = b"".join(map(mul, map(packed_key.get, column.values, repeat(b"")), column.counts))
    out = bytearray()
    write_uint64(_LC_VERSION, out)
    write_uint64(_LC_FLAGS | index_type, out)
    write_uint64(len(index), out)
    out += _strings(index)
    write_uint64(len(column), out)
    out += keys
    return bytes(out)


def _string_runs(column: Runs) -> bytes | None:
    """Each run's value encoded once (its length, then its UTF-8) and repeated."""
    if not all(type(value) is str for value in column.values):
        return None
    return b"".join(map(mul, map(_strings, zip(column.values)), column.counts))


def _nullable_float_runs(column: Runs) -> bytes | None:
    """The null map, then the values (0.0 under a null), each run's byte and value written once."""
    if not all(value is None or type(value) in (int, float) for value in column.values):
        return None
    nulls = b"".join(map(mul, [b"\x01" if value is None else b"\x00" for value in column.values], column.counts))
    pack = struct.Struct("<d").pack
    floats = [pack(0.0 if value is None else float(value)) for value in column.values]
    return nulls + b"".join(map(mul, floats, column.counts))


def _fixed_runs(pack: Callable[[Any], bytes], column: Runs) -> bytes | None:
    if not all(type(value) in (int, bool) for value in column.values):
        return None
    try:
        return b"".join(map(mul, map(pack, column.values), column.counts))
    except struct.error:  # out of the type's range: clickhouse-connect's writer says so
        return None


def _packed(code: str, values: Sequence[int]) -> bytes:
    packed = array(code, values)
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def _strings(values: Sequence[str]) -> bytes:
    """Strings as a Native String column, by clickhouse-connect's own (C) writer; callers checked they are str,
    so it has no error to return."""
    out = bytearray()
    data_conv.write_str_col(values, False, "utf8", out)
    return bytes(out)
