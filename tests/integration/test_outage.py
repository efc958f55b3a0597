"""The broker goes down: beacons still get 202 (spooled to disk), the tracker is SIGKILLed and
restarted, the broker comes back, and every accepted event is counted exactly once — none that
got a 503."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import KAFKA_SCRIPT
from tests.integration.beacons import DESKTOP, envelope, eventually, get
from tests.vidpulse_process import VidpulseProcess, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
M = 60_000


class OwnBroker:
    """A second local broker this test may stop and start without disturbing the shared one."""

    def __init__(self, folder: Path) -> None:
        self.env = {**os.environ, "VIDPULSE_KAFKA_PORT": str(free_port()),
                    "VIDPULSE_KAFKA_CONTROLLER_PORT": str(free_port()), "VIDPULSE_KAFKA_DATA_DIR": str(folder)}

    def run(self, action: str) -> str:
        done = subprocess.run(["bash", str(KAFKA_SCRIPT), action], env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@pytest.fixture
def broker(kafka: str, tmp_path: Path) -> Iterator[OwnBroker]:  # noqa: ARG001 - kafka: the jars are fetched
    own = OwnBroker(tmp_path / "broker")
    yield own
    own.run("stop")


def send(url: str, session: str, ts: int) -> int:
    body = envelope(session, "outage-video", account="outage", events=[
        {"id": "1", "type": "view", "ts": ts}, {"id": "2", "type": "heartbeat", "ts": ts + 1000, "watched_ms": 1000}])
    response = httpx.post(f"{url}/v1/track", json=body, timeout=30, headers={"User-Agent": DESKTOP})
    assert response.status_code in (202, 503), response.text
    if response.status_code == 503:
        assert response.headers["Retry-After"]
    return response.status_code


def test_nothing_accepted_is_lost_through_a_broker_outage_and_a_tracker_kill(broker, tmp_path, run_id):
    bootstrap = broker.run("start")
    tracker = VidpulseProcess(bootstrap, tmp_path / "tracker", run_id, command="tracker", ready_path="/healthz",
                              spool_after_s="1", spool_max_bytes="6000", spool_dir=str(tmp_path / "spool"))
    (tmp_path / "tracker").mkdir()
    tracker.start()
    ts = int(time.time() * 1000) - 5 * M
    accepted, refused = [], []
    try:
        for n in range(5):  # broker up: to Kafka (or briefly spooled while a new topic elects its leaders)
            assert send(tracker.url, f"before{n:04d}", ts + n) == 202
            accepted.append(n)
        spool_depth = lambda: httpx.get(f"{tracker.url}/readyz").json()["spool"]["depth"]  # noqa: E731
        assert eventually(spool_depth, 0, timeout_s=60) == 0
        broker.run("stop")
        for n in range(5, 40):  # broker down: to the spool until it is full, then 503
            (accepted if send(tracker.url, f"during{n:04d}", ts + n) == 202 else refused).append(n)
        assert len(accepted) > 6 and refused, (accepted, refused)
        assert httpx.get(f"{tracker.url}/readyz").json()["spool"]["depth"] == len(accepted) - 5
        tracker.kill()
        tracker.start()  # with the broker still down
        assert httpx.get(f"{tracker.url}/readyz").json()["spool"]["depth"] == len(accepted) - 5
        broker.run("start")
        assert eventually(spool_depth, 0, timeout_s=60) == 0
        counting = VidpulseProcess(bootstrap, tmp_path, run_id, session_close_grace_s="1").start()
        try:
            fetch = lambda: get(counting, "events", "outage", dimensions="video",  # noqa: E731
                                metrics="video_view,video_seconds_viewed,ccu")["data"]
            expected = [{"dimensions": {"account": "outage", "video": "outage-video"},
                         "totals": {"video_view": len(accepted), "video_seconds_viewed": float(len(accepted)),
                                    "ccu": len(accepted)}}]
            assert eventually(fetch, expected, timeout_s=120) == expected
        finally:
            counting.stop()
    finally:
        tracker.stop()
