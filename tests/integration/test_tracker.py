"""The tracker's answers at the HTTP edge, what it publishes to Kafka, and what every process exposes."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.beacons import DESKTOP, envelope, eventually, get, post

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
NOW = lambda: int(time.time() * 1000)  # noqa: E731


def read_topic(bootstrap: str, topic: str, wanted: int, timeout_s: float = 20) -> list[dict]:
    async def consume() -> list[dict]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        found: list[dict] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(found) < wanted and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                found += [orjson.loads(m.value) for records in batches.values() for m in records]
        finally:
            await consumer.stop()
        return found

    return asyncio.run(consume())


def track(pipeline, content: bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    return httpx.post(f"{pipeline.url}/v1/track", content=content, timeout=30,
                      headers={"Content-Type": content_type, "User-Agent": DESKTOP, **headers})


@pytest.mark.parametrize("content, content_type, status, fragment", [
    (b"{}", "application/xml", 415, "Content-Type"),
    (b"{not json", "application/json", 400, "not JSON"),
    (b'{"account": "bad id!", "player": "p", "session": "abcdefgh", "video": "v", "events": [{}]}',
     "text/plain", 400, "account"),
    (b"x" * (64 * 1024 + 1), "application/json", 413, "larger than"),
])
def test_request_level_refusals_say_why(pipeline, content, content_type, status, fragment):
    response = track(pipeline, content, content_type)
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_too_many_events_is_a_413(pipeline):
    events = [{"id": str(i), "type": "heartbeat", "ts": NOW()} for i in range(501)]
    body = orjson.dumps(envelope("toomany0001", "v", events, account="tracker"))
    assert track(pipeline, body).status_code == 413


def test_bad_events_are_rejected_alone_and_dead_lettered(pipeline):
    now = NOW()
    body = envelope("partial00001", "good-video", account="tracker", events=[
        {"id": "1", "type": "view", "ts": now - 1000},
        {"id": "2", "type": "quartile", "ts": now, "percent": 33},
        {"id": "3", "type": "heartbeat", "ts": now + 3_600_000},
        {"id": "4", "type": "heartbeat", "ts": now - 500, "watched_ms": 4000}])
    response = track(pipeline, orjson.dumps(body), "text/plain", **{"X-Forwarded-For": "8.8.8.8"})
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [(e["index"], e["error"].split(":")[0]) for e in answer["errors"]] == [(1, "invalid"), (2, "in_future")]
    letters = read_topic(pipeline.env["VIDPULSE_KAFKA_BOOTSTRAP"], pipeline.env["VIDPULSE_TOPIC_PREFIX"] + "dead-letter", 2)
    mine = sorted((letter["index"], letter["reason"].split(":")[0], letter["event"]["id"]) for letter in letters
                  if letter.get("session") == "partial00001")
    assert mine == [(1, "invalid", "2"), (2, "in_future", "3")]
    fetch = lambda: get(pipeline, "events", "tracker", dimensions="video", metrics="video_view,video_seconds_viewed",  # noqa: E731
                        where="video==good-video")["data"]
    expected = [{"dimensions": {"account": "tracker", "video": "good-video"},
                 "totals": {"video_view": 1, "video_seconds_viewed": 4.0}}]
    assert eventually(fetch, expected) == expected


def test_kafka_never_sees_the_raw_ip_or_user_agent(pipeline):
    body = envelope("privacy00001", "private-video", account="tracker",
                    events=[{"id": "1", "type": "view", "ts": NOW()}])
    with httpx.Client(base_url=pipeline.url, timeout=30) as client:
        post(client, body, ip="81.2.69.142")
    messages = read_topic(pipeline.env["VIDPULSE_KAFKA_BOOTSTRAP"], pipeline.env["VIDPULSE_TOPIC_PREFIX"] + "events", 1)
    mine = [m for m in messages if m["session"] == "privacy00001"]
    assert len(mine) == 1
    text = orjson.dumps(mine[0]).decode()
    assert "81.2.69.142" not in text and "Windows NT" not in text
    assert (mine[0]["country"], mine[0]["device_type"]) == ("GB", "desktop")


def test_forwarded_for_resolves_to_the_rightmost_untrusted_hop(pipeline):
    # the test client talks from 127.0.0.1, which this pipeline trusts; a spoofed chain whose
    # right-most hop is itself untrusted resolves to that hop, never to the left-most claim
    body = envelope("spoofed00001", "spoof-video", account="tracker", events=[{"id": "1", "type": "view", "ts": NOW()}])
    with httpx.Client(base_url=pipeline.url, timeout=30) as client:
        post(client, body, ip="1.0.16.1, 8.8.8.8")
    fetch = lambda: get(pipeline, "events", "tracker", dimensions="country", metrics="video_view",  # noqa: E731
                        where="video==spoof-video")["data"]
    expected = [{"dimensions": {"account": "tracker", "country": "US"}, "totals": {"video_view": 1}}]
    assert eventually(fetch, expected) == expected


def test_bots_are_kept_raw_but_left_out_of_every_metric(pipeline):
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    with httpx.Client(base_url=pipeline.url, timeout=30) as client:
        post(client, envelope("botsession01", "bot-video", account="tracker",
                              events=[{"id": "1", "type": "view", "ts": NOW()}]), user_agent=bot)
        post(client, envelope("humansess01", "bot-video", account="tracker",
                              events=[{"id": "1", "type": "view", "ts": NOW()}]))
    messages = read_topic(pipeline.env["VIDPULSE_KAFKA_BOOTSTRAP"], pipeline.env["VIDPULSE_TOPIC_PREFIX"] + "events", 2)
    assert {m["session"]: m["is_bot"] for m in messages if m["video"] == "bot-video"} == {
        "botsession01": True, "humansess01": False}
    fetch = lambda: get(pipeline, "events", "tracker", dimensions="video", metrics="video_view,ccu",  # noqa: E731
                        where="video==bot-video")["data"]
    expected = [{"dimensions": {"account": "tracker", "video": "bot-video"}, "totals": {"video_view": 1, "ccu": 1}}]
    assert eventually(fetch, expected) == expected


def test_cors_preflight_and_origin(pipeline):
    preflight = httpx.options(f"{pipeline.url}/v1/track", headers={"Origin": "https://player.example"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://player.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_health_readiness_openapi_and_docs(pipeline):
    assert httpx.get(f"{pipeline.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{pipeline.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"clickhouse": True, "accepting": True, "kafka": True, "keys": True}
    assert ready.json()["spool"] == {"depth": 0, "bytes": 0}
    paths = httpx.get(f"{pipeline.url}/openapi.json").json()["paths"]
    assert {"/v1/timeseries/accounts/{account_id}", "/v1/events/accounts/{account_id}"} <= set(paths)
    docs = httpx.get(f"{pipeline.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_metrics_are_exposed(pipeline):
    with httpx.Client(base_url=pipeline.url, timeout=30, auth=pipeline.auth) as client:
        post(client, envelope("metrics00001", "metrics-video", account="tracker",
                              events=[{"id": "1", "type": "view", "ts": NOW()}]))
        client.get("/v1/events/accounts/tracker", params={"dimensions": "video", "metrics": "video_view"})
    time.sleep(2)
    text = httpx.get(f"{pipeline.url}/metrics").text
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    for name in ("vidpulse_tracker_beacons_total", "vidpulse_tracker_events_accepted_total",
                 "vidpulse_tracker_produce_latency_seconds_count", "vidpulse_worker_events_consumed_total",
                 "vidpulse_worker_rows_written_total", "vidpulse_worker_insert_latency_seconds_count",
                 "vidpulse_api_query_latency_seconds_count"):
        assert name in samples, name
    assert samples["vidpulse_tracker_events_accepted_total"].value >= 1


def test_the_scrape_holds_every_metric_the_readme_lists(pipeline):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    operations = readme[readme.index("## Operations"):readme.index("## Limits we chose")]
    listed = {name for name in re.findall(r"`(vidpulse_[a-z_]+)", operations)}
    assert len(listed) >= 20
    families = {family.name for family in text_string_to_metric_families(httpx.get(f"{pipeline.url}/metrics").text)}
    missing = {name for name in listed if name not in families and name.removesuffix("_total") not in families}
    assert not missing, f"listed in the README but not exposed: {sorted(missing)}"
