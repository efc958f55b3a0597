"""Faults on the split topology (2 trackers, 3 workers over 6 partitions, 2 APIs, a ClickHouse server, a
three-broker Kafka cluster): a scripted load with a ground truth (ingest.simulator plans it, ingest.truth
computes what every accepted batch must add up to), then every 202 must be counted exactly once.

Marked ``faults``: ``make faults`` runs only these; ``pytest -m "not faults"`` leaves them out.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

import httpx
import pytest

from ingest import simulator, truth
from tests.clickhouse_server import ClickHouseServer
from tests.kafka_cluster import KafkaCluster
from tests.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.faults]
RUNS = int(os.environ.get("VIDPULSE_FAULT_RUNS", "3"))
SESSIONS = 36
METRICS = ("video_impression", "video_view", "video_seconds_viewed", "ad_start", "alive_ss_ad_start", "ccu",
           "fingerprint_count")
SETTLE_S = 240  # sessions close 60 s + grace after their last batch, and a dead worker's partitions move first


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    folder = tmp_path_factory.mktemp("topology")
    server, cluster = ClickHouseServer(folder / "clickhouse"), KafkaCluster(folder / "kafka")
    stack = None
    try:
        server.start()
        cluster.start()
        # offsets committed rarely: a killed worker's partitions are replayed from well before its last write
        stack = Topology(folder, cluster.bootstrap, server, f"faults{time.time_ns() % 10**9}",
                         session_close_grace_s="5", flush_interval_s="0.5", commit_interval_s="10",
                         consumer_session_timeout_s="6")
        stack.start(tuple(f"fault-{n}" for n in range(RUNS)))
        yield stack
    finally:
        if stack is not None:
            stack.stop()
        cluster.stop()
        server.stop()


def planned_batches(account: str, seed: int) -> list[tuple[simulator.PlannedSession, dict[str, Any]]]:
    """The simulator's sessions, their batches interleaved as concurrent players send them."""
    sessions = simulator.generate(seed, SESSIONS, 3, account, int(time.time() * 1000), f"f{seed}")
    queues = [[session.envelope(events) for events in session.batches()] for session in sessions]
    interleaved = []
    for index in range(max(len(queue) for queue in queues)):
        interleaved += [(session, queue[index]) for session, queue in zip(sessions, queues, strict=True)
                        if index < len(queue)]
    return interleaved


async def send(stack: Topology, batches: list[tuple[simulator.PlannedSession, dict[str, Any]]], kill_at: int,
               victim: Any) -> simulator.RunStats:
    """Alternating trackers; ``victim()`` runs once ``kill_at`` batches are in. A batch the tracker does not
    accept is retried as the simulator retries (same body, same event ids)."""
    stats = simulator.RunStats()
    trackers = simulator.Trackers(",".join(tracker.url for tracker in stack.trackers))
    async with httpx.AsyncClient(timeout=30) as client:
        for index, (session, envelope) in enumerate(batches):
            if index == kill_at:
                victim()
            await simulator._send_batch(client, trackers, session, envelope, stats)
    return stats


def answers(stack: Topology, api_index: int, account: str, window: dict[str, int]) -> dict[str, Any]:
    api = stack.apis[api_index]
    params = {"from": str(window["from"]), "to": str(window["to"])}

    def get(endpoint: str, **extra: str) -> dict[str, Any]:
        response = httpx.get(f"{api.url}/v1/{endpoint}/accounts/{account}", params={**params, **extra}, timeout=60,
                             auth=stack.auth)
        assert response.status_code == 200, response.text
        return response.json()

    totals = get("events", dimensions="account", metrics=",".join(METRICS))["data"]
    by_video = get("events", dimensions="video", metrics=",".join(METRICS))["data"]
    series = get("timeseries", dimensions="account", metrics="ccu,fingerprint_count", bucket_duration="1m")
    return {"totals": totals[0]["totals"] if totals else {},
            "by_video": {row["dimensions"]["video"]: row["totals"] for row in by_video},
            "ccu": _points(series, "ccu"), "fingerprint_count": _points(series, "fingerprint_count")}


def _points(series: dict[str, Any], metric: str) -> dict[int, int]:
    data = series[metric]["data"]
    return {point["timestamp"]: point["value"] for point in data[0]["points"]} if data else {}


