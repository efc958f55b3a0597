"""The rows the worker writes and the writer interface it writes them through.

Column lists here and the migrations in ``migrations/`` describe the same
tables; a unit test keeps them in step.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    """``raw_row`` of each event: what the batch's events share (who, dimensions, receipt) is built once.
    ``event_time`` and ``received_at`` are integer milliseconds, the ticks of their ``DateTime64(3)``
    columns: no ``datetime`` object per event to build here and to take apart again when serialized."""
    head = (batch.account, batch.session, batch.session_key, batch.fingerprint)
    middle = (batch.received_at_ms, *dimension_values(batch), batch.user, batch.duration_s, batch.is_bot)
    folded = folded or {}
    return [(*head, event.id, event.type, event.event_time_ms, event.ts, *middle,
             event.watched_ms, event.position, event.percentiles, event.startup_ms, event.percent, event.duration_ms,
             event.server_side, event.code, event.message, event.fatal if event.type == "error" else False, partition,
             offset, folded) for event in events]


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

    raw: list[tuple[Any, ...]] = field(default_factory=list)
    session_minutes: list[tuple[Any, ...]] = field(default_factory=list)


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
