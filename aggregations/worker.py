"""The Faust app: one agent that feeds the sink, one timer that flushes it.

Started inside an existing event loop (``vidpulse up`` shares it with the
HTTP server; ``vidpulse worker`` runs it beside /metrics). Faust's own web
server and tables are off: the sink keeps its state in ClickHouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import faust
from faust.sensors.monitor import Monitor

from aggregations.clickhouse import ClickHouse
from aggregations.delivery import deliver_in_place
from aggregations.metrics import WorkerMetrics
from aggregations.progress import PartitionProgress, Position
from aggregations.rejections import RejectionSink
from aggregations.sequence import OffsetSequencer
from aggregations.sink import EventSink, SinkConfig
from aggregations.writer import ClickHouseWriter
from ingest.models import EnrichedBatch, NotABatch, decode_batch
from ingest.settings import Settings

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0
START_OFFSET_TIMEOUT_S = 10.0


class QuietMonitor(Monitor):
    """Faust's Monitor sensor without its statistics per message, which only Faust's web views (off here) show:
    timing and counting every message four times (deques, dictionaries, a stream's name looked up) was about a
    fifth of what Faust cost per message (bench/README.md). It keeps the one figure Faust itself reads, when
    each partition's stream last took an event (the consumer's periodic check that streams still move, which
    logs an error for a partition whose stream seems idle). The worker's own metrics are its Prometheus ones."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """The worker's Faust app, without its agents (bench/throughput.py measures Faust alone on it). Call
    ``prepare_to_start`` on it before starting it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level of its datadir
    return faust.App(
        settings.consumer_group, broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
        autodiscover=False, topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication, consumer_auto_offset_reset="earliest",
        stream_wait_empty=False, broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=2.0, datadir=str(settings.data_dir / "faust"),
        value_serializer="raw", key_serializer="raw", producer_acks=-1,
        # No tables, so no standbys: with 0, Faust hands the group to Kafka's round-robin assignor. Its own
        # assignor can leave a joining worker with no partition at all (faust-streaming issues #93, #401):
        # seen in the fault suite, a fourth worker sat idle through a whole load.
        table_standby_replicas=0,
        # Faust's default, 1 MiB per partition per fetch (about 400 messages of 20 events), left the agent
        # waiting for the next fetch three quarters of the time while catching up a backlog: 8 MiB took the
        # worker from 38,000 to 54,000 events/s (bench/README.md, "7 December, later").
        consumer_max_fetch_size=settings.consumer_fetch_bytes,
        Monitor=QuietMonitor,
    )


def prepare_to_start(app: faust.App) -> None:
    """Inside the loop the app will run in (its consumer binds to that loop): it runs as a worker, and its
    fetcher hands each message over in place (``aggregations/delivery.py``)."""
    app.in_worker = True
    deliver_in_place(app.consumer)


