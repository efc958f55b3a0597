"""aggregations.native's shortcuts write the very bytes clickhouse-connect's own Native writer writes.

The reference is clickhouse-connect's insert serialization of the same rows (every run expanded); the
read-back through a real engine is test_native_insert's."""

import random
from datetime import timezone
from typing import Any

import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform

from aggregations.native import Runs, body

TYPES = {"lc": "LowCardinality(String)", "s": "String", "u64": "UInt64", "u32": "UInt32", "u8": "UInt8",
         "i64": "Int64", "flag": "Bool", "t": "DateTime64(3, 'UTC')", "f": "Nullable(Float64)",
         "m": "Map(LowCardinality(String), String)", "a": "Array(UInt8)", "a0": "Array(UInt8)", "n": "Nullable(UInt32)"}


def reference(names: list[str], columns: list[Any]) -> bytes:
    """clickhouse-connect's own body for the same rows."""
    types = [get_from_name(TYPES[name]) for name in names]
    plain = [column.expand() if isinstance(column, Runs) else column for column in columns]
    context = InsertContext("t", names, types, data=plain, column_oriented=True, block_size=len(plain[0]),
                            server_tz=timezone.utc)
    sent = b"".join(NativeTransform.build_insert(context))
    assert context.insert_exception is None
    return sent[sent.index(b"\n") + 1:]


def ours(names: list[str], columns: list[Any]) -> bytes:
    return body(names, [get_from_name(TYPES[name]) for name in names], columns, timezone.utc)


def words(rng: random.Random, count: int, distinct: int) -> list[str]:
    pool = [f"w{index}-{'ü' * (index % 3)}{'x' * (index % 140)}" for index in range(distinct)]
    return [rng.choice(pool) for _ in range(count)]


def runs_of(rng: random.Random, values: list[Any]) -> Runs:
    return Runs(values, [rng.randint(1, 30) for _ in values])


@pytest.mark.parametrize("distinct", [1, 2, 255, 256, 300, 70_000])
def test_low_cardinality_as_rows_and_as_runs(distinct: int) -> None:
    """Key widths change at 256 and 65,536 distinct values; a run's value counted once in the dictionary."""
    rng = random.Random(distinct)
    rows = words(rng, max(distinct * 2, 50), distinct)
    assert ours(["lc"], [rows]) == reference(["lc"], [rows])
    runs = runs_of(rng, words(rng, max(distinct, 50), distinct))
    assert ours(["lc"], [runs]) == reference(["lc"], [runs])


def test_every_type_the_worker_writes_in_runs_and_rows() -> None:
    rng = random.Random(7)
    batches = 400
    counts = [rng.randint(1, 25) for _ in range(batches)]
    rows = sum(counts)

    def runs(values: list[Any]) -> Runs:
        return Runs(values, counts)

    columns = {
        "lc": runs(words(rng, batches, 40)),
        "s": runs([f"session-{rng.randrange(10**9)}-é" if index % 5 else "" for index in range(batches)]),
        "u64": runs([rng.randrange(2**64) for _ in range(batches)]),
        "u32": runs([rng.randrange(2**32) for _ in range(batches)]),
        "u8": runs([rng.randrange(256) for _ in range(batches)]),
        "i64": runs([rng.randrange(-2**63, 2**63) for _ in range(batches)]),
        "flag": runs([rng.random() < 0.5 for _ in range(batches)]),
        "t": runs([1_760_000_000_000 + rng.randrange(10**9) for _ in range(batches)]),
        "f": runs([None if index % 3 == 0 else rng.random() * 100 for index in range(batches)]),
        "m": runs([{} if index % 4 else {"video": f"long-{index}"} for index in range(batches)]),
    }
    per_row = {"lc": words(rng, rows, 9), "s": [f"e{index}" for index in range(rows)],
               "t": [1_760_000_000_000 + index for index in range(rows)],
               "a": [[25, 50] if index % 7 == 0 else [] for index in range(rows)], "a0": [[] for _ in range(rows)],
               "n": [None if index % 2 else index for index in range(rows)],
               "flag": [index % 3 == 0 for index in range(rows)], "u8": [index % 200 for index in range(rows)]}
    names = list(columns)
    assert ours(names, list(columns.values())) == reference(names, list(columns.values()))
    names = list(per_row)
    assert ours(names, list(per_row.values())) == reference(names, list(per_row.values()))


def test_values_a_shortcut_cannot_take_go_to_clickhouse_connect_and_its_error() -> None:
    """A None in a non-Nullable column, a number out of range: the same refusal as clickhouse-connect's."""
    with pytest.raises(Exception, match="(?i)none|nullable|str"):
        ours(["lc"], [Runs(["a", None], [2, 1])])
    with pytest.raises(Exception, match="(?i)range|u64|native"):
        ours(["u64"], [Runs([1, -5], [1, 1])])


def test_an_empty_block_is_no_bytes() -> None:
    assert ours(["lc", "u64"], [[], Runs()]) == b""


def test_a_block_whose_columns_disagree_is_refused_not_written() -> None:
    """The server would read one column's rows into the next: corrupt, not an error, if it got that far."""
    with pytest.raises(ValueError, match="rows"):
        ours(["lc", "s"], [Runs(["a"], [16]), ["x"] * 10])
    with pytest.raises(ValueError, match="count"):
        Runs(["a"], [8, 8])
    with pytest.raises(ValueError, match="count"):
        Runs(["a"], [-1])


def test_values_without_rows_take_no_dictionary_key() -> None:
    runs = Runs(["a", "b", "c"], [0, 30, 0])  # long enough for the shortcut
    assert ours(["lc"], [runs]) == reference(["lc"], [runs])


def test_only_empty_lists_take_the_empty_array_shortcut() -> None:
    with pytest.raises(TypeError):
        ours(["a0"], [[None, None]])
    assert ours(["a0"], [[[], []]]) == reference(["a0"], [[[], []]])
