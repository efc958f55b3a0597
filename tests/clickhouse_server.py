"""Runs ``deploy/clickhouse/clickhouse.sh`` (a real ClickHouse server from chdb-core's engine) for tests."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote

from tests.vidpulse_process import free_port

ROOT = Path(__file__).resolve().parent.parent
CLICKHOUSE_SCRIPT = ROOT / "deploy" / "clickhouse" / "clickhouse.sh"


class ClickHouseServer:
    """One server on its own folder, free ports and a fresh password; ``url`` is what VIDPULSE_CLICKHOUSE_URL takes."""

    def __init__(self, folder: Path, user: str = "vidpulse") -> None:
        self.user, self.password = user, secrets.token_urlsafe(16)
        self.http_port, self.tcp_port = free_port(), free_port()
        self.folder = folder
        self.env = {**os.environ, "VIDPULSE_CLICKHOUSE_DATA_DIR": str(folder),
                    "VIDPULSE_CLICKHOUSE_HTTP_PORT": str(self.http_port),
                    "VIDPULSE_CLICKHOUSE_TCP_PORT": str(self.tcp_port),
                    "VIDPULSE_CLICKHOUSE_USER": user, "VIDPULSE_CLICKHOUSE_PASSWORD": self.password}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """``http://user:password@127.0.0.1:port``: this server's user unless told otherwise."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.http_port}"

    def run(self, action: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(CLICKHOUSE_SCRIPT), action], env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)

    def start(self) -> str:
        done = self.run("start")
        if done.returncode != 0:
            raise RuntimeError(f"clickhouse.sh start failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        done = self.run("stop")
        if done.returncode != 0:
            raise RuntimeError(f"clickhouse.sh stop failed:\n{done.stderr[-3000:]}")

    def running(self) -> bool:
        return self.run("status").returncode == 0

    @property
    def pid(self) -> int:
        """The running server's process (clickhouse.sh's pid file), for CPU and memory readings."""
        return int((self.folder / "server.pid").read_text())
