"""The dead-letter topic → ``rejected_events``: how many events each account had refused, by reason and day.

Every letter is written as one row keyed by its place in the topic (partition, offset), and acknowledged
(its offset may be committed) only after ClickHouse took the row. A redelivered letter writes the same
row again; the usage report counts distinct places, so nothing is counted twice. Letters without an
account (a whole envelope refused before its account could be trusted) are acknowledged and not counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aggregations.clickhouse import ClickHouse, ClickHouseError
from aggregations.rows import utc

log = logging.getLogger(__name__)
COLUMNS = ("account", "day", "reason", "kafka_partition", "kafka_offset")


def rejection_row(partition: int, offset: int, value: bytes | None) -> tuple[Any, ...] | None:
    """The row of one letter, or None for a letter that names no account (or is not a letter)."""
    try:
        letter = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(letter, dict) or not isinstance(letter.get("account"), str) or not letter["account"]:
        return None
    received = letter.get("received_at_ms")
    day: dt.date = utc(received).date() if isinstance(received, int) else dt.datetime.now(dt.UTC).date()
    reason = str(letter.get("reason") or "unknown").split(":", 1)[0]  # "too_late: event time is ..." → its code
    return letter["account"], day, reason, partition, offset


class RejectionSink:
    """Buffers letters, writes them on ``flush`` (a timer), then acknowledges them; a failed write is retried
    at the next flush and acknowledges nothing."""

    def __init__(self, db: ClickHouse, ack: Callable[[Any], Awaitable[Any]]) -> None:
        self._db, self._ack = db, ack
        self._pending: list[tuple[tuple[Any, ...] | None, Any]] = []
        self._lock = asyncio.Lock()

    async def add(self, partition: int, offset: int, value: bytes | None, handle: Any) -> None:
        async with self._lock:
            self._pending.append((rejection_row(partition, offset, value), handle))

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            rows = [row for row, _ in self._pending if row is not None]
            try:
                if rows:
                    await self._db.ainsert("rejected_events", rows, COLUMNS)
            except ClickHouseError as exc:
                log.warning("rejected events not written yet (%s); retrying at the next flush", exc)
                return
            for _, handle in self._pending:
                await self._ack(handle)
            self._pending = []
