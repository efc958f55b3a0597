"""The SDK's own promises, one at a time, in headless Chromium against ``vidpulse up``: destroy() stops,
a failed batch is re-sent with the same ids, the queue is capped, a source change starts a new session,
leaving or hiding the page flushes with sendBeacon, stalls are rebuffers, media errors are reported, and
nothing ever throws into the page (the ``player`` fixture fails a test on any page error)."""

from __future__ import annotations

import time

import pytest

from tests.browser.support import events_of, has_stop, published
from tests.vidpulse_process import pool_account

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.browser]


def new_account() -> str:
    return pool_account()


def kinds(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]


def watched_ms(events: list[dict]) -> int:
    return sum(event["watched_ms"] for event in events if event["type"] in ("heartbeat", "stop"))


def test_destroy_sends_stop_and_detaches(pipeline, player):
    account = new_account()
    # the classic build, with no endpoint: it posts to the tracker it was loaded from
    player.open(build="classic").attach("clip12.webm", account=account, video="clip-12", endpoint=None)
    player.play_until(2.5)
    played_s = player.evaluate("() => { handle.destroy(); return playedSeconds(); }")
    stop_body = player.wait_for_beacon(lambda body: "stop" in kinds(body["events"]))
    requests = len(player.beacons)
    player.wait(2.5)  # the video plays on, untracked
    assert player.evaluate("() => player.currentTime") > 4.5
    assert len(player.beacons) == requests and player.evaluate("() => handle.pending") == 0

    events = events_of(published(pipeline, account, has_stop()))
    assert {event["session"] for event in events} == {stop_body["session"]}
    assert kinds(events) == ["impression", "view", "first_frame", "stop"]
    assert abs(watched_ms(events) - played_s * 1000) <= 300, (events, played_s)
    assert events[-1]["position"] == pytest.approx(played_s, abs=0.3)


def test_a_failed_batch_is_sent_again_with_the_same_event_ids(pipeline, player):
    account = new_account()
    calls = []

    def refuse_once(route):
        calls.append(time.monotonic())
        if len(calls) == 1:
            route.fulfill(status=503, headers={"Retry-After": "1", "Access-Control-Allow-Origin": "*"},
                          content_type="application/json", body='{"error": "cannot accept now"}')
        else:
            route.continue_()

    player.page.route(f"{pipeline.url}/v1/track", refuse_once)
    player.open().attach("clip12.webm", account=account, video="clip-12")
    player.evaluate("() => handle.adStart({serverSide: true})")
    player.wait_for_beacon(lambda body: len(player.beacons) >= 2)
    first, second = player.bodies()[:2]
    first_ids = [event["id"] for event in first["events"]]
    assert first_ids and [event["id"] for event in second["events"]][:len(first_ids)] == first_ids
    assert second["events"][:len(first_ids)] == first["events"] and second["session"] == first["session"]
    assert second["sent_at"] - first["sent_at"] >= 900  # Retry-After: 1 was honoured, and sent_at is the resend's
    assert player.answers()[-1][0] == 202
    assert player.evaluate("() => handle.pending") == 0

    batches = published(pipeline, account, lambda found: any(e["type"] == "ad_start" for e in events_of(found)))
    assert [(event["type"], event.get("server_side")) for event in events_of(batches)] == [
        ("impression", False), ("ad_start", True)]


