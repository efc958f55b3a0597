"""Runs ``deploy/kafka/kafka.sh --cluster`` (three KRaft nodes, replication factor 3) for tests, on free ports."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"
NODES = (1, 2, 3)


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive free ports (the script numbers a cluster's ports from a base), below
    Linux's ephemeral range (32768 up): there, an outgoing connection (the first nodes' own, to the controllers)
    may take a port between this check and the last node's bind."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        if all(_free(base + n) for n in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class KafkaCluster:
    """Three brokers on their own folder; ``bootstrap`` is what VIDPULSE_KAFKA_BOOTSTRAP takes."""

    def __init__(self, folder: Path) -> None:
        base = _free_run(6)
        self.folder = folder
        self.ports = tuple(base + n - 1 for n in NODES)
        self.env = {**os.environ, "VIDPULSE_KAFKA_DATA_DIR": str(folder), "VIDPULSE_KAFKA_PORT": str(base),
                    "VIDPULSE_KAFKA_CONTROLLER_PORT": str(base + 3)}
        self.bootstrap = ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def run(self, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(KAFKA_SCRIPT), *args, "--cluster"], env=self.env, capture_output=True,
                              text=True, timeout=timeout_s)

    def start(self) -> str:
        done = self.run("start")
        if done.returncode != 0:
            said = [line for line in done.stderr.splitlines() if line.startswith("kafka.sh:")]  # the reason
            raise RuntimeError("kafka.sh start --cluster failed:\n" + "\n".join(said[-5:]) +
                               f"\n...\n{done.stderr[-3000:]}")
        return done.stdout.strip().splitlines()[-1]

    def start_node(self, node: int) -> None:
        done = self.run("start-node", str(node))
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh start-node {node} --cluster failed:\n{done.stderr[-3000:]}")

    def kill_node(self, node: int) -> None:
        """SIGKILL: no controlled shutdown, no leadership handed over."""
        pid = int((self.folder / f"node-{node}" / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            time.sleep(0.1)

    def node_of_port(self, port: int) -> int:
        return self.ports.index(port) + 1

    def stop(self) -> None:
        self.run("stop")

    def running(self) -> bool:
        return self.run("status").returncode == 0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
