"""Usage's pure parts: which dead letters count for whom, and a tracker's quota check between two loads."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import orjson
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from aggregations.rejections import rejection_row
from ingest.directory import Directory
from ingest.metrics import TrackerMetrics
from ingest.settings import Settings
from ingest.tracker import Tracker
from tests.unit.test_tracker_http import UA, RecordingProducer

DAY_MS = 1_796_169_600_000  # 2026-12-02T00:00:00Z


def test_a_dead_letter_counts_by_account_day_and_reason_code():
    letter = {"reason": "too_late: event time is more than 7 days old", "received_at_ms": DAY_MS + 5, "account": "a"}
    assert rejection_row(2, 41, orjson.dumps(letter)) == ("a", dt.date(2026, 12, 2), "too_late", 2, 41)
    assert rejection_row(0, 1, orjson.dumps({"reason": "invalid: not JSON"})) is None  # no account: not counted
    assert rejection_row(0, 2, b"\xff not json") is None
    assert rejection_row(0, 3, orjson.dumps(["a list"])) is None


def test_a_tracker_refuses_an_account_over_its_quota_counting_its_own_since_the_last_load():
    producer = RecordingProducer()
    quotas = Directory.fixed("quotas", {"1234": (25, 10)})  # 10 of 25 used, as last loaded
    settings = Settings(rate_limit_ip="100000/second", fingerprint_salt="test-salt")
    tracker = Tracker(settings, producer, TrackerMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                      Directory.fixed("accounts", {"1234": (), "5678": ()}), quotas)
    app = Starlette(routes=tracker.routes())

    async def send(account: str, count: int) -> httpx.Response:
        body = {"account": account, "player": "p", "session": "quota-test-1", "video": "v",
                "events": [{"id": str(n), "type": "heartbeat", "ts": DAY_MS} for n in range(count)]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/v1/track", content=orjson.dumps(body),
                                     headers={"Content-Type": "application/json", "User-Agent": UA})

    async def scenario() -> list[int]:
        return [(await send("1234", 10)).status_code, (await send("1234", 10)).status_code,  # 20, then 30 >= 25
                (await send("1234", 1)).status_code, (await send("5678", 50)).status_code]

    assert asyncio.run(scenario()) == [202, 202, 429, 202]
    assert sum(len(batch.events) for batch in producer.batches) == 70  # nothing accepted was dropped
