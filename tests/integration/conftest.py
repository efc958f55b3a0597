from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.beacons import eventually, get
from tests.vidpulse_process import VidpulseProcess


@pytest.fixture(scope="module")
def pipeline(_kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VidpulseProcess]:
    """One ``vidpulse up`` per test module (start-up takes seconds); tests keep apart by account."""
    process = VidpulseProcess(_kafka_bootstrap, tmp_path_factory.mktemp("up"), f"m{time.time_ns() % 10**12}",
                              session_close_grace_s="5", flush_interval_s="0.5")
    process.start()
    yield process
    process.stop()


SIMULATED = "sim"
PAGE = "https://page.example"


class Simulated(VidpulseProcess):
    """A ``vidpulse up`` holding what ``vidpulse simulate`` sent for account ``sim``; ``public_key`` reads only
    the views of ``video-1`` from ``PAGE``."""

    public_key: str
    truth: dict


@pytest.fixture(scope="session")
def simulated(_kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulated]:
    """One simulated account for the faces over the query layer (Livepeer, MCP): made once, read by many."""
    folder = tmp_path_factory.mktemp("simulated")
    process = Simulated(_kafka_bootstrap, folder, f"s{time.time_ns() % 10**12}", accounts=(SIMULATED,),
                        flush_interval_s="0.5", session_close_grace_s="5", rate_limit_key="100000/second")
    process.provision((SIMULATED,))
    made = subprocess.run([sys.executable, "-c", (
        "import sys; from aggregations.accounts import create_key; from aggregations.clickhouse import connect; "
        "db = connect(sys.argv[1], 'vidpulse'); "
        "print(create_key(db, 'sim', 'public', videos=('video-1',), metrics=('video_view',), origins=(sys.argv[2],))[1])"),
        process.env["VIDPULSE_CLICKHOUSE_URL"], PAGE], capture_output=True, text=True, timeout=120, env=process.env)
    assert made.returncode == 0, made.stderr[-2000:]
    process.public_key = made.stdout.strip().splitlines()[-1]
    process.start()
    try:
        done = subprocess.run([sys.executable, "-m", "vidpulse.cli", "simulate", "--url", process.url, "--account",
                               SIMULATED, "--sessions", "40", "--truth", str(folder / "truth.json")],
                              capture_output=True, text=True, timeout=300, env=process.env)
        assert done.returncode == 0, done.stderr[-2000:]
        process.truth = json.loads((folder / "truth.json").read_text())
        _settle(process, process.truth["totals"]["account"]["video_view"])
        yield process
    finally:
        process.stop()


def _settle(process: VidpulseProcess, views: int, timeout_s: float = 180) -> None:
    """Until every view is counted and the worker holds no open session. The simulated sessions are historic:
    their last events and their last stretch of per-minute ccu are written when they close (timeout + grace
    after their last batch), so only then do the totals the tests compare (watch time too) stop moving."""
    def state() -> tuple[int, float]:
        rows = get(process, "events", SIMULATED, dimensions="account", metrics="video_view")["data"]
        metrics = httpx.get(f"{process.url}/metrics", timeout=30).text
        open_sessions = re.search(r"^vidpulse_worker_open_sessions (\S+)$", metrics, re.M)
        assert open_sessions, "vidpulse up exposes no vidpulse_worker_open_sessions"
        return rows[0]["totals"]["video_view"] if rows else 0, float(open_sessions.group(1))

    settled = (views, 0.0)
    assert eventually(state, settled, timeout_s=timeout_s) == settled, "the simulated day did not settle"
