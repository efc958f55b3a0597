"""The simulator: deterministic traffic that is always valid per the protocol, and honest sending.

Sending is checked against a stand-in tracker (httpx.MockTransport) that validates
with the tracker's own models and time rules, so no network is needed.
"""

from __future__ import annotations

import asyncio
import json
import time
from argparse import Namespace
from collections import Counter

import httpx
import iptocc
import orjson
import pytest

from ingest import simulator
from ingest.models import EVENT_ADAPTER, Envelope
from ingest.timing import event_time_ms, time_error
from ingest.truth import SentBatch, compute_truth
from ingest.useragent import classify

NOW = 1_700_000_000_000
LATENESS_S = 7 * 24 * 3600


def plan(seed: int = 1, sessions: int = 200, videos: int = 5, token: str = "tok12345") -> list[simulator.PlannedSession]:
    return simulator.generate(seed, sessions, videos, "1234", NOW, token)


def envelopes(planned: list[simulator.PlannedSession]) -> list[dict]:
    return [session.envelope(events) for session in planned for events in session.batches()]


def test_same_seed_same_traffic_other_seed_other_traffic():
    assert plan(seed=7) == plan(seed=7)
    assert [s.events for s in plan(seed=7)] != [s.events for s in plan(seed=8)]


def test_the_run_token_changes_only_the_session_ids():
    one, two = plan(token="aaaa1111"), plan(token="bbbb2222")
    assert [s.events for s in one] == [s.events for s in two]
    assert not {s.session for s in one} & {s.session for s in two}
    assert len({s.session for s in one}) == 200


def test_every_batch_is_valid_and_within_the_protocol_limits():
    for envelope in envelopes(plan(sessions=300, videos=7)):
        body = orjson.dumps(envelope)
        assert len(body) <= 64 * 1024 and len(envelope["events"]) <= 500
        parsed = Envelope.model_validate(orjson.loads(body))
        assert parsed.sent_at is None          # event time is then ts exactly, which keeps the truth exact
        for raw in parsed.events:
            event = EVENT_ADAPTER.validate_python(raw)
            assert time_error(event_time_ms(NOW, None, event.ts), NOW, LATENESS_S) is None
            assert NOW - simulator.WINDOW_MS <= event.ts <= NOW


def test_sessions_are_chronological_with_unique_event_ids():
    for session in plan(sessions=300):
        sent = [event for events in session.batches() for event in events]
        assert sent == session.events
        assert [e["ts"] for e in sent] == sorted(e["ts"] for e in sent)
        assert len({e["id"] for e in sent}) == len(sent)
        assert sent[0]["type"] == "impression"
        assert [e["type"] for e in sent].count("stop") <= 1 and all(
            e["type"] != "stop" for e in sent[:-1])


def test_batches_flush_on_stop_and_respect_the_batch_size():
    for session in plan():
        for events in session.batches():
            assert len(events) <= session.batch_size
            assert all(e["type"] != "stop" for e in events[:-1])


def test_playback_follows_the_heartbeat_and_quartile_rules():
    for session in plan(sessions=300):
        progress = [e for e in session.events if e["type"] in ("heartbeat", "stop")]
        assert all(e["watched_ms"] == 10_000 for e in progress if e["type"] == "heartbeat")
        assert all(0 <= e["watched_ms"] <= 10_000 for e in progress if e["type"] == "stop")
        positions = [e["position"] for e in progress]
        assert positions == sorted(positions)
        duration = session.video.duration_s
        quartiles = [e["percent"] for e in session.events if e["type"] == "quartile"]
        assert quartiles == sorted(quartiles) and len(set(quartiles)) == len(quartiles)
        if duration is None:
            assert not quartiles
        elif session.events[-1]["type"] == "stop":
            played = sum(e["watched_ms"] for e in progress) / 1000
            assert all(q * duration / 100 <= positions[-1] for q in quartiles)
            assert played <= duration


def test_the_behaviour_mix_covers_every_case():
    planned = plan(sessions=400)
    kinds = Counter(e["type"] for s in planned for e in s.events)
    assert set(kinds) == {"impression", "view", "first_frame", "heartbeat", "quartile", "rebuffer", "ad_start",
                          "error", "stop"}
    endings = Counter(_ending(s.events) for s in planned)
    assert endings["impression_only"] >= 20 and endings["abandoned"] >= 20 and endings["stop"] >= 200
    ads = [e["server_side"] for s in planned for e in s.events if e["type"] == "ad_start"]
    assert True in ads and False in ads
    fatal = [e["fatal"] for s in planned for e in s.events if e["type"] == "error"]
    assert True in fatal and False in fatal
    assert {s.video.live for s in planned} == {True, False}
    assert any(s.viewer.user for s in planned) and any(not s.viewer.user for s in planned)
    assert {s.content_type for s in planned} == {"application/json", "text/plain"}


def _ending(events: list[dict]) -> str:
    if len(events) == 1:
        return "impression_only"
    return "stop" if events[-1]["type"] == "stop" else "abandoned"


def test_some_viewers_come_back_so_fingerprints_are_fewer_than_sessions():
    truth = compute_truth("1234", [SentBatch(env, s.viewer.ip, s.viewer.device.user_agent)
                                   for s in plan() for env in [s.envelope(e) for e in s.batches()]])
    account = truth["totals"]["account"]
    assert 0 < account["fingerprint_count"] < account["ccu"] < account["video_impression"] == 200
    assert truth["range"]["to"] - truth["range"]["from"] > 25 * 60_000


