"""The tracker's path to Kafka: an idempotent producer acknowledged by all in-sync replicas,
with the disk spool behind it.

A request's messages go to Kafka when it answers within ``spool_after_s``;
otherwise (broker down, slow, or not yet connected) they go to the spool, and
a background task sends the spool, oldest first, once Kafka is back. While the
spool holds anything, new requests join its end, so a session's batches keep
their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from ingest import jsonio
from ingest.metrics import TrackerMetrics
from ingest.models import EnrichedBatch, batch_dict
from ingest.spool import Message, Spool, SpoolFull
from ingest.topics import ensure_topics

log = logging.getLogger(__name__)
DRAIN_BATCH = 200
RETRY_S = 1.0
# Every message acknowledged by all in-sync replicas, written once (idempotent). A batch of up to 256 KiB per
# partition, not aiokafka's 16 KiB: an enriched 20-event message is ~5 KB, so the default batch held three of
# them and, with one request in flight per partition, requests queued behind each other's acknowledgements.
# ``bench/throughput.py``'s bare endpoint produces with these same options.
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 2,
                                    "max_batch_size": 256 * 1024, "request_timeout_ms": 30_000}


class PublishError(Exception):
    """Neither Kafka nor the spool took the batch; the client should retry it."""


class EventProducer:
    def __init__(self, bootstrap: str, topics: tuple[str, str], partitions: int, spool: Spool,
                 spool_after_s: float, metrics: TrackerMetrics, replication: int = 1) -> None:
        self._bootstrap, self._partitions, self._replication = bootstrap, partitions, replication
        self._events_topic, self._dead_letter_topic = topics
        self._spool, self._spool_after_s, self._metrics = spool, spool_after_s, metrics
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        metrics.watch_spool(spool)

    async def start(self) -> None:
        """Returns at once: the tracker accepts (into the spool) even while the broker is down."""
        self._task = asyncio.create_task(self._run(), name="vidpulse-producer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer:
            await self._producer.stop()

    async def publish(self, batch: EnrichedBatch | dict[str, Any], dead_letters: list[dict[str, Any]]) -> None:
        """Returns once the batch is durable: acknowledged by Kafka, or fsynced to the spool. ``batch``: the
        struct, or already its ``batch_dict`` (the tracker's fast path, ``ingest.fastpath``)."""
        body = batch if isinstance(batch, dict) else batch_dict(batch)
        key = body["session_key"].to_bytes(8, "big")
        messages: list[Message] = [(self._dead_letter_topic, key, jsonio.dumps(letter)) for letter in dead_letters]
        if body["events"]:
            messages.append((self._events_topic, key, orjson.dumps(body)))
        await self._deliver(messages)

    async def dead_letter(self, letter: dict[str, Any]) -> None:
        await self._deliver([(self._dead_letter_topic, None, jsonio.dumps(letter))])

    def accepting(self) -> bool:
        return self.connected or self._spool.has_room()

    def spool_depth(self) -> int:
        return self._spool.depth()

    def spool_bytes(self) -> int:
        return self._spool.bytes

    async def _deliver(self, messages: list[Message]) -> None:
        if self.connected and self._spool.depth() == 0:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self._spool_after_s):  # not wait_for: no task per request
                    await self._send_all(messages)
            except Exception as exc:  # noqa: BLE001 - timeout or broker error: the spool takes it
                log.warning("Kafka did not acknowledge within %.1f s (%r): spooling", self._spool_after_s, exc)
            else:
                self._metrics.produce_latency.observe(time.perf_counter() - started)
                return
        try:
            await asyncio.to_thread(self._spool.append, messages)
        except (SpoolFull, OSError) as exc:
            raise PublishError(f"the event log is unreachable and the spool cannot take more: {exc}") from exc
        self._metrics.spooled.inc()

    async def _send_all(self, messages: list[Message]) -> None:
        assert self._producer is not None
        futures = [await self._producer.send(topic, value, key=key) for topic, key, value in messages]
        if len(futures) == 1:  # a batch without refusals: gather's own future and callbacks would be its overhead
            await futures[0]
        else:
            await asyncio.gather(*futures)

    async def _run(self) -> None:
        """Connects (retrying while the broker is down), then drains the spool whenever it holds anything."""
        while not self.connected:
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - keep trying; requests go to the spool meanwhile
                log.warning("Kafka at %s is not reachable yet (%r); spooling", self._bootstrap, exc)
                await asyncio.sleep(RETRY_S)
        while True:
            if self._spool.depth():
                await self._drain_once()
            else:
                await asyncio.sleep(0.2)

    async def _connect(self) -> None:
        await ensure_topics(self._bootstrap, [self._events_topic, self._dead_letter_topic], self._partitions,
                            self._replication)
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, **PRODUCER_OPTIONS)
        await producer.start()
        self._producer, self.connected = producer, True
        log.info("connected to Kafka at %s", self._bootstrap)

    async def _drain_once(self) -> None:
        entries = await asyncio.to_thread(self._spool.oldest, DRAIN_BATCH)
        try:
            await asyncio.wait_for(self._send_all([m for entry in entries for m in entry.messages]), 30)
        except Exception as exc:  # noqa: BLE001 - the entries stay; try again shortly
            log.warning("draining the spool failed (%r); retrying", exc)
            await asyncio.sleep(RETRY_S)
            return
        await asyncio.to_thread(self._spool.remove, entries)
        log.info("drained %d spooled batches to Kafka", len(entries))
