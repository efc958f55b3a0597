"""The ClickHouse server that ``vidpulse up`` runs on its chdb folder, and how other commands find it.

In its split form ``up`` serves the very folder ``chdb://`` names (``./data/clickhouse`` by default)
through ``deploy/clickhouse/clickhouse.sh run``, so the data is the same whichever form runs (never
both at once: the engine locks the folder). The server's own files sit beside that folder, in
``<folder>-server/``: the launcher's config, ``server.pid`` and ``server.address`` (its URL, no
password), and ``password``, made once (mode 0600). While a server answers there, ``vidpulse
accounts``/``keys``/``migrate`` talk to it instead of opening the folder with chdb, which it holds.
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

LAUNCHER = Path(__file__).resolve().parent.parent / "deploy" / "clickhouse" / "clickhouse.sh"
USER = "vidpulse"


@dataclass(frozen=True)
class LocalServer:
    """The server state of one chdb folder."""

    engine_dir: Path

    @property
    def state_dir(self) -> Path:
        return self.engine_dir.with_name(self.engine_dir.name + "-server")

    @property
    def address_file(self) -> Path:
        return self.state_dir / "server.address"

    def password(self) -> str:
        """The server user's password: made on first use into a 0600 file, the same on every start after."""
        path = self.state_dir / "password"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)
            return path.read_text().strip()
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(24))
        return path.read_text().strip()

    def launch(self, http_port: int, tcp_port: int) -> tuple[list[str], dict[str, str]]:
        """The command and environment that make the caller's child the server (``clickhouse.sh run``)."""
        env = {**os.environ, "VIDPULSE_CLICKHOUSE_DATA_DIR": str(self.state_dir),
               "VIDPULSE_CLICKHOUSE_ENGINE_DIR": str(self.engine_dir), "VIDPULSE_CLICKHOUSE_USER": USER,
               "VIDPULSE_CLICKHOUSE_PASSWORD": self.password(), "VIDPULSE_CLICKHOUSE_HTTP_PORT": str(http_port),
               "VIDPULSE_CLICKHOUSE_TCP_PORT": str(tcp_port), "VIDPULSE_PYTHON": sys.executable}
        return ["bash", str(LAUNCHER), "run"], env

    def url(self, base_url: str) -> str:
        """What VIDPULSE_CLICKHOUSE_URL takes: ``base_url`` with the user and password in it."""
        host = base_url.removeprefix("http://")
        return f"http://{USER}:{quote(self.password(), safe='')}@{host}"

    def running_url(self) -> str | None:
        """The URL (password included) of the server ``up`` runs here, if its address answers /ping."""
        try:
            base_url = self.address_file.read_text().strip()
        except OSError:
            return None
        if not (self.state_dir / "password").exists() or not pings(base_url):
            return None
        return self.url(base_url)


def pings(base_url: str, timeout_s: float = 2) -> bool:
    """True when a ClickHouse server answers ``/ping`` at ``base_url``."""
    try:
        with urllib.request.urlopen(f"{base_url}/ping", timeout=timeout_s) as response:
            return response.read().strip() == b"Ok."
    except (OSError, urllib.error.URLError):
        return False


def server_url_for(clickhouse_url: str, chdb_folder: Path | None) -> str:
    """``clickhouse_url``, or the running ``up`` server's URL when that serves its chdb folder now."""
    if chdb_folder is None:
        return clickhouse_url
    return LocalServer(chdb_folder.resolve()).running_url() or clickhouse_url