def expected(account: str, stats: simulator.RunStats) -> tuple[dict[str, Any], dict[str, int]]:
    """ingest.truth over exactly the batches that got a 202."""
    sessions = [s for s in truth.build_sessions(stats.accepted) if s.account == account]
    first, last = truth.time_range(sessions)
    window = {"from": truth.minute_of(first), "to": last}
    totals = truth.totals(sessions, first, last)
    by_video = {video: truth.totals(group, first, last) for video, group in truth.grouped(sessions, lambda s: s.video).items()}
    ccu = truth.ccu_timeseries(sessions, first, last)
    fingerprints = {minute: len({s.fingerprint_key for s in sessions if minute in truth.active_minutes(s)})
                    for minute in ccu}
    return ({"totals": {m: totals[m] for m in METRICS},
             "by_video": {video: {m: values[m] for m in METRICS} for video, values in by_video.items()},
             "ccu": ccu, "fingerprint_count": fingerprints}, window)


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    lines = [f"totals {m}: got {got['totals'].get(m)}, want {want['totals'][m]}"
             for m in METRICS if got["totals"].get(m) != want["totals"][m]]
    for video, values in want["by_video"].items():
        lines += [f"video {video} {m}: got {got['by_video'].get(video, {}).get(m)}, want {values[m]}"
                  for m in METRICS if got["by_video"].get(video, {}).get(m) != values[m]]
    for metric in ("ccu", "fingerprint_count"):
        lines += [f"{metric} at minute {minute}: got {got[metric].get(minute)}, want {value}"
                  for minute, value in want[metric].items() if got[metric].get(minute, 0) != value]
    return lines


def settle(stack: Topology, account: str, want: dict[str, Any], window: dict[str, int]) -> tuple[float, list[str]]:
    """Seconds until both APIs answer the truth (then once more 3 s later: nothing arrives twice late)."""
    started, found = time.monotonic(), ["not asked yet"]
    while time.monotonic() - started < SETTLE_S:
        found = [line for index in range(len(stack.apis)) for line in differences(answers(stack, index, account, window), want)]
        if not found:
            recovered = time.monotonic() - started
            time.sleep(3)
            return recovered, [line for index in range(len(stack.apis))
                               for line in differences(answers(stack, index, account, window), want)]
        time.sleep(1)
    return SETTLE_S, found


WORKER_GAUGES = re.compile(r"^(vidpulse_worker_(?:consumer_lag_messages|messages_consumed_total|open_sessions|"
                           r"oldest_pending_batch_age_seconds)(?:\{[^}]*\})?) (\S+)$", re.M)


def worker_state(stack: Topology) -> list[str]:
    """Each live worker's lag, consumption and pending state: says whether a stall is in Kafka or in the sink."""
    lines = []
    for index, worker in enumerate(stack.workers):
        if worker.proc is None or worker.proc.poll() is not None:
            lines.append(f"worker {index}: not running")
            continue
        metrics = httpx.get(f"{worker.url}/metrics", timeout=30).text
        lines.append(f"worker {index}: " + ", ".join(f"{name}={value}" for name, value in WORKER_GAUGES.findall(metrics)))
    return lines


@pytest.mark.parametrize("run", range(RUNS))
def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(topology, run):
    account = f"fault-{run}"
    victim = topology.workers[run % len(topology.workers)]
    batches = planned_batches(account, seed=1000 + run)
    stats = asyncio.run(send(topology, batches, len(batches) // 2, victim.kill))
    last_202 = time.monotonic()
    assert not stats.failures, stats.failures[:5]
    want, window = expected(account, stats)
    recovery_s, wrong = settle(topology, account, want, window)
    state = worker_state(topology) if wrong else []
    counted = answers(topology, 0, account, window)["totals"].get("video_view", 0)
    views = want["totals"]["video_view"]
    print(f"\nworker SIGKILLed mid-stream, run {run + 1}/{RUNS}: sent {len(batches)} batches, accepted "
          f"{stats.batches} ({stats.retries} retries), views {views}, counted {counted}, lost {max(0, views - counted)}, "
          f"doubled {max(0, counted - views)}, exact {recovery_s:.0f} s after the last 202 "
          f"({time.monotonic() - last_202:.0f} s incl. the re-check)")
    victim.start()  # back to three workers for the next run (a worker joining, too)
    assert not wrong, "\n".join(wrong[:40] + ["workers when it gave up:", *state])
