"""The split topology of docker-compose.yml, as local processes: trackers, workers and APIs on a ClickHouse server
(deploy/clickhouse/clickhouse.sh) and a Kafka cluster (deploy/kafka/kafka.sh --cluster).

The commands and the environment come from docker-compose.yml itself: each variable of its ``x-vidpulse-env``
is mapped here to its local value (hosts and ports), and a variable this module does not know fails the
fixture, so the compose file and the tests stay in step.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.clickhouse_server import ClickHouseServer
from tests.keys import AccountKeys
from tests.vidpulse_process import VidpulseProcess

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
_DEFAULT = re.compile(r"^\$\{[A-Z_]+:-(.*)\}$")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_default(value: str) -> str:
    """``${NAME:-default}`` -> ``default``: what compose runs with when NAME is not set."""
    found = _DEFAULT.match(str(value))
    return found.group(1) if found else str(value)


def local_environment(spec: dict[str, Any], kafka_bootstrap: str, clickhouse: ClickHouseServer,
                      replication: int = 3) -> dict[str, str]:
    """compose's vidpulse environment with its hosts replaced by the local servers (settings names, lower case).
    The HTTP port is each process's own (VidpulseProcess picks a free one)."""
    local = {
        "VIDPULSE_KAFKA_BOOTSTRAP": None,  # VidpulseProcess's first argument
        "VIDPULSE_CLICKHOUSE_URL": clickhouse.url(),
        "VIDPULSE_CLICKHOUSE_DATABASE": None,
        "VIDPULSE_TOPIC_PARTITIONS": None,
        "VIDPULSE_TOPIC_REPLICATION": str(replication),  # 3 on the three-broker cluster (compose runs one: 1)
        "VIDPULSE_FINGERPRINT_SALT": "vidpulse-topology-test-salt",
        # the scripted viewers' addresses come in X-Forwarded-For, from this machine
        "VIDPULSE_TRUSTED_PROXIES": "127.0.0.1",
        "VIDPULSE_HTTP_HOST": "127.0.0.1",
        "VIDPULSE_HTTP_PORT": None,
    }
    env = spec["x-vidpulse-env"]
    unknown = set(env) - set(local)
    if unknown:
        raise AssertionError(f"docker-compose.yml sets {sorted(unknown)} for vidpulse: map them in tests/topology.py")
    settings: dict[str, str] = {}
    for name, value in env.items():
        if name in ("VIDPULSE_KAFKA_BOOTSTRAP", "VIDPULSE_HTTP_PORT"):
            continue
        chosen = local[name] if local[name] is not None else _compose_default(value)
        settings[name.removeprefix("VIDPULSE_").lower()] = chosen
    return settings


class Topology:
    """``trackers`` trackers, ``workers`` workers and ``apis`` APIs in one consumer group and one database."""

    def __init__(self, folder: Path, kafka_bootstrap: str, clickhouse: ClickHouseServer, run_id: str,
                 trackers: int = 2, workers: int = 3, apis: int = 2, replication: int = 3, **settings: str) -> None:
        spec = compose()
        self.commands = {name: spec["services"][name]["command"] for name in ("migrate", "tracker", "worker", "api")}
        self.settings = {**local_environment(spec, kafka_bootstrap, clickhouse, replication), **settings}
        self.clickhouse = clickhouse
        self.cluster: Any = None  # the KafkaCluster the fault suite kills nodes of, when it runs on one
        self.folder, self.bootstrap, self.run_id = folder, kafka_bootstrap, run_id
        self.auth = AccountKeys({})
        self.trackers = [self._process("tracker", n) for n in range(trackers)]
        self.workers = [self._process("worker", n) for n in range(workers)]
        self.apis = [self._process("api", n) for n in range(apis)]

    def _process(self, role: str, index: int) -> VidpulseProcess:
        command = self.commands[role]
        assert len(command) == 1, f"compose runs `vidpulse {' '.join(command)}`: teach tests/topology.py its arguments"
        workdir = self.folder / f"{role}-{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        process = VidpulseProcess(self.bootstrap, workdir, self.run_id, command=command[0], accounts=(), **self.settings)
        process.auth = self.auth
        return process

    @property
    def env(self) -> dict[str, str]:
        return (*self.trackers, *self.workers, *self.apis)[0].env

    def start(self, accounts: tuple[str, ...]) -> Topology:
        """In compose's order: migrate once, then the workers and APIs (which need it) and the trackers."""
        self.migrate()
        self.provision(accounts)
        for process in (*self.workers, *self.trackers, *self.apis):
            process.start()
        return self

    def migrate(self) -> None:
        """compose's migrate service: once, before any worker or API."""
        done = subprocess.run([sys.executable, "-m", "vidpulse.cli", *self.commands["migrate"]], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"vidpulse migrate failed:\n{done.stderr[-3000:]}")

    def provision(self, accounts: tuple[str, ...]) -> None:
        done = subprocess.run([sys.executable, "-m", "tests.provision", self.env["VIDPULSE_CLICKHOUSE_URL"], *accounts],
                              env=self.env, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"provisioning failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
        self.auth.keys.update(orjson.loads(done.stdout.splitlines()[-1]))

    def stop(self) -> None:
        for process in (*self.trackers, *self.apis, *self.workers):
            process.stop()

    def add_worker(self) -> VidpulseProcess:
        """One more worker in the group (started by the caller): a worker joining mid-stream."""
        worker = self._process("worker", len(self.workers))
        self.workers.append(worker)
        return worker

    @property
    def tracker_urls(self) -> str:
        """What ``vidpulse simulate --url`` takes: every tracker, a batch to each in turn."""
        return ",".join(tracker.url for tracker in self.trackers)

    @staticmethod
    def metric(process: VidpulseProcess, name: str) -> float:
        """A process's own Prometheus figure, summed over its label sets; 0 when it does not expose it."""
        text = httpx.get(f"{process.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))