def test_the_queue_is_capped_while_the_tracker_is_unreachable(pipeline, player):
    account = new_account()
    reachable = []
    player.page.route(f"{pipeline.url}/v1/track",
                      lambda route: route.continue_() if reachable else route.abort("connectionrefused"))
    player.open().attach("clip12.webm", account=account, video="clip-12", maxQueue=20, batchMs=100)
    player.evaluate("() => { for (let i = 0; i < 60; i++) handle.adStart({serverSide: false}); }")
    player.wait(1.5)
    assert player.evaluate("() => handle.pending") == 20
    assert len(player.beacons) >= 2  # it did try, and failed, more than once
    reachable.append(True)
    player.page.wait_for_function("() => handle.pending === 0", polling=100, timeout=30_000)

    batches = published(pipeline, account, lambda found: len(events_of(found)) >= 20)
    time.sleep(1)
    events = events_of(published(pipeline, account, lambda found: len(events_of(found)) > 20, timeout_s=2))
    # the newest 20 survived: the impression (id 1) and ad starts 2..41 were dropped
    assert [event["id"] for event in events] == [str(i) for i in range(42, 62)], [event["id"] for event in events]
    assert set(kinds(events)) == {"ad_start"} and len(batches) >= 1


def test_a_source_change_stops_the_session_and_starts_a_new_one(pipeline, player):
    account = new_account()
    player.open().attach("clip12.webm", account=account, video_js="(el) => el.currentSrc.split('/').pop().split('.')[0]")
    player.play_until(2)
    first_played = player.evaluate("() => playedSeconds()")
    player.evaluate("() => { player.src = player.currentSrc.replace('clip12', 'clip40'); player.play(); }")
    player.page.wait_for_function("() => player.currentSrc.includes('clip40') && player.currentTime >= 1.5", polling=20)
    second_played = player.evaluate("() => { handle.destroy(); return playedSeconds(); }")

    batches = published(pipeline, account, lambda found: kinds(events_of(found)).count("stop") == 2)
    sessions: dict[str, list[dict]] = {}
    for event in events_of(batches):
        sessions.setdefault(event["session"], []).append(event)
    assert len(sessions) == 2, sessions
    by_video = {events[0]["video"]: events for events in sessions.values()}
    assert set(by_video) == {"clip12", "clip40"}
    for video, played_s in (("clip12", first_played), ("clip40", second_played)):
        events = by_video[video]
        assert kinds(events) == ["impression", "view", "first_frame", "stop"], (video, kinds(events))
        assert abs(watched_ms(events) - played_s * 1000) <= 300, (video, events, played_s)
    assert {batch["video"]: batch["duration_s"] for batch in batches} == {"clip12": 12.0, "clip40": 40.0}


def test_a_replay_after_the_end_is_a_new_session(pipeline, player):
    account = new_account()
    player.open().attach("clip12.webm", account=account, video="clip-12")
    player.evaluate("() => { player.currentTime = 10; }")
    player.page.wait_for_function("() => !player.seeking", polling=20)
    player.evaluate("() => player.play()")
    player.page.wait_for_function("() => player.ended", polling=20, timeout=30_000)
    first_session = player.evaluate("() => handle.session")
    player.play_until(1)  # play() after the end starts over
    assert player.evaluate("() => handle.session") != first_session
    played_s = player.evaluate("() => { handle.destroy(); return playedSeconds(); }")

    events = events_of(published(pipeline, account, lambda found: kinds(events_of(found)).count("stop") == 2))
    first = [event for event in events if event["session"] == first_session]
    second = [event for event in events if event["session"] != first_session]
    # playback reached 10 s of 12 (83 %): Played 25/50/75 % count then, 100 % at the end
    assert kinds(first) == ["impression", "view", "first_frame", "quartile", "quartile", "quartile", "quartile", "stop"]
    assert [event["percent"] for event in first if event["type"] == "quartile"] == [25, 50, 75, 100]
    assert kinds(second) == ["view", "first_frame", "stop"]  # nothing new was loaded: no impression
    assert abs(watched_ms(events) - played_s * 1000) <= 300, (events, played_s)


def test_leaving_the_page_flushes_everything_with_send_beacon(pipeline, player):
    account = new_account()
    player.open().attach("clip12.webm", account=account, video="clip-12", batchMs=600_000)  # only an exit sends
    player.play_until(2.5)
    player.pause()  # so that the page's count is final; the pause itself sends nothing yet
    player.wait(0.3)
    assert player.beacons == []
    played_s = player.evaluate("() => playedSeconds()")
    player.page.goto("about:blank")

    events = events_of(published(pipeline, account, has_stop()))
    assert kinds(events) == ["impression", "view", "first_frame", "stop"]
    assert abs(watched_ms(events) - played_s * 1000) <= 300, (events, played_s)


