"""The split topology as an operator runs it: trackers, workers and APIs as separate processes, on a ClickHouse
server and a Kafka broker or cluster, each started with the command and the environment variables that
docker-compose.yml gives it (``vidpulse migrate`` once, then ``tracker``, ``worker``, ``api``).

Keep this in step with docker-compose.yml: the same commands, the same VIDPULSE_* variables (the topic
partitions and replicas, the ClickHouse URL with its user and password, the trusted proxy).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.vidpulse_process import VidpulseProcess, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
CLICKHOUSE_SCRIPT = Path(os.environ.get("VIDPULSE_TEST_CLICKHOUSE_SCRIPT", ROOT / "deploy" / "clickhouse" / "clickhouse.sh"))
PARTITIONS = 6


class ClickHouseServer:
    """A real ClickHouse server from deploy/clickhouse/clickhouse.sh, in its own folder and on free ports."""

    def __init__(self, folder: Path) -> None:
        self.user, self.password = "vidpulse", secrets.token_hex(8)
        self.env = {**os.environ, "VIDPULSE_CLICKHOUSE_DATA_DIR": str(folder),
                    "VIDPULSE_CLICKHOUSE_HTTP_PORT": str(free_port()), "VIDPULSE_CLICKHOUSE_TCP_PORT": str(free_port()),
                    "VIDPULSE_CLICKHOUSE_USER": self.user, "VIDPULSE_CLICKHOUSE_PASSWORD": self.password,
                    "VIDPULSE_PYTHON": sys.executable}
        self.address = ""

    @property
    def url(self) -> str:
        """What VIDPULSE_CLICKHOUSE_URL holds in docker-compose.yml: the user and password in the URL."""
        return self.address.replace("http://", f"http://{self.user}:{self.password}@", 1)

    def start(self) -> ClickHouseServer:
        done = self._run("start")
        self.address = done.stdout.strip().splitlines()[-1]
        return self

    def stop(self) -> None:
        self._run("stop")

    def _run(self, action: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", str(CLICKHOUSE_SCRIPT), action], env=self.env, capture_output=True, text=True,
                              timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"clickhouse.sh {action} failed:\n{done.stderr[-3000:]}")
        return done


@dataclass
class Topology:
    """N trackers, N workers over PARTITIONS partitions and N APIs sharing one topic prefix and consumer group."""

    bootstrap: str
    replication: int
    clickhouse: ClickHouseServer
    folder: Path
    run_id: str
    accounts: tuple[str, ...]
    trackers: list[VidpulseProcess] = field(default_factory=list)
    workers: list[VidpulseProcess] = field(default_factory=list)
    apis: list[VidpulseProcess] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, str]:
        """The compose file's x-vidpulse-env, plus the tests' shorter waits (session close, flush, rebalance)."""
        return {"clickhouse_url": self.clickhouse.url, "topic_partitions": str(PARTITIONS),
                "topic_replication": str(self.replication), "session_close_grace_s": "5", "flush_interval_s": "0.5",
                "consumer_session_timeout_s": "6", "accounts_refresh_s": "1",
                # offsets committed rarely: a killed worker's partitions replay from well before its last write
                "commit_interval_s": "10"}

    def process(self, command: str) -> VidpulseProcess:
        """One more process of a role; its own folder holds its log, spool and Faust data."""
        existing = {"tracker": self.trackers, "worker": self.workers, "api": self.apis}[command]
        folder = self.folder / f"{command}-{len(existing) + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        process = VidpulseProcess(self.bootstrap, folder, self.run_id, command=command, accounts=(), **self.settings())
        process.auth.keys.update(self.keys)
        existing.append(process)
        return process

    def start(self, trackers: int, workers: int, apis: int) -> Topology:
        migrate = subprocess.run([sys.executable, "-m", "vidpulse.cli", "migrate"], capture_output=True, text=True,
                                 timeout=180, env=self._env())
        if migrate.returncode != 0:
            raise RuntimeError(f"vidpulse migrate failed:\n{migrate.stderr[-3000:]}")
        provision = VidpulseProcess(self.bootstrap, self.folder, self.run_id, accounts=(), **self.settings())
        self.keys = provision.provision(self.accounts)
        for command, count in (("worker", workers), ("tracker", trackers), ("api", apis)):
            for _ in range(count):
                self.process(command).start()
        return self

    def stop(self) -> None:
        for process in (*self.trackers, *self.workers, *self.apis):
            process.stop()

    @property
    def tracker_urls(self) -> str:
        return ",".join(process.url for process in self.trackers)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "VIDPULSE_KAFKA_BOOTSTRAP": self.bootstrap,
                **{f"VIDPULSE_{name.upper()}": value for name, value in self.settings().items()}}

    def metric(self, process: VidpulseProcess, name: str) -> float:
        """A process's own Prometheus figure (summed over its label sets); 0 when it does not expose it."""
        text = httpx.get(f"{process.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))
