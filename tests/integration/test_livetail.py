"""The live tail's start against the real broker: a batch produced while it positions itself on the window is
read, never skipped (a live pipeline once showed a steady viewer as absent for good: its first batch landed
between the tail's two questions to the broker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aggregations.live import LiveWindow
from aggregations.livetail import LiveTail
from ingest.models import encode_batch
from ingest.topics import ensure_topics
from tests.unit.test_live import batch

pytestmark = [pytest.mark.kafka]


async def read_with_a_batch_produced_mid_seek(bootstrap: str, topic: str) -> LiveTail:
    await ensure_topics(bootstrap, [topic], 1, 1)
    now_ms = int(time.time() * 1000)
    message = encode_batch(batch(1, [("1", "view", now_ms)], account="tail"))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    original = AIOKafkaConsumer.offsets_for_times

    async def then_produce(self: AIOKafkaConsumer, timestamps: Any) -> Any:
        found = await original(self, timestamps)
        await producer.send_and_wait(topic, message)  # lands after the start was asked, before the tail reads
        return found

    tail = LiveTail(bootstrap, topic, LiveWindow(60_000))
    AIOKafkaConsumer.offsets_for_times = then_produce  # type: ignore[method-assign]
    try:
        await tail.start()
        deadline = time.monotonic() + 30
        while not (tail.caught_up and tail.batches) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # a second read of it would show now
    finally:
        AIOKafkaConsumer.offsets_for_times = original  # type: ignore[method-assign]
        await tail.stop()
        await producer.stop()
    return tail


def test_a_batch_produced_while_the_tail_seeks_is_read_once(kafka, run_id):
    tail = asyncio.run(read_with_a_batch_produced_mid_seek(kafka, f"test-{run_id}.tail"))
    assert tail.caught_up
    assert (tail.batches, tail.window.sessions, tail.window.events) == (1, 1, 1)