def test_a_hidden_page_sends_stop_and_the_session_resumes_when_playback_goes_on(pipeline, player):
    account = new_account()
    player.open().attach("clip12.webm", account=account, video="clip-12", batchMs=600_000)
    player.play_until(2)
    player.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
        delete document.visibilityState;
    }""")
    hidden = events_of(published(pipeline, account, has_stop()))
    assert kinds(hidden) == ["impression", "view", "first_frame", "stop"]
    player.play_until(4)
    played_s = player.evaluate("() => { handle.destroy(); return playedSeconds(); }")

    events = events_of(published(pipeline, account, lambda found: kinds(events_of(found)).count("stop") == 2))
    assert {event["session"] for event in events} == {hidden[0]["session"]}
    assert kinds(events) == ["impression", "view", "first_frame", "stop", "quartile", "stop"]  # 25 % is at 3 s
    assert abs(watched_ms(events) - played_s * 1000) <= 300, (events, played_s)


def test_a_stall_is_a_rebuffer_and_not_watched_time(pipeline, player, media):
    account = new_account()
    size = (media.folder / "stall12.webm").stat().st_size
    release = media.hold("stall12.webm", size // 3)  # the server sends a third of the file, then waits
    try:
        player.open().attach("stall12.webm", account=account, video="stall-12")
        player.evaluate("() => player.play()")
        player.page.wait_for_function("() => mediaEvents.some((e) => e.name === 'waiting' && e.time > 1)",
                                      polling=20, timeout=30_000)
        player.wait(1.5)
    finally:
        release.set()
    player.play_until(8)
    played_s = player.evaluate("() => { handle.destroy(); return playedSeconds(); }")
    stall_ms = player.evaluate("""() => {
        const waiting = mediaEvents.find((e) => e.name === "waiting" && e.time > 1);
        const playing = mediaEvents.find((e) => e.name === "playing" && e.at > waiting.at);
        return playing.at - waiting.at;
    }""")

    events = events_of(published(pipeline, account, has_stop()))
    rebuffers = [event for event in events if event["type"] == "rebuffer"]
    assert len(rebuffers) == 1, kinds(events)
    assert stall_ms >= 1400 and abs(rebuffers[0]["duration_ms"] - stall_ms) <= 100, (rebuffers, stall_ms)
    assert abs(watched_ms(events) - played_s * 1000) <= 300, (events, played_s)


def test_a_media_error_is_reported(pipeline, player):
    account = new_account()
    assert player.open().attach("broken.webm", account=account, video="broken") == 4  # MEDIA_ERR_SRC_NOT_SUPPORTED
    events = events_of(published(pipeline, account, lambda found: "error" in kinds(events_of(found))))
    error = next(event for event in events if event["type"] == "error")
    assert (error["code"], error["fatal"]) == ("MEDIA_ERR_SRC_NOT_SUPPORTED", True), error
    assert kinds(events) == ["impression", "error"]


def test_bad_arguments_never_throw_into_the_page(player):
    player.open()
    results = player.evaluate("""async () => {
        const sdk = await window.sdkReady;
        const handles = [sdk.attach(null, {account: "a"}), sdk.attach(player, {account: "bad id!"}), sdk.attach(player),
                         sdk.attach(document.body, {account: "ok"})];
        for (const handle of handles) { handle.adStart(); handle.flush(); handle.destroy(); handle.destroy(); }
        return handles.map((handle) => [handle.session, handle.pending]);
    }""")
    assert results == [[None, 0]] * 4
    assert len(player.warnings) == 4, player.warnings
    player.wait(0.5)
    assert player.beacons == []
