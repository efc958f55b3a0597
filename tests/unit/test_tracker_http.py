"""The tracker's HTTP contract in-process, with a recording producer: fast enough for property-based input."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from ingest.directory import Directory
from ingest.metrics import TrackerMetrics
from ingest.models import decode_batch
from ingest.producer import PublishError
from ingest.settings import Settings
from ingest.tracker import Tracker

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


class RecordingProducer:
    """Keeps what would have gone to Kafka; can refuse like a full spool."""

    def __init__(self, refuse: bool = False) -> None:
        self.batches: list[Any] = []
        self.letters: list[dict] = []
        self.refuse = refuse

    async def publish(self, batch: Any, dead_letters: list[dict]) -> None:
        if self.refuse:
            raise PublishError("spool full")
        if batch["events"]:
            self.batches.append(decode_batch(orjson.dumps(batch)))  # the Kafka message, as a worker reads it
        self.letters += dead_letters

    async def dead_letter(self, letter: dict) -> None:
        self.letters.append(letter)


def client_for(producer: RecordingProducer, accounts: dict[str, tuple[str, ...]] | None = None,
               **overrides: Any) -> httpx.AsyncClient:
    """A tracker that knows ``accounts`` (default: 1234, any origin)."""
    settings = Settings(trusted_proxies="10.0.0.0/8", rate_limit_ip="100000/second", fingerprint_salt="test-salt",
                        **overrides)
    book = Directory.fixed("accounts", {"1234": ()} if accounts is None else accounts)
    tracker = Tracker(settings, producer, TrackerMetrics(CollectorRegistry()), book)  # type: ignore[arg-type]
    app = Starlette(routes=tracker.routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 5000)),
                             base_url="http://tracker")


def post(producer: RecordingProducer, content: bytes, headers: dict[str, str] | None = None,
         accounts: dict[str, tuple[str, ...]] | None = None, **overrides: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        async with client_for(producer, accounts, **overrides) as client:
            return await client.post("/v1/track", content=content, headers={
                "Content-Type": "application/json", "User-Agent": UA, **(headers or {})})
    return asyncio.run(call())


def now_ms() -> int:
    return int(time.time() * 1000)


def valid_event(event_id: str = "ok-1") -> dict:
    return {"id": event_id, "type": "view", "ts": now_ms()}


def envelope(events: list[Any], **extra: Any) -> dict:
    return {"account": "1234", "player": "p", "session": "abcdefgh", "video": "v", "events": events, **extra}


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored():
    producer = RecordingProducer()
    assert post(producer, orjson.dumps(envelope([valid_event()])), {"X-Forwarded-For": "8.8.8.8"}).status_code == 202
    assert producer.batches[0].country == "ZZ"  # 203.0.113.9 (documentation range), not the claimed 8.8.8.8


def test_rate_limits_answer_429_with_retry_after():
    producer = RecordingProducer()

    async def burst() -> list[httpx.Response]:
        async with client_for(producer, rate_limit_account="3/minute") as client:
            return [await client.post("/v1/track", content=orjson.dumps(envelope([valid_event(str(i))])),
                                      headers={"Content-Type": "text/plain", "User-Agent": UA}) for i in range(5)]

    statuses = [r.status_code for r in asyncio.run(burst())]
    assert statuses == [202, 202, 202, 429, 429]
    limited = asyncio.run(burst())[-1]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limited" in limited.json()["error"]


def test_a_full_spool_is_a_503_with_retry_after():
    response = post(RecordingProducer(refuse=True), orjson.dumps(envelope([valid_event()])))
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_cors_follows_the_accounts_allowed_origins():
    origins = {"1234": ("https://good.example",), "5678": ()}
    producer = RecordingProducer()
    allowed = post(producer, orjson.dumps(envelope([valid_event()])), {"Origin": "https://good.example"},
                   accounts=origins)
    refused = post(producer, orjson.dumps(envelope([valid_event("2")])), {"Origin": "https://evil.example"},
                   accounts=origins)
    other = post(producer, orjson.dumps(envelope([valid_event("3")], account="5678")),
                 {"Origin": "https://evil.example"}, accounts=origins)
    assert allowed.headers["access-control-allow-origin"] == "https://good.example"
    assert refused.status_code == 403 and "not allowed" in refused.json()["error"]
    assert "access-control-allow-origin" not in refused.headers
    assert other.headers["access-control-allow-origin"] == "https://evil.example"
    assert [e.id for batch in producer.batches for e in batch.events] == ["ok-1", "3"]


def test_beacons_for_an_account_that_does_not_exist_are_refused_and_not_published():
    producer = RecordingProducer()
    response = post(producer, orjson.dumps(envelope([valid_event()], account="nobody")), {"Origin": "https://a.example"})
    assert response.status_code == 403 and "does not exist" in response.json()["error"]
    assert response.headers["access-control-allow-origin"] == "https://a.example"  # the page's SDK can read why
    invalid = post(producer, orjson.dumps(envelope([valid_event()], account="nobody", v=2)))
    assert invalid.status_code == 400
    assert producer.batches == [] and producer.letters == []  # nothing of an unknown account reaches Kafka
    post(producer, orjson.dumps(envelope([valid_event()], v=2)))
    assert [letter["reason"].split(":")[0] for letter in producer.letters] == ["invalid"]  # a known account's bad envelope does


def test_a_tracker_that_has_not_loaded_its_accounts_asks_to_retry():
    producer = RecordingProducer()
    settings = Settings(fingerprint_salt="test-salt")
    unloaded = Tracker(settings, producer, TrackerMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                       Directory("accounts", _store_down))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=unloaded.routes()), client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as client:
            return await client.post("/v1/track", content=orjson.dumps(envelope([valid_event()])),
                                     headers={"Content-Type": "text/plain", "User-Agent": UA})

    response = asyncio.run(call())
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert producer.batches == []


async def _store_down() -> dict:
    raise ConnectionError("database down")


HANDWRITTEN = [
    (b"", 400), (b"null", 400), (b"[]", 400), (b'"text"', 400), (b"{" * 5000 + b"}" * 5000, 400),
    (b'{"account": "1234"}', 400), (b"\xff\xfe", 400),
    (orjson.dumps(envelope([valid_event()], account="12\x0034")), 400),
    (orjson.dumps(envelope([valid_event()], v=2)), 400),
    (orjson.dumps(envelope([valid_event()], video="x" * 200)), 400),
    (orjson.dumps(envelope([valid_event()], sent_at="yesterday")), 400),
    (orjson.dumps(envelope("not a list")), 400),
    (b'{"account": "1234", "player": "p", "session": "abcdefgh", "video": "v", "events": [' + b"1," * 40000 + b"1]}",
     413),
]


def test_handwritten_bad_payloads_get_a_4xx_with_a_reason():
    for content, status in HANDWRITTEN:
        response = post(RecordingProducer(), content)
        assert response.status_code == status, (content[:80], response.text)
        assert response.json()["error"], content[:80]


BAD_EVENTS = [
    "not an object", 7, None, [], {}, {"id": "x", "type": "view"}, {"id": "x", "type": "teleport", "ts": 1},
    {"id": "", "type": "view", "ts": now_ms()}, {"id": "x" * 65, "type": "view", "ts": now_ms()},
    {"id": "x", "type": "view", "ts": -5}, {"id": "x", "type": "view", "ts": "soon"},
    {"id": "x", "type": "view", "ts": now_ms() + 365 * 86_400_000},
    {"id": "x", "type": "view", "ts": now_ms() - 365 * 86_400_000},
    {"id": "x", "type": "heartbeat", "ts": now_ms(), "watched_ms": 10**12},
    {"id": "x", "type": "heartbeat", "ts": now_ms(), "percentiles": [101]},
    {"id": "x\x07", "type": "view", "ts": now_ms()},
    {"id": "x", "type": "error", "ts": now_ms(), "code": "E" * 65},
    {"id": "x", "type": "first_frame", "ts": now_ms(), "startup_ms": -1},
    {"id": "x", "type": "quartile", "ts": now_ms(), "percent": 10},
]


def test_each_bad_event_is_rejected_alone_and_the_valid_one_still_counts():
    for bad in BAD_EVENTS:
        producer = RecordingProducer()
        response = post(producer, orjson.dumps(envelope([bad, valid_event("good")])))
        assert response.status_code == 202, (bad, response.text)
        answer = response.json()
        assert (answer["accepted"], answer["rejected"]) == (1, 1), bad
        assert answer["errors"][0]["index"] == 0 and answer["errors"][0]["error"]
        assert [e.id for batch in producer.batches for e in batch.events] == ["good"]
        assert producer.letters[0]["index"] == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=json_values, extra=st.dictionaries(st.sampled_from(["id", "type", "ts", "watched_ms", "percent",
                                                                 "percentiles", "startup_ms", "code", "fatal"]),
                                               json_values, max_size=5))
def test_property_arbitrary_events_never_5xx_and_never_disturb_valid_ones(junk, extra):
    producer = RecordingProducer()
    fuzzed = {**{"id": "fz", "type": "heartbeat", "ts": now_ms()}, **extra}
    response = post(producer, json.dumps(envelope([junk, fuzzed, valid_event("good")])).encode())
    assert response.status_code == 202, response.text
    accepted_ids = [e.id for batch in producer.batches for e in batch.events]
    assert "good" in accepted_ids
    answer = response.json()
    assert answer["accepted"] + answer["rejected"] == 3
    assert all(error["error"] for error in answer["errors"])


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=2000) | json_values.map(lambda value: json.dumps(value).encode()))
def test_property_arbitrary_bodies_get_a_4xx_or_202_never_5xx(body):
    response = post(RecordingProducer(), body)
    assert response.status_code in (202, 400, 413), response.text
    if response.status_code != 202:
        assert response.json()["error"]
