"""The tracker's Kafka producer: idempotent, acknowledged by all in-sync replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from ingest.metrics import TrackerMetrics
from ingest.models import EnrichedBatch


class PublishError(Exception):
    """Kafka did not acknowledge in time; the client should retry the same batch."""


class EventProducer:
    def __init__(self, bootstrap: str, events_topic: str, dead_letter_topic: str, timeout_s: float,
                 metrics: TrackerMetrics) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
            request_timeout_ms=int(timeout_s * 1000),
        )
        self._events_topic = events_topic
        self._dead_letter_topic = dead_letter_topic
        self._timeout_s = timeout_s
        self._metrics = metrics

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, batch: EnrichedBatch, dead_letters: list[dict[str, Any]]) -> None:
        """Returns only once Kafka acknowledged every message; keyed by session so its events stay in order."""
        key = batch.session_key.to_bytes(8, "big")
        started = time.perf_counter()
        sends = [self._producer.send(self._dead_letter_topic, orjson.dumps(letter), key=key) for letter in dead_letters]
        if batch.events:
            sends.append(self._producer.send(self._events_topic, orjson.dumps(batch.model_dump()), key=key))
        await self._await_acks(sends)
        self._metrics.produce_latency.observe(time.perf_counter() - started)

    async def dead_letter(self, letter: dict[str, Any]) -> None:
        await self._await_acks([self._producer.send(self._dead_letter_topic, orjson.dumps(letter))])

    async def _await_acks(self, sends: list[Any]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = await asyncio.gather(*sends)
                await asyncio.gather(*futures)
        except Exception as exc:  # noqa: BLE001 - every failure means "not durable": the client retries
            raise PublishError(f"Kafka did not acknowledge: {exc!r}") from exc

    async def ready(self) -> bool:
        try:
            async with asyncio.timeout(2):
                await self._producer.client.fetch_all_metadata()
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False
        return True

