"""Beacons over HTTP into a running ``vidpulse up`` (real broker, real ClickHouse engine), and back
out of both query endpoints, equal to a ground truth computed independently from what was sent."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ingest import truth
from tests.integration.beacons import DESKTOP, envelope, eventually, get, post
from tests.vidpulse_process import VidpulseProcess, pool_account

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
M = 60_000
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")
ADDITIVE = ("video_impression", "video_view", "video_seconds_viewed", "ad_start", "alive_ss_ad_start")
ALL_METRICS = ",".join((*ADDITIVE, "ccu", "fingerprint_count"))


def bucketed(per_minute: dict[int, int], start_ms: int, step_ms: int, count: int) -> list[dict[str, int]]:
    """The spec's unique-metric point: the max of the bucket's minutes."""
    return [{"timestamp": start_ms + i * step_ms,
             "value": max((v for m, v in per_minute.items() if start_ms + i * step_ms <= m < start_ms + (i + 1) * step_ms),
                          default=0)} for i in range(count)]


def point_differences(got: dict[str, list[dict[str, int]]], want: dict[str, list[dict[str, int]]]) -> list[str]:
    """The points that differ, one line each: a timeseries diff pytest would truncate."""
    lines = [f"{key}: missing" for key in want.keys() - got.keys()] + [f"{key}: unexpected" for key in got.keys() - want.keys()]
    for key in sorted(want.keys() & got.keys()):
        got_points = {point["timestamp"]: point["value"] for point in got[key]}
        for point in want[key]:
            if got_points.get(point["timestamp"]) != point["value"]:
                lines.append(f"{key} at {point['timestamp']}: got {got_points.get(point['timestamp'])}, want {point['value']}")
    return lines


def per_minute_fingerprints(sessions: list[truth.Session], start_ms: int, end_ms: int) -> dict[int, int]:
    minutes: dict[int, set] = {m: set() for m in range(start_ms, end_ms, M)}
    for session in sessions:
        for minute in truth.active_minutes(session):
            if minute in minutes:
                minutes[minute].add(session.fingerprint_key)
    return {m: len(keys) for m, keys in minutes.items()}


# A small hand-made day: three videos, two countries, desktop and mobile, a viewer who comes back
# (same IP, User-Agent and player: one fingerprint), an abandoned session and an impression-only one.
def scripted_batches(account: str, base: int) -> list[truth.SentBatch]:
    def sent(session, video, events, ip="8.8.8.8", ua=DESKTOP, **extra):
        return truth.SentBatch(envelope(session, video, events, account=account, **extra), ip, ua)

    hb = lambda i, ts, ms=10_000: {"id": i, "type": "heartbeat", "ts": ts, "watched_ms": ms}  # noqa: E731
    return [
        sent("s-desk-0001", "A", [{"id": "1", "type": "impression", "ts": base},
                                  {"id": "2", "type": "view", "ts": base + 1000},
                                  {"id": "3", "type": "first_frame", "ts": base + 1500, "startup_ms": 500},
                                  hb("4", base + 11_500),
                                  {"id": "5", "type": "ad_start", "ts": base + 20_000, "server_side": True}], live=True),
        sent("s-desk-0001", "A", [hb("6", base + 21_500), hb("7", base + 61_500), hb("8", base + 121_500),
                                  {"id": "9", "type": "stop", "ts": base + 125_000, "watched_ms": 3500}], live=True),
        sent("s-mobi-0002", "A", [{"id": "1", "type": "view", "ts": base + 70_000}, hb("2", base + 80_000),
                                  {"id": "3", "type": "ad_start", "ts": base + 90_000}],
             ip="81.2.69.142", ua=IPHONE, context={"user": "u-1"}),
        sent("s-desk-0003", "B", [{"id": "1", "type": "impression", "ts": base + 200_000}]),
        sent("s-desk-0004", "B", [{"id": "1", "type": "view", "ts": base + 300_000}, hb("2", base + 310_000, 7_777),
                                  {"id": "3", "type": "stop", "ts": base + 315_000, "watched_ms": 5_000}]),
        sent("s-mobi-0005", "C", [{"id": "1", "type": "view", "ts": base + 400_000},
                                  {"id": "2", "type": "rebuffer", "ts": base + 410_000, "duration_ms": 900},
                                  hb("3", base + 420_000)], ip="81.2.69.142", ua=IPHONE),
    ]


@pytest.fixture(scope="module")
def scripted(pipeline: VidpulseProcess) -> dict[str, Any]:
    """Posts the scripted batches, the second one three times (a client retrying)."""
    account = "scripted"
    base = (int(time.time() * 1000) // M - 15) * M + 7_000
    batches = scripted_batches(account, base)
    with httpx.Client(base_url=pipeline.url, timeout=30) as client:
        for index, batch in enumerate(batches):
            for _ in range(3 if index == 1 else 1):
                post(client, dict(batch.envelope), ip=batch.ip, user_agent=batch.user_agent)
    sessions = truth.build_sessions(batches)
    start, end = base - base % M, base - base % M + 10 * M
    return {"account": account, "sessions": sessions, "start": start, "end": end}


def expected_totals(sessions: list[truth.Session], start: int, end: int, key: Callable[[truth.Session], tuple]) -> list:
    groups: dict[tuple, list] = {}
    for session in sessions:
        groups.setdefault(key(session), []).append(session)
    rows = []
    for group_key, group in sorted(groups.items()):
        values = truth.totals(group, start, end - 1)
        rows.append((group_key, {name: values[name] for name in ALL_METRICS.split(",")}))
    return rows


def answered_totals(answer: dict[str, Any], dimensions: tuple[str, ...]) -> list:
    return [(tuple(row["dimensions"][d] for d in dimensions), row["totals"]) for row in answer["data"]]


@pytest.mark.parametrize("dimensions, key", [
    (("video",), lambda s: (s.video,)),
    (("video", "country"), lambda s: (s.video, s.country)),
    (("country",), lambda s: (s.country,)),
    (("account",), lambda s: ("scripted",)),
])
def test_events_totals_equal_the_truth(pipeline, scripted, dimensions, key):
    window = {"from": str(scripted["start"]), "to": str(scripted["end"] - 1)}
    expected = expected_totals(scripted["sessions"], scripted["start"], scripted["end"], key)
    fetch = lambda: answered_totals(get(pipeline, "events", scripted["account"], dimensions=",".join(dimensions),  # noqa: E731
                                        metrics=ALL_METRICS, **window), dimensions)
    assert eventually(fetch, expected) == expected


def test_the_retried_batch_counts_once(pipeline, scripted):
    window = {"from": str(scripted["start"]), "to": str(scripted["end"] - 1)}
    fetch = lambda: get(pipeline, "events", scripted["account"], dimensions="video", metrics="video_view,video_seconds_viewed",  # noqa: E731
                        where="video==A", **window)["data"]
    expected = [{"dimensions": {"account": "scripted", "video": "A"},
                 "totals": {"video_view": 2, "video_seconds_viewed": 53.5}}]  # 10 + 3*10 + 3.5 (desk) + 10 (mobile)
    assert eventually(fetch, expected) == expected


@pytest.mark.parametrize("bucket", [{"bucket_duration": "1m"}, {"bucket_duration": "3m"}, {"bucket_duration": "1h"},
                                    {"bucket_limit": "1"}, {"bucket_limit": "4"}])
def test_unique_timeseries_are_the_max_of_minutes(pipeline, scripted, bucket):
    start, end = scripted["start"], scripted["end"]
    span = (end - start) // M
    step = (int(bucket["bucket_duration"][:-1]) * (60 if bucket["bucket_duration"][-1] == "h" else 1) if "bucket_duration"
            in bucket else math.ceil(span / int(bucket["bucket_limit"]))) * M
    count = math.ceil((end - start) / step)
    sessions = scripted["sessions"]
    expected = {}
    for video in ("A", "B", "C"):
        group = [s for s in sessions if s.video == video]
        ccu = truth.ccu_timeseries(group, start, end - 1)
        fingerprints = per_minute_fingerprints(group, start, end)
        if any(ccu.values()):
            expected[video] = (bucketed(ccu, start, step, count), bucketed(fingerprints, start, step, count))

    def fetch():
        answer = get(pipeline, "timeseries", scripted["account"], dimensions="video", metrics="ccu,fingerprint_count",
                     **{"from": str(start), "to": str(end - 1)}, **bucket)
        series = {name: {row["dimensions"]["video"]: row["points"] for row in answer[name]["data"]}
                  for name in ("ccu", "fingerprint_count")}
        return {video: (series["ccu"][video], series["fingerprint_count"].get(video)) for video in series["ccu"]}

    assert eventually(fetch, expected) == expected


def test_additive_timeseries_sum_per_bucket_with_gaps(pipeline, scripted):
    start, end = scripted["start"], scripted["end"]
    sessions = [s for s in scripted["sessions"] if s.video in ("A", "B")]
    expected = {}
    for video in ("A", "B"):
        points = []
        for minute in range(start, end, 2 * M):
            group = [s for s in sessions if s.video == video]
            values = truth.totals(group, minute, minute + 2 * M - 1)
            points.append({"timestamp": minute, "value": values["video_view"]})
        expected[video] = points
    fetch = lambda: {row["dimensions"]["video"]: row["points"] for row in get(  # noqa: E731
        pipeline, "timeseries", scripted["account"], dimensions="video", metrics="video_view", where="video==A,B",
        bucket_duration="2m", **{"from": str(start), "to": str(end - 1)})["video_view"]["data"]}
    assert eventually(fetch, expected) == expected


def test_simulate_against_up_equals_its_ground_truth(pipeline, tmp_path):
    truth_file = tmp_path / "truth.json"
    account = pool_account()
    completed = subprocess.run([sys.executable, "-m", "vidpulse.cli", "simulate", "--url", pipeline.url,
                                "--account", account, "--sessions", "120", "--videos", "4", "--seed", "7",
                                "--truth", str(truth_file)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = json.loads(truth_file.read_text())
    window = {"from": str(expected["range"]["from"]), "to": str(expected["range"]["to"])}
    metrics = ",".join((*ADDITIVE, "ccu", "fingerprint_count"))

    def by_video():
        answer = get(pipeline, "events", account, dimensions="video", metrics=metrics, **window)
        return {row["dimensions"]["video"]: row["totals"] for row in answer["data"]}

    want = {video: {m: values[m] for m in metrics.split(",")} for video, values in expected["totals"]["by_video"].items()}
    assert eventually(by_video, want) == want
    account_totals = get(pipeline, "events", account, dimensions="account", metrics=metrics, **window)["data"][0]["totals"]
    assert account_totals == {m: expected["totals"]["account"][m] for m in metrics.split(",")}
    want_series = {video: points for video, points in expected["timeseries"]["ccu"]["by_video"].items()
                   if any(point["value"] for point in points)}
    series = lambda: {row["dimensions"]["video"]: row["points"] for row in get(  # noqa: E731
        pipeline, "timeseries", account, dimensions="video", metrics="ccu", **window)["ccu"]["data"]}
    got_series = eventually(series, want_series)
    assert got_series == want_series, point_differences(got_series, want_series)
