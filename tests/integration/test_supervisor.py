"""``vidpulse up`` in its default split form: a ClickHouse server, tracker, worker and API under one supervisor.

One supervisor is shared by the first tests, in order (start and count, the CLI meanwhile, a worker killed
and restarted, then the ordered shutdown); a second one is SIGKILLed to show it leaves no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.integration.beacons import envelope, eventually, post
from tests.vidpulse_process import VidpulseProcess, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
ACCOUNT = "1234"  # the development account the supervisor makes on an empty database
M = 60_000


class SplitUp(VidpulseProcess):
    """``vidpulse up`` with VIDPULSE_UP_PROCESSES=split on free ports; ``url`` is the API's."""

    def __init__(self, bootstrap: str, workdir: Path, run_id: str) -> None:
        self.tracker_port, self.worker_port = free_port(), free_port()
        # commits every 30 s: a killed worker's successor replays batches already written
        super().__init__(bootstrap, workdir, run_id, accounts=(), up_processes="split",
                         up_tracker_port=str(self.tracker_port), up_worker_port=str(self.worker_port),
                         commit_interval_s="30", flush_interval_s="0.5", consumer_session_timeout_s="6")
        self.tracker_url = f"http://127.0.0.1:{self.tracker_port}"

    def start(self, timeout_s: float = 120) -> SplitUp:
        """Until the supervisor says every part is ready; reads the development account's secret key."""
        super().start(timeout_s)
        deadline = time.monotonic() + timeout_s
        while "vidpulse up: ready in" not in self.log_tail(100_000):
            assert time.monotonic() < deadline, f"vidpulse up never said it was ready:\n{self.log_tail()}"
            assert self.proc is not None and self.proc.poll() is None, f"vidpulse up exited:\n{self.log_tail()}"
            time.sleep(0.2)
        found = re.search(r"secret key \(reads everything of 1234; for backends\): (\S+)", self.log_tail(100_000))
        assert found, f"vidpulse up printed no development key:\n{self.log_tail()}"
        self.auth.keys[ACCOUNT] = found.group(1)
        return self

    def children(self) -> dict[str, psutil.Process]:
        """The supervised processes by part: clickhouse, tracker, worker, api."""
        assert self.proc is not None
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            command = " ".join(child.cmdline())
            part = "clickhouse" if "serve.py" in command else command.rsplit(" ", 1)[-1]
            found[part] = child
        return found

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vidpulse.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=60)


@pytest.fixture(scope="module")
def up(_kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SplitUp]:
    process = SplitUp(_kafka_bootstrap, tmp_path_factory.mktemp("split"), f"sup{time.time_ns() % 10**12}")
    process.start()
    yield process
    process.kill()


def totals(up: SplitUp) -> dict:
    since = str(int(time.time() * 1000) - 3600_000)
    response = httpx.get(f"{up.url}/v1/events/accounts/{ACCOUNT}", timeout=30, auth=up.auth, params={
        "dimensions": "account", "metrics": "video_view,video_seconds_viewed,ccu", "from": since})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data[0]["totals"] if data else {}


def send_wave(up: SplitUp, wave: int, sessions: int = 40) -> tuple[int, int]:
    """``sessions`` views with a heartbeat each, to the tracker's port; returns (views, watched ms)."""
    now, watched = int(time.time() * 1000), 0
    with httpx.Client(base_url=up.tracker_url, timeout=30) as client:
        for n in range(sessions):
            ts = now - 10 * M + n * 1000
            post(client, envelope(f"sup{wave:02d}{n:04d}", f"v{n % 3}", [
                {"id": "1", "type": "view", "ts": ts},
                {"id": "2", "type": "heartbeat", "ts": ts + 5000, "watched_ms": 1000 + n}]))
            watched += 1000 + n
    return sessions, watched


def expected(views: int, watched_ms: int) -> dict:
    return {"video_view": views, "video_seconds_viewed": round(watched_ms / 1000, 3), "ccu": views}


SENT = {"views": 0, "watched_ms": 0}


