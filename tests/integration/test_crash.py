"""A worker killed mid-stream (SIGKILL, several times) loses nothing and counts nothing twice."""

import time

import httpx
import pytest

from tests.integration.beacons import envelope, post
from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
M = 60_000


def totals(process: VidpulseProcess) -> dict:
    since = str(int(time.time() * 1000) - 3600_000)
    response = httpx.get(f"{process.url}/v1/events/accounts/1234", timeout=30, auth=process.auth, params={
        "dimensions": "account", "metrics": "video_view,video_seconds_viewed,ccu", "from": since})
    data = response.json()["data"]
    return data[0]["totals"] if data else {}


def wait_for(process: VidpulseProcess, expected: dict, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    seen = {}
    while time.monotonic() < deadline:
        seen = totals(process)
        if seen == expected:
            return seen
        time.sleep(0.5)
    return seen


def test_killed_mid_stream_loses_nothing_and_counts_nothing_twice(kafka, tmp_path, run_id):
    # Offsets are committed rarely, so every kill forces a replay of batches already written.
    process = VidpulseProcess(kafka, tmp_path, run_id, commit_interval_s="30", flush_interval_s="0.2",
                              consumer_session_timeout_s="6").start()
    now = int(time.time() * 1000)
    views, watched_ms = 0, 0
    try:
        for wave in range(3):
            with httpx.Client(base_url=process.url, timeout=30) as client:
                for n in range(60):
                    session = f"crash{wave:02d}{n:04d}"
                    ts = now - 10 * M + n * 1000
                    post(client, envelope(session, f"v{n % 3}", [
                        {"id": "1", "type": "view", "ts": ts},
                        {"id": "2", "type": "heartbeat", "ts": ts + 5000, "watched_ms": 1000 + n}]))
                    views, watched_ms = views + 1, watched_ms + 1000 + n
            process.kill()
            process.start()
        expected = {"video_view": views, "video_seconds_viewed": round(watched_ms / 1000, 3), "ccu": views}
        assert wait_for(process, expected) == expected
        time.sleep(3)  # and it stays exact: nothing arrives late twice
        assert totals(process) == expected
    finally:
        process.stop()
