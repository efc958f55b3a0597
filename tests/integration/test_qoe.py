"""Quality-of-experience metrics and calendar steps, from beacons through the running pipeline,
against values this test computes from the events it sends."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import pytest

from tests.integration.beacons import DESKTOP, envelope, eventually, get, post
from tests.integration.test_end_to_end import IPHONE

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
M = 60_000
ACCOUNT = "qoe"
QOE = ("error_rate", "ttff_p50_ms", "ttff_p95_ms", "ttff_p99_ms", "rebuffer_ratio", "exit_before_start_rate",
       "watch_minutes", "unique_viewers", "video_view")


def plays(base: int) -> list[dict[str, Any]]:
    """Sessions of video Q (and one of R), with startup times, stalls, errors, exits and known viewers."""
    def play(n, start, startup_ms=None, watched=(), rebuffer=(), fatal=False, stop=True, user=None, video="Q",
             mobile=False):
        events = [{"id": "v", "type": "view", "ts": start}]
        if startup_ms is not None:
            events.append({"id": "ff", "type": "first_frame", "ts": start + startup_ms, "startup_ms": startup_ms})
        events += [{"id": f"h{i}", "type": "heartbeat", "ts": start + 1000 + i * 10_000, "watched_ms": w}
                   for i, w in enumerate(watched)]
        events += [{"id": f"r{i}", "type": "rebuffer", "ts": start + 1500 + i * 10_000, "duration_ms": d}
                   for i, d in enumerate(rebuffer)]
        if fatal:
            events += [{"id": f"e{i}", "type": "error", "ts": start + 2000 + i, "code": "MEDIA_ERR_DECODE"}
                       for i in range(2)]  # two fatal errors: still one view with an error
        if stop:
            events.append({"id": "s", "type": "stop", "ts": start + 55_000, "watched_ms": 0})
        context = {"user": user} if user else {}
        return {"session": f"qoe-session-{n:03d}", "video": video, "events": sorted(events, key=lambda e: e["ts"]),
                "context": context, "device_type": "mobile" if mobile else "desktop"}

    return [
        play(1, base + 1_000, 400, watched=(10_000, 10_000), rebuffer=(500,), user="ann"),
        play(2, base + 2_000, 900, watched=(10_000,), user="ann", mobile=True),
        play(3, base + 3_000, 1_500, watched=(5_000,), rebuffer=(1_000, 2_000), fatal=True, user="bob"),
        play(4, base + 4_000, None),  # stops without a first frame: an exit before start
        play(5, base + 2 * M + 5_000, 250, watched=(10_000, 10_000, 10_000)),
        play(6, base + 2 * M + 6_000, None, stop=False, mobile=True),  # goes silent unstarted: exit by timeout
        play(7, base + 2 * M + 7_000, 3_100, watched=(8_000,), fatal=True, user="cid"),
        play(8, base + 5_000, 700, watched=(10_000,), user="dan", video="R"),
    ]


def nearest_rank(values: list[int], level: float) -> int:
    """ClickHouse's quantileTiming for small sets: the value at position floor(level * n) of the sorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(level * len(ordered)))]


def expected(sessions: list[dict[str, Any]], start: int, end: int) -> dict[str, Any]:
    """The spec's definitions, computed from the sent events (numerators at their own minute, exits at the view)."""
    def when(session, kind):
        return [e for e in session["events"] if e["type"] == kind and start <= e["ts"] < end]

    views = sum(len(when(s, "view")) for s in sessions)
    watched = sum(e.get("watched_ms", 0) for s in sessions for kind in ("heartbeat", "stop") for e in when(s, kind))
    rebuffered = sum(e["duration_ms"] for s in sessions for e in when(s, "rebuffer"))
    startups = [e["startup_ms"] for s in sessions for e in when(s, "first_frame")]
    failed = sum(1 for s in sessions if when(s, "error"))
    exits = sum(1 for s in sessions if when(s, "view") and not any(e["type"] == "first_frame" for e in s["events"]))
    users = {s["context"]["user"] for s in sessions if when(s, "view") and s["context"].get("user")}
    ratio = lambda a, b: a / b if b else None  # noqa: E731
    return {"error_rate": ratio(failed, views),
            "ttff_p50_ms": nearest_rank(startups, 0.5) if startups else None,
            "ttff_p95_ms": nearest_rank(startups, 0.95) if startups else None,
            "ttff_p99_ms": nearest_rank(startups, 0.99) if startups else None,
            "rebuffer_ratio": ratio(rebuffered, watched + rebuffered),
            "exit_before_start_rate": ratio(exits, views),
            "watch_minutes": round(watched / 60_000, 3), "unique_viewers": len(users), "video_view": views}


