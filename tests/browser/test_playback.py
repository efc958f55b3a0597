"""A real playback in headless Chromium, tracked by the SDK, counted by the whole pipeline: play, pause,
seek forward over a quarter of the content, play to the end; then the query API and the raw events on Kafka
must agree with what the page actually played."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.browser.support import events_of, has_stop, published
from tests.vidpulse_process import pool_account

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.browser]
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def totals(pipeline, account: str) -> dict:
    response = httpx.get(f"{pipeline.url}/v1/events/accounts/{account}", timeout=30, auth=pipeline.auth, params={
        "dimensions": "video", "metrics": "video_impression,video_view,video_seconds_viewed"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data[0]["totals"] if len(data) == 1 else {"rows": data}


def test_a_real_playback_is_counted_as_played(pipeline, player):
    account = pool_account()
    started = time.time()
    player.open().attach("clip40.webm", account=account, video="clip-40", user="viewer-42")
    player.play_until(4)
    player.pause()
    player.wait(1.5)
    player.play_until(7)
    player.evaluate("() => { player.currentTime = 15; }")  # skips 7 s → 15 s (17.5 % → 37.5 %), unwatched
    player.page.wait_for_function("() => player.ended", polling=100, timeout=60_000)
    played_s = player.evaluate("() => playedSeconds()")
    assert 31 < played_s < 33.5, played_s  # the page really played 0→7 and 15→40
    tz = player.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone")
    page_url = player.evaluate("() => location.href")
    player.wait_for_beacon(lambda body: any(event["type"] == "stop" for event in body["events"]))
    player.wait(0.5)

    # What the SDK put on the wire: one session, a correct envelope, every batch accepted whole.
    bodies = player.bodies()
    assert {body["session"] for body in bodies} == {bodies[0]["session"]}
    session = bodies[0]["session"]
    assert SESSION_ID.match(session), session
    for body in bodies:
        assert (body["v"], body["account"], body["player"], body["video"], body["live"]) == (
            1, account, "browser-test", "clip-40", False)
        assert started * 1000 - 1000 <= body["sent_at"] <= time.time() * 1000, body["sent_at"]
        assert (body["context"]["tz"], body["context"]["page"], body["context"]["user"]) == (tz, page_url, "viewer-42")
    assert any(body["context"].get("duration") == 40.0 for body in bodies), [body["context"] for body in bodies]
    answers = player.answers()
    assert answers and all(status == 202 and answer["rejected"] == 0 for status, answer in answers), answers

    # What the tracker published: the raw events of that one playback.
    batches = published(pipeline, account, has_stop())
    assert {(batch["user"], batch["domain"], batch["duration_s"], batch["is_bot"]) for batch in batches} == {
        ("viewer-42", "127.0.0.1", 40.0, False)}
    events = events_of(batches)
    assert {event["session"] for event in events} == {session}
    assert len({event["id"] for event in events}) == len(events), "event ids repeat within the session"
    kinds = [event["type"] for event in events]
    assert (kinds.count("impression"), kinds.count("view"), kinds.count("first_frame"), kinds.count("stop")) == (1, 1, 1, 1)
    assert kinds[:2] == ["impression", "view"] and kinds[-1] == "stop", kinds
    first_frame = next(event for event in events if event["type"] == "first_frame")
    assert 0 <= first_frame["startup_ms"] < 10_000, first_frame
    assert [event["percent"] for event in events if event["type"] == "quartile"] == [25, 50, 75, 100]
    progress = [event for event in events if event["type"] in ("heartbeat", "stop")]
    heartbeats = progress[:-1]
    assert len(heartbeats) >= 2, kinds  # about 34 s of playback and pause, one heartbeat per 10 s
    # each heartbeat reports what played since the one before (a delta, not a running total): never more than
    # the time that passed (timers fire late on a loaded machine, so the 10 s interval is not a bound)
    previous = first_frame["event_time_ms"]
    for heartbeat in heartbeats:
        assert heartbeat["watched_ms"] <= heartbeat["event_time_ms"] - previous + 500, (heartbeat, previous)
        previous = heartbeat["event_time_ms"]
    watched_s = sum(event["watched_ms"] for event in progress) / 1000
    assert abs(watched_s - played_s) <= 1.0, (watched_s, played_s)  # the 8 s seek was not counted
    assert progress[-1]["position"] == pytest.approx(40.0, abs=0.1)
    points = [point for event in progress for point in event["percentiles"]]
    assert len(points) == len(set(points)), "a point not replayed was reported twice"
    assert set(range(0, 17)) <= set(points) and set(range(38, 101)) <= set(points), sorted(points)
    assert not set(points) & set(range(19, 37)), sorted(points)  # the skipped stretch was not passed

    # What the query API answers once the worker wrote it: one view, the seconds actually played.
    expected = {"video_impression": 1, "video_view": 1, "video_seconds_viewed": round(watched_s, 3)}
    deadline = time.monotonic() + 45
    answer = totals(pipeline, account)
    while answer != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = totals(pipeline, account)
    assert answer == expected
    assert abs(answer["video_seconds_viewed"] - played_s) <= 1.0, (answer, played_s)
    assert player.warnings == []
