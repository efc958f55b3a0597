"""The rows the worker writes and the writer interface it writes them through.

Column lists here and the migrations in ``migrations/`` describe the same
tables; a unit test keeps them in step.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from msgspec.structs import astuple

from aggregations.native import Runs
from ingest.models import EnrichedBatch, EnrichedEvent

DIMENSIONS = ("video", "country", "continent", "subdivision", "device_type", "os", "browser", "player",
              "timezone", "domain", "live", "viewer")

RAW_COLUMNS = ("account", "session", "session_key", "fingerprint", "event_id", "type", "event_time", "device_ts",
               "received_at", *DIMENSIONS, "user", "duration_s", "is_bot", "watched_ms", "position", "percentiles",
               "startup_ms", "percent", "rebuffer_ms", "server_side", "error_code", "error_message", "fatal",
               "kafka_partition", "kafka_offset", "folded")

SESSION_MINUTE_COLUMNS = ("account", "minute", *DIMENSIONS, "session_key", "fingerprint", "exit_before_start")


def utc(time_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(time_ms / 1000, dt.timezone.utc)


def dimension_values(batch: EnrichedBatch) -> tuple[Any, ...]:
    """The batch's values for DIMENSIONS, in that order."""
    return (batch.video, batch.country, batch.continent, batch.subdivision, batch.device_type, batch.os,
            batch.browser, batch.player, batch.tz, batch.domain, batch.live,
            "registered" if batch.user else "anonymous")


def raw_row(batch: EnrichedBatch, event: EnrichedEvent, partition: int, offset: int,
            folded: dict[str, str] | None = None) -> tuple[Any, ...]:
    """``folded``: the original values of dimensions written as "(other)" (see aggregations.caps)."""
    return raw_rows(batch, [event], partition, offset, folded)[0]


def raw_rows(batch: EnrichedBatch, events: list[EnrichedEvent], partition: int, offset: int,
             folded: dict[str, str] | None = None) -> list[tuple[Any, ...]]:
    """``raw_row`` of each event (for tests and tools: the worker fills ``RawColumns``)."""
    columns = RawColumns()
    columns.add(batch, events, partition, offset, folded)
    return list(columns)


# events_raw's columns that take an event's own field, by the field's name; the others are the batch's
_EVENT_FIELDS = {"event_id": "id", "type": "type", "event_time": "event_time_ms", "device_ts": "ts",
                 "watched_ms": "watched_ms", "position": "position", "percentiles": "percentiles",
                 "startup_ms": "startup_ms", "percent": "percent", "rebuffer_ms": "duration_ms",
                 "server_side": "server_side", "error_code": "code", "error_message": "message"}
_BATCH_COLUMNS = ("account", "session", "session_key", "fingerprint", "received_at", *DIMENSIONS, "user",
                  "duration_s", "is_bot", "kafka_partition", "kafka_offset", "folded")
_BY_EVENT = tuple(RAW_COLUMNS.index(name) for name in _EVENT_FIELDS)
# where each of those fields sits in an event's ``msgspec.structs.astuple``
_EVENT_FIELD_AT = tuple(EnrichedEvent.__struct_fields__.index(field) for field in _EVENT_FIELDS.values())
_TYPE_AT, _FATAL_AT = (EnrichedEvent.__struct_fields__.index(field) for field in ("type", "fatal"))
_BY_BATCH = tuple(RAW_COLUMNS.index(name) for name in _BATCH_COLUMNS)
_FATAL = RAW_COLUMNS.index("fatal")
_PER_EVENT = (*_BY_EVENT, _FATAL)  # RawColumns._events' columns, in their order
assert sorted((*_PER_EVENT, *_BY_BATCH)) == list(range(len(RAW_COLUMNS)))


