"""ClickHouseWriter: the worker's one class that writes (and reads back) sink state in ClickHouse."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable
from typing import Any

from aggregations.clickhouse import ClickHouse, ClickHouseError
from aggregations.metrics import WorkerMetrics
from aggregations.rows import DIMENSIONS, RAW_COLUMNS, SESSION_MINUTE_COLUMNS, BatchRange, SinkRows

# Session keys per session-history query: at most 20 digits and a comma each, 84 KB of parameter, within a
# ClickHouse server's default limit on one (http_max_field_value_size, 128 KiB).
HISTORY_KEYS_PER_QUERY = 4_000


class ClickHouseWriter:
    """``db`` takes the batches' rows; ``control`` (by default the same client) the reads and the small writes the
    sink makes while building a batch, so that on a server they need not wait behind another batch's rows."""

    def __init__(self, db: ClickHouse, metrics: WorkerMetrics, control: ClickHouse | None = None) -> None:
        self._db = db
        self._control = control or db
        self._metrics = metrics

    async def record_batch(self, batch: BatchRange) -> None:
        """The write-ahead note: written before the batch's rows, so a replay can cut the same batch."""
        row = (batch.consumer_group, batch.topic, batch.partition, batch.first_offset, batch.last_offset)
        await self._timed("sink_batches", self._control.ainsert(
            "sink_batches", [row], ("consumer_group", "topic", "partition", "first_offset", "last_offset")), 1)

    async def recorded_batches(self, consumer_group: str, topic: str, partition: int,
                               from_offset: int) -> dict[int, int]:
        """first_offset -> last_offset of every batch recorded from ``from_offset`` on: what a replay must cut again."""
        rows = await self._control.aquery(
            "SELECT first_offset, last_offset FROM sink_batches FINAL WHERE consumer_group = {g:String} "
            "AND topic = {t:String} AND partition = {p:UInt32} AND first_offset >= {o:UInt64}",
            {"g": consumer_group, "t": topic, "p": partition, "o": from_offset})
        return dict(rows)

    async def session_history(self, partition: int, before_offset: int,
                              keys: list[tuple[str, int]]) -> dict[int, list[tuple[str, str, int]]]:
        """(event_id, type, event_time_ms) of each session, as written by batches before this one.

        Asked HISTORY_KEYS_PER_QUERY sessions at a time: a batch of one-event beacons holds up to
        flush_max_events new sessions, and a ClickHouse server refuses a query parameter longer than its
        http_max_field_value_size (128 KiB by default; 20,000 keys are 400 KB). Refused, the call was
        retried forever and the partition stalled (seen catching up a backlog of one-event batches)."""
        history: dict[int, list[tuple[str, str, int]]] = {}
        pairs = sorted(set(keys))
        for start in range(0, len(pairs), HISTORY_KEYS_PER_QUERY):
            chunk = pairs[start:start + HISTORY_KEYS_PER_QUERY]
            rows = await self._control.aquery(
                "SELECT session_key, event_id, type, toUnixTimestamp64Milli(event_time) FROM events_raw "
                "WHERE account IN {accounts:Array(String)} AND session_key IN {keys:Array(UInt64)} "
                "AND NOT (kafka_partition = {p:UInt32} AND kafka_offset >= {o:UInt64})",
                {"accounts": sorted({account for account, _ in chunk}), "keys": sorted({key for _, key in chunk}),
                 "p": partition, "o": before_offset})
            for session_key, event_id, event_type, time_ms in rows:
                history.setdefault(session_key, []).append((event_id, event_type, time_ms))
        return history

    async def dimension_values(self, keys: list[tuple[str, dt.date, str]]) -> dict[tuple[str, dt.date, str], set[str]]:
        """The values admitted so far for each (account, day, dimension)."""
        rows = await self._control.aquery(
            "SELECT account, day, dimension, value FROM dimension_values FINAL "
            "WHERE (account, day, dimension) IN {keys:Array(Tuple(String, Date, String))}", {"keys": keys})
        found: dict[tuple[str, dt.date, str], set[str]] = {}
        for account, day, dimension, value in rows:
            found.setdefault((account, day, dimension), set()).add(value)
        return found

    async def admit_dimension_values(self, rows: list[tuple[str, dt.date, str, str]]) -> None:
        await self._timed("dimension_values", self._control.ainsert(
            "dimension_values", rows, ("account", "day", "dimension", "value")), len(rows))

    async def recent_sessions(self, partitions: list[int], since_ms: int, oldest_event_ms: int) -> list[tuple[Any, ...]]:
        """Sessions of these partitions active or received since ``since_ms``: (account, session_key,
        fingerprint, dimension values, [(event_id, type, event_time_ms, kafka_offset)], partition), to close
        the ones a previous owner left open. Received too: a late sender's or a replay's events are old;
        none is older than ``oldest_event_ms`` (the tracker's lateness), which keeps the read to the months
        that can hold them."""
        dimensions = ", ".join(DIMENSIONS)
        return await self._control.aquery(
            f"SELECT account, session_key, any(fingerprint), argMax(tuple({dimensions}), event_time), "
            "groupArray((event_id, type, toUnixTimestamp64Milli(event_time), kafka_offset)), any(kafka_partition) "
            "FROM events_raw WHERE kafka_partition IN {parts:Array(UInt32)} "
            "AND event_time >= fromUnixTimestamp64Milli({oldest:Int64}, 'UTC') "
            "AND (event_time >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') "
            "OR received_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')) AND NOT is_bot "
            "GROUP BY account, session_key", {"parts": partitions, "since": since_ms, "oldest": oldest_event_ms})

    async def write(self, rows: SinkRows, batch: BatchRange | None) -> None:
        """Raw events, then the same block to events_stream, whose views sum the metrics (each target
        drops a block it already holds by the batch's token), then session-minutes (idempotent)."""
        token = batch.token if batch else None
        if rows.raw:
            # serialized once: events_stream takes the same columns, and so the same bytes
            columns = rows.raw.columns
            block = await asyncio.to_thread(self._db.encode, "events_raw", RAW_COLUMNS, columns)
            await self._timed("events_raw", self._db.ainsert_block("events_raw", block, token), block.rows)
            if not await asyncio.to_thread(self._db.fits, "events_stream", block):
                # the two tables are kept alike (migration 0012), but a type changed on one must not stop the worker
                block = await asyncio.to_thread(self._db.encode, "events_stream", RAW_COLUMNS, columns)
            await self._timed("events_stream", self._db.ainsert_block("events_stream", block, token), block.rows)
        await self._timed("session_minutes", self._db.ainsert(
            "session_minutes", rows.session_minutes, SESSION_MINUTE_COLUMNS), len(rows.session_minutes))

    async def _timed(self, table: str, insert: Awaitable[None], count: int) -> None:
        started = time.perf_counter()
        try:
            await insert
        except ClickHouseError:
            self._metrics.insert_failures.labels(table).inc()
            raise
        if count:
            self._metrics.insert_latency.labels(table).observe(time.perf_counter() - started)
            self._metrics.rows_written.labels(table).inc(count)
