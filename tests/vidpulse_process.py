"""Runs ``vidpulse up`` as a real child process for end-to-end tests, and can SIGKILL it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.keys import AccountKeys

# Every account the end-to-end tests post beacons for: chdb allows one process per folder, so they are
# made before the process starts. Tests that need an account of their own draw one with pool_account().
POOL = tuple(f"pool-{n:02d}" for n in range(40))
TEST_ACCOUNTS = ("1234", "qoe", "tracker", "outage", "scripted", "shutdown", "bench", *POOL)
_drawn = iter(POOL)


def pool_account() -> str:
    """An account no other test of this pytest run posts to."""
    return next(_drawn)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VidpulseProcess:
    """One vidpulse process (default: ``up``, all parts) on its own chdb folder, topics and port."""

    def __init__(self, bootstrap: str, workdir: Path, run_id: str, command: str = "up", ready_path: str = "/readyz",
                 accounts: tuple[str, ...] = TEST_ACCOUNTS, **settings: str) -> None:
        """``accounts`` are provisioned before the first start (none: the process starts on what is there)."""
        self.command, self.ready_path, self.accounts = command, ready_path, accounts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"vidpulse-{command}.log"
        self.env = {**os.environ, "VIDPULSE_KAFKA_BOOTSTRAP": bootstrap,
                    "VIDPULSE_CLICKHOUSE_URL": f"chdb://{workdir / 'clickhouse'}",
                    "VIDPULSE_DATA_DIR": str(workdir), "VIDPULSE_HTTP_PORT": str(self.port),
                    "VIDPULSE_TOPIC_PREFIX": f"test-{run_id}.", "VIDPULSE_TRUSTED_PROXIES": "127.0.0.1",
                    "VIDPULSE_RATE_LIMIT_IP": "100000/second",
                    # `up` as one process, not its default split form (tests/integration/test_supervisor.py tests
                    # that): it starts in half the time, and the tests provision their accounts into the chdb
                    # folder before it starts, which the one process then opens as it is
                    "VIDPULSE_UP_PROCESSES": "one",
                    **{f"VIDPULSE_{name.upper()}": value for name, value in settings.items()}}
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth = AccountKeys({})

    def provision(self, accounts: tuple[str, ...] = TEST_ACCOUNTS) -> dict[str, str]:
        """Creates the accounts (if missing) with a fresh secret key each, in this process's database."""
        done = subprocess.run([sys.executable, "-m", "tests.provision", self.env["VIDPULSE_CLICKHOUSE_URL"], *accounts],
                              env=self.env, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"provisioning accounts failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
        keys = orjson.loads(done.stdout.splitlines()[-1])
        self.auth.keys.update(keys)
        return keys

    def start(self, timeout_s: float = 120) -> VidpulseProcess:
        """Starts the process; the first start provisions the test accounts."""
        if self.accounts and not self.auth.keys:
            self.provision(self.accounts)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "vidpulse.cli", self.command], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vidpulse {self.command} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.3)
        raise RuntimeError(f"vidpulse {self.command} not ready after {timeout_s} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""