class RawColumns:
    """events_raw's rows as columns (RAW_COLUMNS order), filled a batch at a time.

    The worker's raw rows never exist as tuples: building one 40-field tuple per event and transposing
    them for the Native block cost about 4 µs per event, a batch's columns a fraction of one
    (bench/README.md). The batch's own fields (account, session, video, country...) are kept once per batch
    with its event count, as ``native.Runs``, and encoded once per batch. ``event_time`` and ``received_at``
    are integer milliseconds, the ticks of their ``DateTime64(3)`` columns. Iterating gives rows, for tests
    and small writes."""

    __slots__ = ("_shared", "_counts", "_events")

    def __init__(self, rows: Iterable[Sequence[Any]] = ()) -> None:
        self._shared: list[tuple[Any, ...]] = []  # per batch, _BY_BATCH's values
        self._counts: list[int] = []  # per batch, its events
        self._events: list[list[Any]] = [[] for _ in range(len(_PER_EVENT))]  # _BY_EVENT's, then fatal
        for row in rows:
            if len(row) != len(RAW_COLUMNS):
                raise ValueError(f"a raw row has {len(RAW_COLUMNS)} values, not {len(row)}")
            self._shared.append(tuple(row[index] for index in _BY_BATCH))
            self._counts.append(1)
            for column, index in zip(self._events, _PER_EVENT, strict=True):
                column.append(row[index])

    def add(self, batch: EnrichedBatch, events: Sequence[EnrichedEvent], partition: int, offset: int,
            folded: dict[str, str] | None = None) -> None:
        """``folded``: the original values of dimensions written as "(other)" (see aggregations.caps)."""
        if not events:
            return
        self._shared.append((batch.account, batch.session, batch.session_key, batch.fingerprint, batch.received_at_ms,
                             *dimension_values(batch), batch.user, batch.duration_s, batch.is_bot, partition, offset,
                             folded or {}))
        self._counts.append(len(events))
        # The events' fields as tuples, transposed: two passes in C where a getter per column and event took
        # twice the time (bench/README.md)
        fields = list(zip(*map(astuple, events), strict=True))
        columns = self._events
        for column, at in zip(columns, _EVENT_FIELD_AT, strict=False):  # the last column is fatal
            column += fields[at]
        fatal = fields[_FATAL_AT]
        columns[-1] += [flag and kind == "error" for kind, flag in zip(fields[_TYPE_AT], fatal, strict=True)] if any(fatal) \
            else [False] * len(events)

    @property
    def columns(self) -> list[Sequence[Any] | Runs]:
        """One per RAW_COLUMNS name: a list of the events' values, or the batches' values as runs."""
        columns: list[Sequence[Any] | Runs] = [[] for _ in RAW_COLUMNS]
        counts = list(self._counts)  # copies: a later add() must not change columns already taken
        for position, index in enumerate(_BY_BATCH):
            columns[index] = Runs([shared[position] for shared in self._shared], counts)
        for column, index in zip(self._events, _PER_EVENT, strict=True):
            columns[index] = list(column)
        return columns

    def __len__(self) -> int:
        return len(self._events[0])

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        columns = [column.expand() if isinstance(column, Runs) else column for column in self.columns]
        return zip(*columns, strict=True)


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    """What a session-minute row says besides the minute: who, and under which dimensions."""

    account: str
    session_key: int
    fingerprint: int
    dimensions: tuple[Any, ...]

    @classmethod
    def of(cls, batch: EnrichedBatch) -> SessionIdentity:
        """Its strings interned: every open session holds one, and sessions share their videos, countries,
        devices... (a decoded batch brings copies of its own)."""
        dimensions = tuple(sys.intern(value) if type(value) is str else value for value in dimension_values(batch))
        return cls(sys.intern(batch.account), batch.session_key, batch.fingerprint, dimensions)

    def describes(self, batch: EnrichedBatch) -> bool:
        """Whether ``of(batch)`` would equal this: a session's batches mostly repeat its identity, and comparing
        spares interning it again."""
        return (self.dimensions == dimension_values(batch) and self.account == batch.account
                and self.fingerprint == batch.fingerprint and self.session_key == batch.session_key)

    def minute_rows(self, minutes: set[int], exit_minute: int | None = None) -> list[tuple[Any, ...]]:
        """Active minutes, plus the exit-before-start mark at the view's minute when there is one."""
        rows = [(self.account, utc(minute), *self.dimensions, self.session_key, self.fingerprint, False)
                for minute in sorted(minutes)]
        if exit_minute is not None:
            rows.append((self.account, utc(exit_minute), *self.dimensions, self.session_key, self.fingerprint, True))
        return rows


@dataclass
class SinkRows:
    """Everything one flush of one partition writes."""

    raw: RawColumns = field(default_factory=RawColumns)  # rows given as tuples are taken into columns
    session_minutes: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, RawColumns):
            self.raw = RawColumns(self.raw)


@dataclass(frozen=True)
class BatchRange:
    """A partition's batch by offsets; its name is the deduplication token of its raw block."""

    consumer_group: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def token(self) -> str:
        return f"{self.consumer_group}/{self.topic}/{self.partition}/{self.first_offset}-{self.last_offset}"


class Writer(Protocol):
    """Where the sink's rows go; ClickHouseWriter in production, a recording fake in unit tests."""

    async def record_batch(self, batch: BatchRange) -> None: ...

    async def recorded_batches(self, consumer_group: str, topic: str, partition: int,
                               from_offset: int) -> dict[int, int]: ...

    async def session_history(self, partition: int, before_offset: int,
                              keys: list[tuple[str, int]]) -> dict[int, list[tuple[str, str, int]]]: ...

    async def write(self, rows: SinkRows, batch: BatchRange | None) -> None: ...

    async def dimension_values(self, keys: list[tuple[str, dt.date, str]]) -> dict[tuple[str, dt.date, str], set[str]]: ...

    async def admit_dimension_values(self, rows: list[tuple[str, dt.date, str, str]]) -> None: ...

    async def recent_sessions(self, partitions: list[int], since_ms: int) -> list[tuple[Any, ...]]: ...