def test_starts_prints_its_urls_and_counts_beacons_sent_to_the_tracker(up):
    log = up.log_tail(100_000)
    assert f"API, dashboard, MCP and /docs: http://127.0.0.1:{up.port}/" in log
    assert f"http://127.0.0.1:{up.tracker_port}/" in log and f"http://127.0.0.1:{up.worker_port}/" in log
    assert set(up.children()) == {"clickhouse", "tracker", "worker", "api"}
    assert all(os.getpgid(child.pid) == child.pid for child in up.children().values()), "children share the supervisor's group"
    views, watched = send_wave(up, 0)
    SENT.update(views=views, watched_ms=watched)
    want = expected(views, watched)
    assert eventually(lambda: totals(up), want) == want
    # the API's port serves queries only: beacons go to the tracker's
    assert httpx.post(f"{up.url}/v1/track", json={}, timeout=10).status_code in (404, 405)


def test_accounts_and_keys_work_while_it_runs(up):
    created = up.cli("accounts", "create", "sup-cli")
    assert created.returncode == 0, created.stderr
    listed = up.cli("accounts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {ACCOUNT, "sup-cli"} <= {row["account"] for row in orjson.loads(listed.stdout)}
    keys = up.cli("keys", "list", ACCOUNT)
    assert keys.returncode == 0 and "development" in keys.stdout, keys.stderr


def test_a_killed_worker_is_restarted_and_the_counts_stay_exact(up):
    assert SENT["views"], "runs after the first test"
    worker = up.children()["worker"]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    deadline = time.monotonic() + 60
    while "worker" not in up.children() or up.children()["worker"].pid == worker.pid:
        assert time.monotonic() < deadline, f"no new worker:\n{up.log_tail()}"
        time.sleep(0.2)
    assert "worker exited with -9: restarting in 1 s" in up.log_tail(100_000)
    views, watched = send_wave(up, 1)
    want = expected(SENT["views"] + views, SENT["watched_ms"] + watched)
    assert eventually(lambda: totals(up), want) == want
    time.sleep(3)  # and it stays exact: nothing replayed arrives twice
    assert totals(up) == want


def test_a_second_up_on_the_same_folder_refuses_and_leaves_the_first_alone(up):
    second = {**up.env, "VIDPULSE_HTTP_PORT": str(free_port()), "VIDPULSE_UP_TRACKER_PORT": str(free_port()),
              "VIDPULSE_UP_WORKER_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "vidpulse.cli", "up"], env=second, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "clickhouse exited with 1 while starting" in done.stderr and "a server already runs" in done.stderr
    listed = up.cli("accounts", "list")  # the first one's server is still found
    assert listed.returncode == 0 and ACCOUNT in listed.stdout, listed.stderr


def test_sigterm_stops_every_part_in_order_and_exits_0(up):
    assert up.proc is not None
    children = list(up.children().values())
    assert len(children) == 4
    began = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(4 * 45) == 0, up.log_tail()
    print(f"[supervisor] SIGTERM to exit: {time.monotonic() - began:.1f} s")
    stopped = [found.groups() for found in re.finditer(r'"stopped (\w+) \(exit (-?\d+)\)', up.log_tail(100_000))]
    assert stopped == [("tracker", "0"), ("api", "0"), ("worker", "0"), ("clickhouse", "0")], up.log_tail()
    assert not [child.pid for child in children if _alive(child)]


def test_a_sigkilled_supervisor_leaves_no_process(_kafka_bootstrap, tmp_path):
    process = SplitUp(_kafka_bootstrap, tmp_path, f"supk{time.time_ns() % 10**12}").start()
    children = list(process.children().values())
    assert len(children) == 4
    process.kill()
    deadline = time.monotonic() + 10
    while [child for child in children if _alive(child)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [child.cmdline() for child in children if _alive(child)]


def test_an_unknown_form_is_refused_with_the_variable_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vidpulse.cli", "up"], capture_output=True, text=True, timeout=60,
                          env={**VidpulseProcess("unused:9092", tmp_path, "x").env, "VIDPULSE_UP_PROCESSES": "bogus"})
    assert done.returncode == 2
    assert "VIDPULSE_UP_PROCESSES must be split" in done.stderr and "'bogus'" in done.stderr


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
