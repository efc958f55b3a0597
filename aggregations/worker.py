"""The Faust app: one agent that feeds the sink, one timer that flushes it.

Started inside an existing event loop (``vidpulse up`` shares it with the
HTTP server; ``vidpulse worker`` runs it beside /metrics). Faust's own web
server and tables are off: the sink keeps its state in ClickHouse.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from pydantic import ValidationError

from aggregations.clickhouse import ClickHouse
from aggregations.metrics import WorkerMetrics
from aggregations.rejections import RejectionSink
from aggregations.sink import EventSink, SinkConfig
from aggregations.writer import ClickHouseWriter
from ingest.models import EnrichedBatch
from ingest.settings import Settings

log = logging.getLogger(__name__)


class Worker:
    """A started Faust app plus the sink its agent writes through."""

    def __init__(self, settings: Settings, bootstrap: str, db: ClickHouse, metrics: WorkerMetrics) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level of its datadir
        self.app = faust.App(
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
        )
        self.topic = self.app.topic(settings.events_topic, value_type=bytes, key_type=bytes,
                                    partitions=settings.topic_partitions)
        self.sink = EventSink(ClickHouseWriter(db, metrics), _sink_config(settings), metrics,
                              ack=self._ack, caught_up=self._caught_up)
        self._metrics = metrics
        metrics.watch(self._lag, self.sink.oldest_pending_age_s)
        self._stream: Any = None
        self._reloading: asyncio.Future[None] | None = None
        self.app.agent(self.topic, name="sink")(self._consume)
        # the tracker's refusals, counted per account for the usage report
        self.dead_letters = self.app.topic(settings.dead_letter_topic, value_type=bytes, key_type=bytes,
                                           partitions=settings.topic_partitions)
        self.rejections = RejectionSink(db, self._ack_rejection)
        self._rejection_stream: Any = None
        self.app.agent(self.dead_letters, name="rejections")(self._consume_rejections)
        self.app.timer(settings.flush_interval_s)(self.rejections.flush)
        # ticking at half the interval keeps a batch from waiting almost two intervals for its tick
        self.app.timer(settings.flush_interval_s / 2)(self.sink.flush_due)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    async def start(self) -> None:
        self.app.in_worker = True
        await self.app.start()

    async def stop(self) -> None:
        """Flushes what it can first, so a clean shutdown leaves nothing to replay."""
        flushed = await self.sink.flush_all()
        await self.rejections.flush()
        log.info("shutdown: flushed %d pending batches", flushed)
        await self.app.stop()

    async def _consume(self, stream: Any) -> None:
        self._stream = stream.noack()
        async for event in self._stream.events():
            message = event.message
            await self.sink.add(message.partition, message.offset, _decode(event.value), event)

    async def _consume_rejections(self, stream: Any) -> None:
        self._rejection_stream = stream.noack()
        async for event in self._rejection_stream.events():
            await self.rejections.add(event.message.partition, event.message.offset, event.value, event)

    async def _ack_rejection(self, event: Any) -> None:
        await self._rejection_stream.ack(event)

    async def _ack(self, event: Any) -> None:
        await self._stream.ack(event)

    def _caught_up(self, partition: int, next_offset: int) -> bool:
        highwater = self.app.consumer.highwater(self.topic_partition(partition))
        return highwater is None or next_offset >= highwater

    def _lag(self) -> dict[int, int]:
        lags = {}
        for partition, next_offset in self.sink.positions().items():
            highwater = self.app.consumer.highwater(self.topic_partition(partition))
            if highwater is not None:
                lags[partition] = max(0, highwater - next_offset)
        return lags

    def topic_partition(self, partition: int) -> Any:
        return faust.types.TP(self.topic.get_topic_name(), partition)

    async def _on_assigned(self, app: Any, assigned: Any, **_: Any) -> None:
        ours = {tp.partition for tp in assigned if tp.topic == self.topic.get_topic_name()}
        if ours:
            # in the background: a rebalance must not wait on ClickHouse
            self._reloading = asyncio.ensure_future(self.sink.reload(ours))

    async def _on_revoked(self, app: Any, revoked: Any, **_: Any) -> None:
        ours = {tp.partition for tp in revoked if tp.topic == self.topic.get_topic_name()}
        await self.sink.forget(ours)


def _decode(value: bytes) -> EnrichedBatch | None:
    """None for a message that is not an enriched batch: acknowledged with its batch, written nowhere."""
    try:
        return EnrichedBatch.model_validate_json(value)
    except ValidationError as exc:
        log.error("skipping a message that is not an enriched batch: %s", exc)
        return None


def _sink_config(settings: Settings) -> SinkConfig:
    return SinkConfig(
        consumer_group=settings.consumer_group, topic=settings.events_topic,
        session_timeout_ms=settings.session_timeout_s * 1000, close_grace_ms=settings.session_close_grace_s * 1000,
        flush_interval_s=settings.flush_interval_s, flush_max_events=settings.flush_max_events,
        dimension_cap_per_day=settings.dimension_cap_per_day, lateness_ms=settings.lateness_s * 1000,
    )
