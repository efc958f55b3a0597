"""process → batch → write → ack, one batch per topic-partition.

The sink acknowledges a message (and so lets Faust commit its offset) only
after ClickHouse acknowledged the rows built from it. A failed write is
retried, never skipped. Exactly-once counting over at-least-once delivery
rests on three things:

* a batch's offset range is recorded before its rows are written, and a
  replay from the same offset cuts the same range, so the block carries the
  same deduplication token and each table (events_raw, and each view's table
  behind events_stream) drops it if it already holds it;
* events already seen in a session (client retries) are dropped before the
  write, from the sessionizer's memory or, after a restart, from events_raw,
  but never the events the replay itself delivers again: their block must be
  written whole, for the tables a crash kept it from;
* session-minutes are distinct counts, so writing one twice changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aggregations import sessions
from aggregations.caps import DimensionCaps
from aggregations.clickhouse import ClickHouseError
from aggregations.metrics import WorkerMetrics
from aggregations.rows import BatchRange, SessionIdentity, SinkRows, Writer
from ingest.models import EnrichedBatch

log = logging.getLogger(__name__)
RETRY_BACKOFF_S = (0.1, 0.5, 1, 2, 5)
# A partition with more unread messages than this is catching up a backlog: its batches fill to the flush count
# (for up to BACKLOG_MAX_AGE_S) instead of being cut every interval (see EventSink._filling).
BACKLOG_MESSAGES = 5_000
BACKLOG_MAX_AGE_S = 10.0
_ANY_OFFSET = 2**63  # past any partition's end: caught up iff its end is known
SLOW_CALL_S = 5.0  # a database call running longer than this holds the partitions back, as a failing one does
# How far back a newly assigned partition's sessions are reloaded: covers a restart or a
# rebalance that took up to about ten minutes beyond the session timeout.
RELOAD_WINDOW_MS = 15 * 60_000


@dataclass(frozen=True)
class SinkConfig:
    consumer_group: str
    topic: str
    session_timeout_ms: int
    close_grace_ms: int
    flush_interval_s: float
    flush_max_events: int
    dimension_cap_per_day: int = 10_000
    max_cached_sessions: int = 500_000
    lateness_ms: int = 7 * 24 * 3_600_000  # the tracker's: no accepted event is older than this when received


@dataclass
class _Pending:
    first_offset: int
    forced_last: int | None
    opened_at: float
    messages: list[tuple[int, EnrichedBatch | None, Any]] = field(default_factory=list)
    events: int = 0


@dataclass(slots=True)  # one per open session: no per-instance __dict__
class _Session:
    state: sessions.SessionState
    identity: SessionIdentity
    partition: int
    arrived_ms: int = 0  # wall clock of the last batch: late beacons arrive in bursts, not in event time
    # Reloaded on assignment: (kafka_offset, event) of its stored events, until the partition's first batch
    # says where the replay starts (events from there on are delivered again and are not duplicates).
    reloaded: list[tuple[int, tuple[str, str, int]]] | None = None


class EventSink:
    """Owns the pending batches and the sessionizer's cache of every assigned partition."""

    def __init__(self, writer: Writer, config: SinkConfig, metrics: WorkerMetrics,
                 ack: Callable[[Any], Awaitable[Any]], caught_up: Callable[[int, int], bool],
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._writer, self._config, self._metrics = writer, config, metrics
        self._ack, self._caught_up, self._clock_ms = ack, caught_up, clock_ms
        self._pending: dict[int, _Pending] = {}
        self._next_offset: dict[int, int] = {}
        self._watermark_ms: dict[int, int] = {}
        self._recorded: dict[int, dict[int, int]] = {}
        # where each assigned partition's replay began: the first offset read since its assignment (or a seek)
        self._replay_from: dict[int, int] = {}
        self._writing_since: float | None = None  # a batch being built counts as pending for its age
        # partition -> its last batch's write (rows, then acks) running beside the agent, and when that batch
        # opened: the next batch of any partition is built meanwhile (see _flush)
        self._inflight: dict[int, tuple[asyncio.Task[None], float]] = {}
        self._sessions: OrderedDict[int, _Session] = OrderedDict()
        self._lock = asyncio.Lock()
        self._failing_calls = 0  # database calls being retried right now
        self._calls: list[float] = []  # start (monotonic) of each database call in flight
        metrics.dimension_cap.set(config.dimension_cap_per_day)
        self._caps = DimensionCaps(config.dimension_cap_per_day, self._load_dimension_values,
                                   lambda dimension: metrics.dimension_folds.labels(dimension).inc())

    def next_offset(self, partition: int) -> int | None:
        """The next offset to consume of the partition, if this sink has read one since its assignment."""
        return self._next_offset.get(partition)

    def positions(self) -> dict[int, int]:
        """The next offset to consume of every partition this sink has seen since its assignment."""
        return dict(self._next_offset)

    @property
    def waiting_on_database(self) -> bool:
        """A database call failed and is being retried, or has been running for more than SLOW_CALL_S (an
        insert may take up to its timeout): every partition waits behind it, whoever's the fault."""
        return self._failing_calls > 0 or (bool(self._calls) and time.monotonic() - min(self._calls) > SLOW_CALL_S)

    def oldest_pending_age_s(self) -> float:
        now = time.monotonic()
        opened = [pending.opened_at for pending in self._pending.values()]
        opened += [opened_at for _, opened_at in self._inflight.values()]  # running, or failed: unwritten
        if self._writing_since is not None:
            opened.append(self._writing_since)
        return max((now - when for when in opened), default=0.0)

    async def add(self, partition: int, offset: int, batch: EnrichedBatch | None, handle: Any) -> None:
        """``batch`` is None for an unreadable message: it is acknowledged in turn and written nowhere."""
        async with self._lock:
            self._raise_failed_writes()
            pending = self._pending.get(partition)
            if partition in self._next_offset and offset < self._next_offset[partition]:
                # the consumer moved back (error recovery): it delivers the pending messages again, perhaps
                # some of the batch being written too, which must be recorded and acknowledged first
                await self._settle(partition)
                if pending is not None:
                    del self._pending[partition]
                    pending = None
            if pending is not None and pending.forced_last is not None and offset > pending.forced_last:
                await self._flush(partition)
                pending = None
            if pending is None:
                pending = await self._open(partition, offset)
            pending.messages.append((offset, batch, handle))
            pending.events += len(batch.events) if batch else 0
            self._next_offset[partition] = offset + 1
            if self._full(pending, offset):
                await self._flush(partition)

    async def flush_due(self) -> None:
        """Called by a timer: flushes batches past the interval and closes silent sessions."""
        async with self._lock:
            self._raise_failed_writes()
            now = time.monotonic()
            for partition, pending in list(self._pending.items()):
                age = now - pending.opened_at
                if pending.forced_last is None and age >= self._config.flush_interval_s \
                        and not self._writing(partition) and not self._filling(partition, age):
                    await self._flush(partition)
            closing = SinkRows(session_minutes=self._close_silent(None))
            if closing.session_minutes:
                await self._write_until_done(closing, None)

    def _filling(self, partition: int, age_s: float) -> bool:
        """Whether a partition far behind (more than BACKLOG_MESSAGES unread) lets its batch fill up to the flush
        count rather than be cut by the interval, for up to BACKLOG_MAX_AGE_S. Every insert has a cost of its own
        in the server (a part in each table, view and projection): catching up one-event messages in the batches
        one interval allows (a few thousand) ran at a third of the speed of full ones. Live traffic, never that
        far behind, is still written every interval."""
        next_offset = self._next_offset.get(partition)
        return (age_s < BACKLOG_MAX_AGE_S and next_offset is not None
                and self._caught_up(partition, _ANY_OFFSET)  # the partition's end is known: the lag is real
                and not self._caught_up(partition, next_offset + BACKLOG_MESSAGES))

    def _writing(self, partition: int) -> bool:
        """Whether the partition's last batch is still being written. The timer leaves such a partition to its
        next tick instead of waiting under the lock: the agent, blocked meanwhile, consumed nothing while small
        timed batches waited on the database (one-event messages caught up at a third of their speed)."""
        entry = self._inflight.get(partition)
        return entry is not None and not entry[0].done()

    async def settled(self) -> None:
        """Returns once every batch flushed so far is written and acknowledged."""
        async with self._lock:
            await self._settle_all(list(self._inflight))

    async def flush_all(self) -> int:
        """On shutdown: write what can be written (returns how many batches); a forced batch still
        short of its end stays unacked and is replayed."""
        async with self._lock:
            due = [partition for partition, pending in self._pending.items() if pending.forced_last is None]
            try:
                for partition in due:
                    await self._flush(partition)
            finally:
                await self._settle_all(list(self._inflight))
            return len(due)

    async def reload(self, partitions: set[int]) -> None:
        """On assignment: sessions a previous owner (or this worker before a restart) left open get
        their timeout stretch written by the timer, as if no one had stopped, once they have been silent
        for timeout + grace since the takeover (the replay comes first). Best effort: only
        concurrency minutes depend on it, and the window is RELOAD_WINDOW_MS back from now, by event time or
        by receipt."""
        since = self._clock_ms() - RELOAD_WINDOW_MS
        try:
            found = await self._writer.recent_sessions(sorted(partitions), since, since - self._config.lateness_ms)
        except (ClickHouseError, OSError) as exc:
            log.warning("could not reload open sessions of partitions %s: %s", sorted(partitions), exc)
            return
        async with self._lock:
            for account, key, fingerprint, dimensions, events, partition in found:
                if key in self._sessions:
                    continue
                stored = [(offset, (event_id, kind, time_ms)) for event_id, kind, time_ms, offset in events]
                replay_from = self._replay_from.get(partition)
                if replay_from is not None:
                    # the partition's replay began before this answer came (the reload runs beside the
                    # consumer): settled now as _open settles it, or what the replay delivers again would
                    # count as retried duplicates and lose its session-minutes (seen in the fault suite)
                    stored = [(offset, event) for offset, event in stored if offset < replay_from]
                    if not stored:
                        continue  # rebuilt from events_raw when its replayed batch comes
                state = sessions.SessionState.from_history([event for _, event in stored])
                identity = SessionIdentity(account, key, fingerprint, tuple(dimensions))
                # the takeover counts as an arrival: the previous owner's unwritten batches are still to be
                # replayed, and a stop among them must be able to end the stretch before the timer writes it
                self._sessions[key] = _Session(state, identity, partition, arrived_ms=self._clock_ms(),
                                               reloaded=None if replay_from is not None else stored)
            self._metrics.open_sessions.set(len(self._sessions))
        log.info("reloaded %d recent sessions of partitions %s", len(found), sorted(partitions))

    async def forget(self, partitions: set[int]) -> None:
        """On revocation: drop unacked batches (the next owner replays them) and their sessions."""
        async with self._lock:
            try:
                # a batch being written finishes first: its rows and acknowledgements, as before a revocation
                await self._settle_all(list(partitions))
            finally:
                for partition in partitions:
                    self._pending.pop(partition, None)
                    self._next_offset.pop(partition, None)
                    self._watermark_ms.pop(partition, None)
                    self._recorded.pop(partition, None)
                    self._replay_from.pop(partition, None)
                for key in [k for k, s in self._sessions.items() if s.partition in partitions]:
                    del self._sessions[key]
                self._metrics.open_sessions.set(len(self._sessions))

    async def _open(self, partition: int, offset: int) -> _Pending:
        """A batch may start where a replay of batches cut before starts: cut it the same way.

        On the first batch after a seek (assignment, restart) every batch
        recorded from that offset on is loaded; each later batch that opens at
        a recorded start gets that record's end, so the whole replay chains
        through the same cuts as the first run.
        """
        if self._next_offset.get(partition) != offset:
            self._recorded[partition] = await self._retrying(lambda: self._writer.recorded_batches(
                self._config.consumer_group, self._config.topic, partition, offset))
            self._replay_from[partition] = offset
            self._settle_reloaded(partition, offset)
        forced_last = self._recorded.get(partition, {}).pop(offset, None)
        pending = _Pending(offset, forced_last, time.monotonic())
        self._pending[partition] = pending
        return pending

    def _settle_reloaded(self, partition: int, replay_from: int) -> None:
        """Sessions reloaded on assignment forget what the replay from ``replay_from`` delivers again: those
        events were written before a crash, and perhaps not all of their rows were (the views' parts commit
        after events_raw's); as duplicates they would be dropped from the replayed block, and lost."""
        for key, cached in list(self._sessions.items()):
            if cached.partition != partition or cached.reloaded is None:
                continue
            before = [event for offset, event in cached.reloaded if offset < replay_from]
            if before:
                cached.state, cached.reloaded = sessions.SessionState.from_history(before), None
            else:
                del self._sessions[key]

    def _full(self, pending: _Pending, offset: int) -> bool:
        if pending.forced_last is not None:
            return offset >= pending.forced_last
        return pending.events >= self._config.flush_max_events

    async def _flush(self, partition: int) -> None:
        """Builds the batch, then leaves its write (its range recorded first, then its rows) to a task of its own.

        While ClickHouse takes one partition's rows, the agent consumes and builds the next batches (the worker
        and the server used to take turns). A partition's batches are still written and acknowledged one after
        the other: the next one is built only after the last one is written, so a session that left the cache
        is read back from events_raw whole."""
        await self._settle(partition)  # first: if it failed, this batch stays pending
        pending = self._pending.pop(partition)
        self._writing_since = pending.opened_at
        try:
            rows, batch_range = await self._prepare(partition, pending)
        finally:
            self._writing_since = None
        task = asyncio.create_task(self._write_batch(partition, pending, rows, batch_range),
                                   name=f"sink-write-{partition}-{pending.first_offset}")
        entry = self._inflight[partition] = (task, pending.opened_at)
        task.add_done_callback(lambda _: self._written(partition, entry))

    def _written(self, partition: int, entry: tuple[asyncio.Task[None], float]) -> None:
        """A write that succeeded leaves at once (its batch no longer counts as pending); a failed one stays
        until it is raised."""
        task = entry[0]
        if self._inflight.get(partition) is entry and not task.cancelled() and task.exception() is None:
            del self._inflight[partition]

    async def _settle(self, partition: int) -> None:
        """Waits for the partition's batch being written; a failure other than the database's is raised here.
        Shielded: a waiter cancelled (the agent or the timer stopping) leaves the write running, not half done."""
        entry = self._inflight.get(partition)
        if entry is None:
            return
        try:
            await asyncio.shield(entry[0])
        finally:
            if entry[0].done() and self._inflight.get(partition) is entry:
                del self._inflight[partition]

    async def _settle_all(self, partitions: list[int]) -> None:
        """Every one of these partitions' writes, even past a failure; the first failure is raised after."""
        failure: BaseException | None = None
        for partition in partitions:
            try:
                await self._settle(partition)
            except Exception as exc:  # raised below, once the others are written (a cancellation is not caught)
                failure = failure or exc
        if failure is not None:
            raise failure

    def _raise_failed_writes(self) -> None:
        """A write that failed for a reason retrying cannot fix (a bug) stops the agent (or the timer) at its next
        call; the batch was never acknowledged."""
        for partition, (task, _) in list(self._inflight.items()):
            if task.done():
                del self._inflight[partition]
                if not task.cancelled():
                    task.result()

    async def _prepare(self, partition: int, pending: _Pending) -> tuple[SinkRows, BatchRange]:
        batch_range = BatchRange(self._config.consumer_group, self._config.topic, partition,
                                 pending.first_offset, pending.messages[-1][0])
        rows = await self._build_rows(partition, pending)
        rows.session_minutes += self._close_silent(partition)
        return rows, batch_range

    async def _write_batch(self, partition: int, pending: _Pending, rows: SinkRows, batch_range: BatchRange) -> None:
        """The batch's range is recorded first, then its rows written, then its messages acknowledged. The
        record was awaited by the agent while it built the batch (4 % of a catch-up, bench/README.md); here the
        next batches are built meanwhile, and this partition's next one still waits for all of it."""
        if pending.forced_last is None:
            await self._retrying(lambda: self._writer.record_batch(batch_range))
        await self._write_until_done(rows, batch_range)
        for _, _, handle in pending.messages:
            await self._ack(handle)
        self._metrics.batch_size.observe(len(pending.messages))
        log.debug("flushed partition %d offsets %d-%d: %d raw rows", partition, pending.first_offset,
                  batch_range.last_offset, len(rows.raw))

    async def _build_rows(self, partition: int, pending: _Pending) -> SinkRows:
        readable = [(offset, batch) for offset, batch, _ in pending.messages if batch is not None]
        self._metrics.messages_consumed.inc(len(pending.messages))
        capped, admitted = await self._caps.apply([batch for _, batch in readable])
        if admitted:
            # awaited here, not by the write task: another partition's batch built next may carry these values
            # unfolded, and its rows must not be written (and acknowledged) before the values are (caps.py)
            await self._retrying(lambda: self._writer.admit_dimension_values(admitted))
        batches = [(offset, batch, folded) for (offset, _), (batch, folded) in zip(readable, capped, strict=True)]
        await self._load_missing_sessions(partition, pending.first_offset, [batch for _, batch, _ in batches])
        rows = SinkRows()
        for offset, batch, folded in batches:
            self._sessionize(partition, offset, batch, folded, rows)
        self._evict_overflow()
        return rows

    def _sessionize(self, partition: int, offset: int, batch: EnrichedBatch, folded: dict[str, str],
                    rows: SinkRows) -> None:
        cached = self._sessions[batch.session_key]
        if not cached.identity.describes(batch):
            cached.identity = SessionIdentity.of(batch)
        cached.arrived_ms = self._clock_ms()
        self._sessions.move_to_end(batch.session_key)
        self._metrics.events_consumed.inc(len(batch.events))
        fresh = cached.state.seen_ids.keep_new(batch.events)
        if len(fresh) < len(batch.events):
            self._metrics.events_duplicate.inc(len(batch.events) - len(fresh))
        if fresh:
            rows.raw.add(batch, fresh, partition, offset, folded)
            self._watermark_ms[partition] = max(self._watermark_ms.get(partition, 0),
                                                max(event.event_time_ms for event in fresh))
        if not batch.is_bot:
            minutes = sessions.advance_all(cached.state, [(event.type, event.event_time_ms) for event in fresh],
                                           self._config.session_timeout_ms)
            rows.session_minutes += cached.identity.minute_rows(minutes, sessions.exit_before_start(cached.state))

    async def _load_dimension_values(self, keys: list[Any]) -> dict[Any, set[str]]:
        return await self._retrying(lambda: self._writer.dimension_values(keys))

    async def _load_missing_sessions(self, partition: int, first_offset: int, batches: list[EnrichedBatch]) -> None:
        missing = {(b.account, b.session_key): b for b in batches if b.session_key not in self._sessions}
        if not missing:
            return
        history = await self._retrying(lambda: self._writer.session_history(
            partition, first_offset, list(missing)))
        for (_, key), batch in missing.items():
            events = history.get(key, [])
            # a bot's session (its key includes the User-Agent) never counts: it keeps only its event ids
            state = (sessions.SessionState(seen_ids=sessions.SeenIds(event_id for event_id, _, _ in events)) if batch.is_bot
                     else sessions.SessionState.from_history(events))
            self._sessions[key] = _Session(state, SessionIdentity.of(batch), partition)

    def _close_silent(self, partition: int | None) -> list[tuple[Any, ...]]:
        """Ends stretches no event can shorten any more; closed sessions leave the cache.

        A session closes once it has been silent for timeout + grace by both
        clocks: its last event is that old in event time, and no batch of it
        arrived for that long in wall-clock time. The second clock is for late
        senders (an offline player flushing its queue, a replay, a loaded
        tracker): their batches carry old event times, and the next one may be
        seconds behind, holding a stop that shortens the stretch. A closed
        stretch cannot be taken back, so the worker gives a late sender the
        same patience as a live one. A partition's unsessionized batch may hold
        more of the session: its sessions close at that batch's flush.
        """
        rows: list[tuple[Any, ...]] = []
        now_ms = self._clock_ms()
        silence_ms = self._config.session_timeout_ms + self._config.close_grace_ms
        closed: list[int] = []
        waiting: list[int] = []  # silent long enough by arrival, not yet by event time
        closing_times: dict[int, int] = {}
        for key, cached in self._sessions.items():
            if now_ms - cached.arrived_ms < silence_ms:
                # more of this session may be in flight, whatever its event times say; and of every later one:
                # the cache is in order of arrival (each batch moves its session to the end), so the walk stops
                # here instead of visiting every open session twice a second (a wall clock set back leaves
                # sessions behind this one open a little longer: late, never early)
                break
            if partition is not None and cached.partition != partition:
                continue
            if partition is None and cached.partition in self._pending:
                continue
            closing_ms = closing_times.get(cached.partition)
            if closing_ms is None:
                closing_ms = closing_times[cached.partition] = self._closing_time(cached.partition, now_ms)
            minutes = sessions.close(cached.state, closing_ms, self._config.session_timeout_ms,
                                     self._config.close_grace_ms)
            if minutes:
                rows += cached.identity.minute_rows(minutes, sessions.exit_before_start(cached.state))
            if not cached.state.closed:
                waiting.append(key)
            elif cached.partition not in self._pending:
                closed.append(key)
        for key in closed:
            del self._sessions[key]
        for key in waiting:
            # Behind the sessions heard from since, so the next walks stop before it: a partition replaying a
            # backlog closes by its event-time watermark, which the sessions of its last minutes are ahead of.
            # Left in place, each walk visited all of them (every session consumed more than timeout + grace
            # ago): 200,000 of them by the end of a catch-up, which fell from 84,000 to 27,000 events/s.
            # Visited again once the sessions ahead of it are silent too: closed late, never early.
            self._sessions.move_to_end(key)
        self._metrics.open_sessions.set(len(self._sessions))
        return rows

    def _closing_time(self, partition: int, now_ms: int) -> int:
        """Wall clock once the partition is caught up; while replaying a backlog, its event-time watermark."""
        next_offset = self._next_offset.get(partition)
        if next_offset is None or self._caught_up(partition, next_offset):
            return now_ms
        return min(now_ms, self._watermark_ms.get(partition, 0))

    def _evict_overflow(self) -> None:
        while len(self._sessions) > self._config.max_cached_sessions:
            self._sessions.popitem(last=False)
            self._metrics.sessions_evicted.inc()

    async def _write_until_done(self, rows: SinkRows, batch_range: BatchRange | None) -> None:
        await self._retrying(lambda: self._writer.write(rows, batch_range))

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Retries database failures forever: giving up would mean acknowledging events never written.
        Anything else is a bug and propagates, stopping the agent loudly rather than looping quietly."""
        attempt, started = 0, time.monotonic()
        self._calls.append(started)
        try:
            while True:
                try:
                    return await call()
                except (ClickHouseError, OSError) as exc:
                    delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                    log.warning("ClickHouse call failed (attempt %d), retrying in %.1f s: %s", attempt + 1, delay, exc)
                    if attempt == 0:
                        self._failing_calls += 1
                    attempt += 1
                    await asyncio.sleep(delay)
        finally:
            if attempt:
                self._failing_calls -= 1
            self._calls.remove(started)
