from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

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
        views = process.truth["totals"]["account"]["video_view"]

        def counted() -> int:
            rows = get(process, "events", SIMULATED, dimensions="account", metrics="video_view")["data"]
            return rows[0]["totals"]["video_view"] if rows else 0
        assert eventually(counted, views, timeout_s=60) == views
        yield process
    finally:
        process.stop()
