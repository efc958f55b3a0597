"""``vidpulse up`` in its split form: a ClickHouse server, then tracker, worker and API, each its own process.

Why: measured against the one process (bench/README.md, "`vidpulse up`: one process or split"), the
split accepts 1.1-1.55x the requests, writes 1.3-1.7x the events per second and needs less CPU per
request, because each part has an interpreter (and a core) of its own; and ``vidpulse accounts``/``keys``
work while it runs. It costs a few seconds of start-up and about 300 MiB.

The supervisor owns its children: each runs in its own session and dies with the supervisor (a death
signal set before it execs), so even a SIGKILLed supervisor leaves none behind. A child that exits is
started again after a backoff; five exits of one child within a minute stop everything. SIGTERM or
SIGINT stops them in the order that loses nothing: tracker (no new beacons), API, worker (its last
batches and commit), the ClickHouse server last.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from clickhouse_connect.driver.httputil import default_pool_manager

from aggregations.clickhouse import ClickHouseError, connect
from aggregations.schema import migrate
from ingest.settings import Settings
from vidpulse.child import BACKOFF_FIRST_S, Child
from vidpulse.devaccount import provision_dev_account
from vidpulse.localserver import LocalServer, pings

log = logging.getLogger(__name__)
SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)  # the children run this very code, whatever their cwd
READY_TIMEOUT_S = 120  # a cold start of the three (each imports vidpulse) took 4-7 s on a loaded 2-core machine
FAILURES_ALLOWED, FAILURE_WINDOW_S = 5, 60.0
BACKOFF_MAX_S = 30.0
STOP_ORDER = ("tracker", "api", "worker", "clickhouse")


class StartupFailed(Exception):
    """A part did not come up (or came down) before everything was ready: nothing to restart yet."""


class Supervisor:
    """Starts, watches and stops ``up``'s processes; ``run`` returns the exit status."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        folder = settings.chdb_folder
        if folder is None:
            raise StartupFailed("the split form of vidpulse up needs a chdb folder (chdb://<dir>); "
                                "set VIDPULSE_UP_PROCESSES=one for an in-memory engine")
        self.settings, self.bootstrap = settings, bootstrap
        self.server = LocalServer(folder.resolve())
        self.ports = _ports(settings)
        self.children: dict[str, Child] = {}
        self.stop_signal: int | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            began = time.monotonic()
            self._start_clickhouse()
            self._prepare_database()
            if self.stop_signal is None:
                self._start_parts()
            if self.stop_signal is None:
                self._announce(time.monotonic() - began)
            return self._watch()
        except StartupFailed as exc:
            print(f"vidpulse up: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_signal = signum

    def _start_clickhouse(self) -> None:
        argv, env = self.server.launch(self.ports["clickhouse"], self.ports["clickhouse_tcp"])
        base_url = f"http://127.0.0.1:{self.ports['clickhouse']}"
        self._start_ready(Child("clickhouse", argv, env, lambda: pings(base_url)))

    def _prepare_database(self) -> None:
        """The migrations and the development account, once, before any part needs them."""
        url = self._clickhouse_url()
        try:
            migrate(url, self.settings.clickhouse_database)
            if self.settings.dev_account:
                db = connect(url, self.settings.clickhouse_database)
                try:
                    provision_dev_account(db, self.settings.dev_account, self.ports["api"])
                finally:
                    db.close()
        except ClickHouseError as exc:
            raise StartupFailed(f"preparing the database failed: {exc}") from exc
        # clickhouse-connect keeps idle connections in a shared pool; one still open when the server stops made
        # its engine's shutdown wait ~5 s and exit 1 (tried: 0.9 s and exit 0 without it)
        default_pool_manager().clear()

    def _start_parts(self) -> None:
        """Tracker, worker and API at once (each imports vidpulse for seconds), then waits for every /readyz."""
        parts = [self._part(role) for role in ("tracker", "worker", "api")]
        for child in parts:
            self.children[child.name] = child
            child.start()
        for child in parts:
            self._wait_ready(child)

    def _part(self, role: str) -> Child:
        env = {**os.environ, "VIDPULSE_CLICKHOUSE_URL": self._clickhouse_url(), "VIDPULSE_KAFKA_BOOTSTRAP":
               self.bootstrap, "VIDPULSE_HTTP_PORT": str(self.ports[role]),
               "PYTHONPATH": os.pathsep.join(filter(None, (SOURCE_ROOT, os.environ.get("PYTHONPATH"))))}
        ready_url = f"http://{_local(self.settings.http_host)}:{self.ports[role]}/readyz"
        return Child(role, [sys.executable, "-m", "vidpulse.cli", role], env, lambda: _answers_200(ready_url))

    def _clickhouse_url(self) -> str:
        return self.server.url(f"http://127.0.0.1:{self.ports['clickhouse']}")

    def _start_ready(self, child: Child) -> None:
        self.children[child.name] = child
        child.start()
        self._wait_ready(child)

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.stop_signal is None and not child.ready():
            if child.exited() is not None:
                raise StartupFailed(f"{child.name} exited with {child.exited()} while starting; its last lines:\n"
                                    + child.last_lines())
            if time.monotonic() > deadline:
                raise StartupFailed(f"{child.name} not ready after {READY_TIMEOUT_S} s; its last lines:\n"
                                    + child.last_lines())
            time.sleep(0.2)

    def _announce(self, startup_s: float) -> None:
        host = _local(self.settings.http_host)
        lines = [f"API, dashboard, MCP and /docs: http://{host}:{self.ports['api']}/",
                 f"tracker (beacons: POST /v1/track; the SDK: /sdk/vidpulse.js): http://{host}:{self.ports['tracker']}/",
                 f"worker (/metrics, /readyz): http://{host}:{self.ports['worker']}/",
                 f"ClickHouse server: http://127.0.0.1:{self.ports['clickhouse']} (user vidpulse, password in "
                 f"{self.server.state_dir / 'password'}; data in {self.server.engine_dir})",
                 f"Kafka: {self.bootstrap}"]
        print("\n".join(f"vidpulse up: {line}" for line in lines), flush=True)
        print(f"vidpulse up: ready in {startup_s:.1f} s (VIDPULSE_UP_PROCESSES=one runs all in one process)",
              flush=True)

    def _watch(self) -> int:
        """Until a signal: restarts a child that exited; 1 when one keeps failing."""
        while self.stop_signal is None:
            now = time.monotonic()
            for child in self.children.values():
                if child.restart_at is not None and now >= child.restart_at:
                    child.start()
                elif (status := child.exited()) is not None and not self._schedule_restart(child, status, now):
                    return 1
            time.sleep(0.2)
        log.info("signal %s: stopping in order: %s", signal.Signals(self.stop_signal).name, ", ".join(STOP_ORDER))
        return 0

    def _schedule_restart(self, child: Child, status: int, now: float) -> bool:
        """False when the child failed too often to try again (then says why, with its last lines)."""
        child.exits.append(now)
        while child.exits and child.exits[0] < now - FAILURE_WINDOW_S:
            child.exits.popleft()
        if len(child.exits) >= FAILURES_ALLOWED:
            print(f"vidpulse up: {child.name} exited {len(child.exits)} times within {FAILURE_WINDOW_S:.0f} s (last "
                  f"status {status}): stopping everything. Its last lines:\n" + child.last_lines(),
                  file=sys.stderr, flush=True)
            return False
        if now - child.started_at > FAILURE_WINDOW_S:
            child.backoff_s = BACKOFF_FIRST_S  # it had run well: a fresh failure, not a loop
        child.restart_at = now + child.backoff_s
        log.warning("%s exited with %s: restarting in %.0f s", child.name, status, child.backoff_s,
                    extra={"part": child.name})
        child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
        return True

    def _stop_all(self) -> None:
        for name in STOP_ORDER:
            if name in self.children:
                self.children[name].stop()
        self._forget_address()

    def _forget_address(self) -> None:
        """Once our server is down, the CLI must not look for it: but a server that another ``up`` runs on this
        folder (ours then refused to start) stays findable."""
        ours = self.children.get("clickhouse")
        try:
            pid = int((self.server.state_dir / "server.pid").read_text())
        except (OSError, ValueError):
            return
        if ours is not None and ours.proc is not None and pid == ours.proc.pid:
            self.server.address_file.unlink(missing_ok=True)


def run(settings: Settings, bootstrap: str) -> int:
    """``vidpulse up`` in the split form; the exit status (0 after SIGTERM/SIGINT)."""
    try:
        supervisor = Supervisor(settings, bootstrap)
    except StartupFailed as exc:
        print(f"vidpulse up: {exc}", file=sys.stderr, flush=True)
        return 2
    return supervisor.run()


def _ports(settings: Settings) -> dict[str, int]:
    """The API keeps ``up``'s port (its pages, MCP and the public keys' origins stay); the tracker and the
    worker take the next two unless told; the ClickHouse server takes free ones unless told."""
    free = _free_ports(3)
    api = settings.http_port or free[0]
    return {"api": api, "tracker": settings.up_tracker_port or api + 1, "worker": settings.up_worker_port or api + 2,
            "clickhouse": settings.up_clickhouse_http_port or free[1],
            "clickhouse_tcp": settings.up_clickhouse_tcp_port or free[2]}


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: each probe stays bound until all are chosen."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _local(host: str) -> str:
    """Where this machine reaches a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False