@pytest.mark.parametrize("country", simulator.COUNTRIES, ids=lambda c: c.code)
def test_every_address_of_a_country_maps_to_it(country):
    expected = None if country.code == "ZZ" else country.code
    for prefix in country.prefixes:
        assert {iptocc.country_code(f"{prefix}{host}") for host in range(1, 255)} == {expected}


@pytest.mark.parametrize("device", simulator.DEVICES, ids=lambda d: d.name)
def test_user_agents_are_humans_of_the_stated_device_type(device):
    info = classify(device.user_agent)
    assert not info.is_bot
    assert info.device_type == device.device_type


class FakeTracker:
    """Validates like the tracker; can answer 503 first, or reject an event, to test the client."""

    def __init__(self, fail_first: int = 0, reject_type: str | None = None) -> None:
        self.fail_first = fail_first
        self.reject_type = reject_type
        self.bodies: list[bytes] = []
        self.accepted_ids: Counter = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        assert request.url.path == "/v1/track"
        assert request.headers["content-type"] in ("application/json", "text/plain")
        assert request.headers["x-forwarded-for"] and "Mozilla/5.0" in request.headers["user-agent"]
        if len(self.bodies) <= self.fail_first:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "cannot accept now"})
        envelope = Envelope.model_validate(orjson.loads(request.content))
        now = int(time.time() * 1000)
        errors = []
        for index, raw in enumerate(envelope.events):
            event = EVENT_ADAPTER.validate_python(raw)
            reason = time_error(event_time_ms(now, envelope.sent_at, event.ts), now, LATENESS_S)
            if reason is None and event.type == self.reject_type:
                reason = "invalid: test"
            if reason:
                errors.append({"index": index, "error": reason})
            else:
                self.accepted_ids[(envelope.session, event.id)] += 1
        return httpx.Response(202, json={"accepted": len(envelope.events) - len(errors), "rejected": len(errors),
                                         "errors": errors})


def run(tmp_path, tracker: FakeTracker, sessions: int = 30) -> tuple[int, dict]:
    args = Namespace(url="http://tracker.test", account="1234", sessions=sessions, videos=3, seed=5,
                     concurrency=4, truth=str(tmp_path / "truth.json"))
    code = asyncio.run(simulator.run_simulation(args, transport=httpx.MockTransport(tracker)))
    path = tmp_path / "truth.json"
    return code, json.loads(path.read_text()) if path.exists() else {}


def test_a_clean_run_writes_the_truth_of_what_was_sent(tmp_path):
    tracker = FakeTracker()
    code, truth = run(tmp_path, tracker)
    assert code == 0
    assert truth["batches"] == len(tracker.bodies)
    assert truth["events"] == sum(tracker.accepted_ids.values())
    assert truth["sessions"] == 30 and truth["totals"]["account"]["video_impression"] == 30
    expected = plan(seed=5, sessions=30, videos=3)
    assert truth["totals"]["account"]["video_view"] == sum(
        e["type"] == "view" for s in expected for e in s.events)


def test_a_503_is_retried_with_the_same_body_and_counted_once(tmp_path):
    tracker = FakeTracker(fail_first=2)
    code, truth = run(tmp_path, tracker, sessions=1)
    assert code == 0
    assert tracker.bodies[0] == tracker.bodies[1] == tracker.bodies[2]
    assert truth["batches"] == len(tracker.bodies) - 2
    assert max(tracker.accepted_ids.values()) == 1


def test_a_rejected_event_fails_the_run_and_is_left_out_of_the_truth(tmp_path):
    code, truth = run(tmp_path, FakeTracker(reject_type="view"))
    assert code == 1
    assert truth["totals"]["account"]["video_view"] == 0
    assert truth["totals"]["account"]["video_impression"] == 30


def test_an_unreachable_tracker_fails_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(simulator, "MAX_RETRY_DELAY_S", 0.0)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    args = Namespace(url="http://tracker.test/", account="1234", sessions=3, videos=2, seed=1, concurrency=2,
                     truth=str(tmp_path / "truth.json"))
    assert asyncio.run(simulator.run_simulation(args, transport=httpx.MockTransport(refuse))) == 1
    assert "ConnectError" in capsys.readouterr().err
    assert not (tmp_path / "truth.json").exists()


def test_several_trackers_take_turns_and_a_dead_one_costs_a_retry_not_the_batch(tmp_path, monkeypatch):
    """A player behind a load balancer: batches alternate; a refused connection is retried on the next tracker,
    so with one of two trackers dead every batch still gets through, each on its first or second attempt."""
    monkeypatch.setattr(simulator, "MAX_RETRY_DELAY_S", 0.0)
    tracker = FakeTracker()
    hosts: list[str] = []

    def one_dead(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "dead.test":
            raise httpx.ConnectError("connection refused", request=request)
        return tracker(request)

    args = Namespace(url="http://live.test, http://dead.test/", account="1234", sessions=12, videos=2, seed=3,
                     concurrency=3, truth=str(tmp_path / "truth.json"))
    assert asyncio.run(simulator.run_simulation(args, transport=httpx.MockTransport(one_dead))) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert hosts.count("live.test") == truth["batches"] and 0 < hosts.count("dead.test") <= truth["batches"]
    assert max(tracker.accepted_ids.values()) == 1 and truth["events"] == sum(tracker.accepted_ids.values())