@pytest.fixture(scope="module")
def sent(pipeline) -> dict[str, Any]:
    base = (int(time.time() * 1000) // M - 20) * M
    sessions = plays(base)
    with httpx.Client(base_url=pipeline.url, timeout=30) as client:
        for session in sessions:
            post(client, envelope(session["session"], session["video"], session["events"], account=ACCOUNT,
                                  context=session["context"]), user_agent=IPHONE if session["device_type"] == "mobile"
                 else DESKTOP)
    return {"base": base, "sessions": sessions}


def approx(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 9) if isinstance(v, float) else v) for k, v in values.items()}


def test_qoe_totals_per_video(pipeline, sent):
    base, sessions = sent["base"], sent["sessions"]
    window = {"from": str(base), "to": str(base + 10 * M - 1)}
    want = {video: approx(expected([s for s in sessions if s["video"] == video], base, base + 10 * M))
            for video in ("Q", "R")}
    fetch = lambda: {row["dimensions"]["video"]: approx(row["totals"]) for row in get(  # noqa: E731
        pipeline, "events", ACCOUNT, dimensions="video", metrics=",".join(QOE), **window)["data"]}
    assert eventually(fetch, want) == want
    assert want["Q"]["exit_before_start_rate"] == round(2 / 7, 9) == want["Q"]["error_rate"]


def test_qoe_totals_per_video_and_device_type(pipeline, sent):
    base, sessions = sent["base"], sent["sessions"]
    window = {"from": str(base), "to": str(base + 10 * M - 1)}
    want = {(video, device): approx(expected(group, base, base + 10 * M))
            for video in ("Q", "R") for device in ("desktop", "mobile")
            if (group := [s for s in sessions if s["video"] == video and s["device_type"] == device])}
    fetch = lambda: {(row["dimensions"]["video"], row["dimensions"]["device_type"]): approx(row["totals"])  # noqa: E731
                     for row in get(pipeline, "events", ACCOUNT, dimensions="video,device_type", metrics=",".join(QOE),
                                    **window)["data"]}
    assert eventually(fetch, want) == want
    assert want[("Q", "mobile")]["exit_before_start_rate"] == 0.5


def test_ratios_and_percentiles_per_bucket_are_merged_not_averaged(pipeline, sent):
    base, sessions = sent["base"], [s for s in sent["sessions"] if s["video"] == "Q"]
    buckets = [(base + i * 2 * M, base + (i + 1) * 2 * M) for i in range(3)]
    want = {name: [{"timestamp": lo, "value": approx(expected(sessions, lo, hi))[name]} for lo, hi in buckets]
            for name in QOE}
    params = {"dimensions": "video", "metrics": ",".join(QOE), "where": "video==Q", "bucket_duration": "2m",
              "from": str(base), "to": str(base + 6 * M - 1)}

    def fetch():
        answer = get(pipeline, "timeseries", ACCOUNT, **params)
        return {name: [{"timestamp": p["timestamp"], "value": approx({"v": p["value"]})["v"]}
                       for p in answer[name]["data"][0]["points"]] for name in QOE}

    assert eventually(fetch, want) == want
    assert want["ttff_p99_ms"][1]["value"] == 3_100 and want["error_rate"][1]["value"] == round(1 / 3, 9)
    assert want["rebuffer_ratio"][2]["value"] is None  # a bucket with no data: null, not 0


def test_calendar_hours_in_a_half_hour_zone_keep_max_in_bucket(pipeline, sent):
    base = sent["base"]
    params = {"dimensions": "video", "metrics": "ccu,video_view", "where": "video==Q", "time_step": "hour",
              "tz": "Asia/Kolkata", "from": str(base), "to": str(base + 10 * M - 1)}
    def views() -> int:
        series = get(pipeline, "timeseries", ACCOUNT, **params)["video_view"]["data"]
        return sum(p["value"] for p in series[0]["points"]) if series else 0

    assert eventually(views, 7) == 7
    answer = get(pipeline, "timeseries", ACCOUNT, **params)
    points = answer["ccu"]["data"][0]["points"]
    # hours in Kolkata start at :30 UTC: every bucket start is a half hour in UTC
    assert all(p["timestamp"] % 3_600_000 == 1_800_000 for p in points)
    assert sum(p["value"] for p in answer["video_view"]["data"][0]["points"]) == 7
    assert max(p["value"] for p in points) >= 4  # sessions 1-4 overlap in the first minutes
    whole = get(pipeline, "timeseries", ACCOUNT, **{**params, "time_step": "all"})
    assert whole["video_view"]["data"][0]["points"] == [{"timestamp": base, "value": 7}]


def test_bad_time_steps(pipeline):
    for extra, fragment in (({"time_step": "fortnight"}, "time_step"), ({"time_step": "day", "tz": "Mars/Base"}, "tz"),
                            ({"time_step": "day", "bucket_limit": "2"}, "use one of"), ({"tz": "UTC"}, "tz")):
        response = httpx.get(f"{pipeline.url}/v1/timeseries/accounts/{ACCOUNT}", timeout=30, auth=pipeline.auth,
                             params={"dimensions": "video", "metrics": "ccu", **extra})
        assert response.status_code == 400 and fragment in response.json()["error"], (extra, response.text)
