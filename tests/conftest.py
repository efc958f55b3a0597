"""Shared fixtures. A test that needs a service asks for its fixture and carries its marker:
``kafka`` for the real broker, ``clickhouse`` for the real ClickHouse engine (chdb in-process,
or a vidpulse process that runs it). A fixture refuses a test that lacks the marker, so the
suite's split into unit and integration tests stays honest."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregations.clickhouse import ClickHouse, connect
from aggregations.schema import migrate

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


def require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses the real {marker} but is not marked @pytest.mark.{marker}")


@pytest.fixture(scope="session")
def _kafka_bootstrap() -> Iterator[str]:
    """The configured broker; else, with VIDPULSE_TEST_DOCKER=1, a testcontainers Kafka (needs a Docker
    engine: none runs on our CI machines, so that path is untested there); else the local KRaft broker
    (stopped again if this run started it)."""
    configured = os.environ.get("VIDPULSE_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if os.environ.get("VIDPULSE_TEST_DOCKER") == "1":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    already_running = subprocess.run(["bash", str(KAFKA_SCRIPT), "status"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"the local Kafka broker did not start:\n{started.stderr[-3000:]}")
    yield started.stdout.strip().splitlines()[-1]
    if not already_running:
        subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], capture_output=True)


@pytest.fixture
def kafka(request: pytest.FixtureRequest, _kafka_bootstrap: str) -> str:
    require_marker(request, "kafka")
    return _kafka_bootstrap


@pytest.fixture(scope="session")
def _chdb_url() -> Iterator[str]:
    """One chdb folder for this pytest process (chdb allows one per process); tests get their own database."""
    folder = tempfile.mkdtemp(prefix="vidpulse-chdb-")
    yield f"chdb://{folder}"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clickhouse(request: pytest.FixtureRequest, _chdb_url: str) -> Iterator[ClickHouse]:
    """A freshly migrated database in the real ClickHouse engine."""
    require_marker(request, "clickhouse")
    database = f"test_{uuid.uuid4().hex[:12]}"
    migrate(_chdb_url, database)
    db = connect(_chdb_url, database)
    yield db
    db.command(f"DROP DATABASE IF EXISTS {database}")
    db.close()


@pytest.fixture
def run_id() -> str:
    """Fresh names per test: topics and consumer groups never see another run's data."""
    return uuid.uuid4().hex[:10]