class Worker:
    """A started Faust app plus the sink its agent writes through."""

    def __init__(self, settings: Settings, bootstrap: str, db: ClickHouse, metrics: WorkerMetrics,
                 control_db: ClickHouse | None = None) -> None:
        """``control_db``: a second client for the sink's reads while ``db`` writes a batch (see ClickHouseWriter)."""
        self.app = faust_app(settings, bootstrap)
        self.topic = self.app.topic(settings.events_topic, value_type=bytes, key_type=bytes,
                                    partitions=settings.topic_partitions)
        self.sink = EventSink(ClickHouseWriter(db, metrics, control_db), _sink_config(settings), metrics,
                              ack=self._ack, caught_up=self._caught_up)
        self._metrics = metrics
        self._sequencer = self._sequencer_of(self.topic, self.sink.next_offset)
        self._progress = PartitionProgress()
        self._unread: dict[int, int] = {}  # next offset of assigned partitions the sink has not read yet
        self._end_offsets: dict[int, int] = {}  # asked of the broker: a partition never fetched has no highwater
        metrics.watch(self._lag, self.sink.oldest_pending_age_s)
        self._stream: Any = None
        self._acking: set[int] = set()  # messages a sink is acknowledging right now (see _guard_acks)
        self._reloading: asyncio.Future[None] | None = None
        self.app.agent(self.topic, name="sink")(self._consume)
        # the tracker's refusals, counted per account for the usage report
        self.dead_letters = self.app.topic(settings.dead_letter_topic, value_type=bytes, key_type=bytes,
                                           partitions=settings.topic_partitions)
        self.rejections = RejectionSink(db, self._ack_rejection)
        self._letters_next: dict[int, int] = {}  # next dead letter to read, per partition, since its assignment
        self._letter_sequencer = self._sequencer_of(self.dead_letters, self._letters_next.get)
        self._rejection_stream: Any = None
        self.app.agent(self.dead_letters, name="rejections")(self._consume_rejections)
        self.app.timer(settings.flush_interval_s)(self.rejections.flush)
        # ticking at half the interval keeps a batch from waiting almost two intervals for its tick
        self.app.timer(settings.flush_interval_s / 2)(self.sink.flush_due)
        self.app.timer(PROGRESS_EVERY_S)(self._watch_progress)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    def _sequencer_of(self, topic: Any, next_offset: Callable[[int], int | None]) -> OffsetSequencer:
        return OffsetSequencer(next_offset, partial(self._start_offset, topic), partial(self._log_start, topic),
                               partial(self._seek_back, topic), on_rewind=self._metrics.offset_rewinds.inc)

    async def start(self) -> None:
        prepare_to_start(self.app)
        self._guard_acks()
        await self.app.start()

    def _guard_acks(self) -> None:
        """Faust's stream acknowledges the messages it skips (another generation's, or taken while a rebalance
        holds the flow), and an acknowledged offset may be committed: a commit could then run past messages no
        sink has written, lost if the worker dies before they come again. Only the sinks' own acknowledgements
        (``_acknowledge``) reach Faust's consumer. Wraps a method of Faust 0.15.3's consumer instance."""
        consumer = self.app.consumer
        faust_ack = consumer.ack

        def ack(message: Any) -> bool:
            return id(message) in self._acking and bool(faust_ack(message))

        consumer.ack = ack

    async def _acknowledge(self, stream: Any, event: Any) -> None:
        key = id(event.message)
        self._acking.add(key)
        try:
            await stream.ack(event)
        finally:
            self._acking.discard(key)

    async def stop(self) -> None:
        """Flushes what it can first, so a clean shutdown leaves nothing to replay."""
        flushed = await self.sink.flush_all()
        await self.rejections.flush()
        log.info("shutdown: flushed %d pending batches", flushed)
        await self.app.stop()
        await self.sink.settled()  # a batch the agent or the timer flushed meanwhile

    async def _consume(self, stream: Any) -> None:
        self._stream = stream.noack()
        async for event in self._stream.events():
            message = event.message
            if await self._sequencer.admit(message.partition, message.offset):
                await self.sink.add(message.partition, message.offset, _decode(event.value), event)

    async def _consume_rejections(self, stream: Any) -> None:
        self._rejection_stream = stream.noack()
        async for event in self._rejection_stream.events():
            partition, offset = event.message.partition, event.message.offset
            if await self._letter_sequencer.admit(partition, offset):
                self._letters_next[partition] = offset + 1  # before the await: a revocation during it clears it
                await self.rejections.add(partition, offset, event.value, event)

    async def _ack_rejection(self, event: Any) -> None:
        await self._acknowledge(self._rejection_stream, event)

    async def _ack(self, event: Any) -> None:
        await self._acknowledge(self._stream, event)

    def _caught_up(self, partition: int, next_offset: int) -> bool:
        """Whether the sink has read all the partition holds, by the newer of the fetches' highwater and the end
        offset last asked of the broker (a fetcher cut off from a dead leader keeps an old highwater). Unknown
        (revoked meanwhile) counts as behind: sessions then close by event time, late at worst, never early."""
        try:  # aiokafka runs in Faust's thread: a rebalance between two reads makes this one raise
            fetched = self.app.consumer.highwater(self.topic_partition(partition))
        except Exception:  # noqa: BLE001 - revoked meanwhile
            fetched = None
        highwater = max(fetched if fetched is not None else -1, self._end_offsets.get(partition, -1))
        return highwater >= 0 and next_offset >= highwater

    def _lag(self) -> dict[int, int]:
        return {partition: position.lag for partition, position in self._positions().items()}

    def _positions(self) -> dict[int, Position]:
        """Every assigned partition of the events topic: the sink's next offset where it has read one since
        the assignment, else where the consumer resumes it (last sampled by ``_sample_offsets``)."""
        read = self.sink.positions()
        found = {}
        for tp in self._assigned():
            try:  # aiokafka runs in Faust's thread: a rebalance between two reads makes this one raise
                fetched = self.app.consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - revoked meanwhile: not ours to report
                continue
            highwater = max(fetched if fetched is not None else -1, self._end_offsets.get(tp.partition, -1))
            next_offset = read.get(tp.partition, self._unread.get(tp.partition))
            if highwater >= 0 and next_offset is not None:
                found[tp.partition] = Position(next_offset, highwater)
        return found

    def _assigned(self) -> list[Any]:
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - not started or stopping: nothing is assigned
            return []
        return [tp for tp in assignment if tp.topic == self.topic.get_topic_name()]

    async def _watch_progress(self) -> None:
        """Reports partitions that stopped moving. Never raises: Faust's timer would die with it."""
        try:
            await self._sample_offsets()
            positions = self._positions()
            for partition in self._progress.observe(time.monotonic(), positions, self.sink.waiting_on_database):
                self._report_stall(partition, positions[partition])
            self._metrics.stalled_partitions.set(len(self._progress.stalled()))
        except Exception:  # noqa: BLE001 - an observer must not take the worker down
            log.exception("watching the partitions' progress failed; trying again in %.0f s", PROGRESS_EVERY_S)

    async def _sample_offsets(self) -> None:
        """Where each assigned partition ends (asked of the broker: a partition never fetched has no highwater)
        and where each unread one resumes; one deadline for all, so a broker outage cannot pile calls up."""
        assigned, read = self._assigned(), self.sink.positions()
        unread = [tp for tp in assigned if tp.partition not in read]
        try:
            ends, *resumes = await asyncio.wait_for(asyncio.gather(
                self.app.consumer.highwaters(*assigned) if assigned else _nothing(),
                *(self._resume_offset(tp) for tp in unread)), PROGRESS_EVERY_S - 1)
        except Exception as exc:  # noqa: BLE001 - broker away: the fetches' own highwaters still count
            log.debug("could not sample the partitions' offsets: %r", exc)
            return
        self._end_offsets = {tp.partition: offset for tp, offset in ends.items()}
        self._unread = {tp.partition: offset for tp, offset in zip(unread, resumes, strict=True) if offset is not None}

    def _report_stall(self, partition: int, position: Position) -> None:
        self._metrics.partition_stalls.inc()
        log.warning("partition %d of %s is assigned to this worker, has %d messages waiting and has not moved for "
                    "%.0f s (next offset %d): its events are counted late until it moves (restarting this worker "
                    "moves it). Consumer state: %s", partition, self.topic.get_topic_name(), position.lag,
                    self._progress.stall_after_s, position.next_offset,
                    self._consumer_state(self.topic_partition(partition)))

    async def _start_offset(self, topic: Any, partition: int) -> int | None:
        """Where the consumer resumed the partition at its assignment: the committed offset (Faust's own record of
        it, private, where 0 reads as None), else the log's start (``auto_offset_reset`` is earliest)."""
        committed = self._committed(_tp(topic, partition))
        if committed:
            return committed
        return await self._log_start(topic, partition)

    async def _log_start(self, topic: Any, partition: int) -> int | None:
        """The partition's first offset still in the log; None if the broker cannot say now (the caller then
        admits the message as it comes, or seeks back as if the offsets were there)."""
        tp = _tp(topic, partition)
        try:
            earliest = await asyncio.wait_for(self.app.consumer.earliest_offsets(tp), START_OFFSET_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - broker away
            log.warning("could not ask where partition %d of %s starts: %r", partition, tp.topic, exc)
            return None
        start = earliest.get(tp)
        return int(start) if start is not None else None

    async def _seek_back(self, topic: Any, partition: int, offset: int) -> None:
        """Seeks in the consumer's own thread (``seek_wait``, which also resets Faust's read offset, below which
        it drops messages), then takes back what Faust counted as done from ``offset`` on, all private: its
        acknowledgements (its stream acknowledges the messages it skips) and its gaps (offsets it jumped over).
        Either would let a commit run ahead of the sink."""
        tp = _tp(topic, partition)
        try:
            await self.app.consumer.seek_wait({tp: offset})
        except Exception as exc:  # noqa: BLE001 - revoked meanwhile: the next assignment starts from the commit
            log.warning("could not seek partition %d of %s back to %d: %r", partition, tp.topic, offset, exc)
            return
        consumer = self.app.consumer
        acked = getattr(consumer, "_acked", {}).get(tp)
        if acked:
            acked[:] = [done for done in acked if done < offset]
        index = getattr(consumer, "_acked_index", {}).get(tp)
        if index:
            index.difference_update([done for done in index if done >= offset])
        gaps = getattr(consumer, "_gap", {}).get(tp)
        if gaps:
            gaps.chop(offset, 2**63)

    def _committed(self, tp: Any) -> int | None:
        """Faust's own record of the partition's committed offset (private; 0 and none both read as None)."""
        committed = getattr(self.app.consumer, "_committed_offset", {}).get(tp)
        return int(committed) if committed is not None else None

    async def _resume_offset(self, tp: Any) -> int | None:
        """The committed offset (Faust's own record of it, private), else the fetcher's position."""
        committed = self._committed(tp)
        if committed is not None:
            return committed
        try:
            return await self.app.consumer.position(tp)
        except Exception:  # noqa: BLE001 - no position yet (being reset): no figure this round
            return None

    def _consumer_state(self, tp: Any) -> str:
        """Which layer holds a stalled partition back, from Faust's and aiokafka's private state: read for the
        log line only, so a change in either library costs a detail here, never the worker."""
        consumer = self.app.consumer
        parts = [f"flow_active={getattr(consumer, 'flow_active', '?')}"]
        for name in ("_active_partitions", "_paused_partitions", "_buffered_partitions"):
            held = getattr(consumer, name, None)
            parts.append(f"{name.strip('_')}={'?' if held is None else tp in held}")
        try:
            state = consumer._thread._ensure_consumer()._subscription.subscription.assignment.state_value(tp)
            parts.append(f"aiokafka paused={state.paused} valid_position={state.has_valid_position} "
                         f"awaiting_reset={state.awaiting_reset}")
        except Exception:  # noqa: BLE001 - diagnostics only
            parts.append("aiokafka state unknown")
        return ", ".join(parts)

    def topic_partition(self, partition: int) -> Any:
        return _tp(self.topic, partition)

    async def _on_assigned(self, app: Any, assigned: Any, **_: Any) -> None:
        self._progress.restart()  # a rebalance holds every partition back for a while: each starts afresh
        ours = {tp.partition for tp in assigned if tp.topic == self.topic.get_topic_name()}
        if ours:
            # in the background: a rebalance must not wait on ClickHouse
            self._reloading = asyncio.ensure_future(self.sink.reload(ours))

    async def _on_revoked(self, app: Any, revoked: Any, **_: Any) -> None:
        ours = {tp.partition for tp in revoked if tp.topic == self.topic.get_topic_name()}
        letters = {tp.partition for tp in revoked if tp.topic == self.dead_letters.get_topic_name()}
        self._sequencer.forget(ours)
        self._letter_sequencer.forget(letters)
        for partition in letters:
            self._letters_next.pop(partition, None)
        await self.sink.forget(ours)


async def _nothing() -> dict[Any, int]:
    return {}


def _tp(topic: Any, partition: int) -> Any:
    return faust.types.TP(topic.get_topic_name(), partition)


def _decode(value: bytes) -> EnrichedBatch | None:
    """None for a message that is not an enriched batch: acknowledged with its batch, written nowhere."""
    try:
        return decode_batch(value)
    except NotABatch as exc:
        log.error("skipping a message that is not an enriched batch: %s", exc)
        return None


def _sink_config(settings: Settings) -> SinkConfig:
    return SinkConfig(
        consumer_group=settings.consumer_group, topic=settings.events_topic,
        session_timeout_ms=settings.session_timeout_s * 1000, close_grace_ms=settings.session_close_grace_s * 1000,
        flush_interval_s=settings.flush_interval_s, flush_max_events=settings.flush_max_events,
        dimension_cap_per_day=settings.dimension_cap_per_day, lateness_ms=settings.lateness_s * 1000,
    )
