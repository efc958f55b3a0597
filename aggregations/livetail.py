"""Reads the events topic into a LiveWindow: every partition, from the start of the window, without a group.

Each API process reads the whole topic for itself (no consumer group, no offsets
committed): at start it seeks every partition to the first message of the last
``horizon`` (Kafka's time index), reads up to the end offsets it found (until then
the live figures answer 503: a half-read window would undercount), then follows
the log. A restart reads the window again, so nothing is kept on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from aggregations.live import LiveWindow
from ingest.models import NotABatch, decode_batch

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 5.0


def wall_ms() -> int:
    return int(time.time() * 1000)


class LiveTail:
    """The window plus the task that fills it; ``caught_up`` once the history at start is read."""

    def __init__(self, bootstrap: str, topic: str, window: LiveWindow,
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        self._bootstrap, self._topic, self.window, self._clock_ms = bootstrap, topic, window, clock_ms
        self._task: asyncio.Task[None] | None = None
        self._targets: dict[TopicPartition, int] | None = None  # end offsets at start, until reached
        self.caught_up = False
        self.batches = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-tail")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Reconnects forever: a broker outage only delays the figures (trackers spool meanwhile)."""
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
                                        fetch_max_wait_ms=50, auto_offset_reset="earliest")
            try:
                await consumer.start()
                await self._follow(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, and the loop starts over from the window
                log.warning("live tail of %s stopped (%s); starting over in 2 s", self._topic, exc)
                await asyncio.sleep(2)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        partitions = await self._partitions(consumer)
        await self._seek_to_window(consumer, partitions)
        last_prune = time.monotonic()
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=5000)
            now_ms = self._clock_ms()
            for messages in fetched.values():
                for message in messages:
                    self._take(message.value, now_ms)
            if not self.caught_up:
                await self._check_caught_up(consumer)
            if time.monotonic() - last_prune >= PRUNE_EVERY_S:
                self.window.prune(now_ms)
                last_prune = time.monotonic()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Waits for the topic (an API may start before any tracker or worker created it; subscribing to a
        missing topic could have the broker create it with its default partitions), then subscribes without
        a group: every partition is ours, and partitions added later too (read from their start)."""
        while self._topic not in await consumer.topics():
            await asyncio.sleep(1)
        consumer.subscribe([self._topic])
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        return sorted(consumer.assignment())

    async def _seek_to_window(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """The end offsets are asked first: a message produced between the two questions then lies at or after
        the end we seek to, where asking the other way round skipped it (a partition empty of the window when its
        start was asked, and one message longer when its end was)."""
        since = self._clock_ms() - self.window.horizon_ms
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: since for tp in partitions})
        for tp in partitions:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        self._targets = {tp: end for tp, end in ends.items() if end > 0}

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        assert self._targets is not None
        for tp, end in list(self._targets.items()):
            if await consumer.position(tp) >= end:
                del self._targets[tp]
        if not self._targets:
            self.caught_up = True
            log.info("live tail of %s caught up: %d sessions in the window", self._topic, self.window.sessions)

    def _take(self, value: bytes | None, now_ms: int) -> None:
        try:
            batch = decode_batch(value or b"")
        except NotABatch:
            return  # the worker logs unreadable messages; the live figures simply leave them out
        self.window.add(batch, now_ms)
        self.batches += 1
