"""What the benchmarks share: the broker they run against, their cleanup, and how they summarize and print.

Imported as ``bench.common`` by scripts run as ``python bench/<name>.py``: each
puts the repository root on ``sys.path`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient

if TYPE_CHECKING:
    from aggregations.clickhouse import ClickHouse

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


def find_broker() -> tuple[str, bool]:
    """VIDPULSE_KAFKA_BOOTSTRAP, else the local broker (started if needed); and whether this run started it."""
    configured = os.environ.get("VIDPULSE_KAFKA_BOOTSTRAP")
    if configured:
        return configured, False
    running = subprocess.run(["bash", str(KAFKA_SCRIPT), "status"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"the local Kafka broker did not start:\n{started.stderr[-3000:]}")
    return started.stdout.strip().splitlines()[-1], not running


async def delete_topics(bootstrap: str, run_id: str) -> None:
    """Best effort: removes the topics this run created (every one of them has the run id in its name)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        ours = [name for name in await admin.list_topics() if run_id in name]
        if ours:
            await admin.delete_topics(ours)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the report
        print(f"note: could not delete this run's topics: {exc!r}", file=sys.stderr)
    finally:
        await admin.close()


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95 (linear interpolation between closest ranks), max and n; NaN when there is nothing."""
    if not values:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan, "n": 0}
    ordered = sorted(values)
    rank = 0.95 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    p95 = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1], "n": len(ordered)}


def fmt(seconds: float | None) -> str:
    """A duration as a person reads it: ms below 0.1 s; "timeout" for None, "n/a" for NaN."""
    if seconds is None:
        return "timeout"
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds:.3f} s" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def log_warnings(path: Path) -> list[str]:
    """A vidpulse log's lines at WARNING or ERROR, in its plain or JSON format (the salt warning is expected
    on a local run)."""
    if not path.exists():
        return []
    return [line.strip()[:300] for line in path.read_text(errors="replace").splitlines()
            if (" WARNING " in line or " ERROR " in line or '"WARNING"' in line or '"ERROR"' in line)
            and "FINGERPRINT_SALT" not in line]


def report_failure(bench: str, exc: BaseException, process: Any) -> None:
    """A failed run names its exception and shows the tail of vidpulse's log, which usually says why."""
    tail = process.log_tail()
    print(f"{bench}: the run failed: {exc!r}" + (f"\n--- {process.log_path.name} (tail) ---\n{tail}" if tail else ""),
          file=sys.stderr)


def keep_or_remove(workdir: Path, keep: bool) -> None:
    """A run's work folder stays only when it explains a failure or was asked for; then the path is printed."""
    if keep:
        print(f"workdir kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def clean_up(process: Any, bootstrap: str, run_id: str, workdir: Path, *, failed: bool, keep_workdir: bool,
             started_broker: bool, stop_broker: bool) -> None:
    """Stops vidpulse, deletes the run's topics, keeps the workdir only when it explains a failure or was asked
    for, and stops the local broker only if this run started it and the caller wants it stopped."""
    process.stop()
    asyncio.run(delete_topics(bootstrap, run_id))
    keep_or_remove(workdir, (failed and process.log_path.exists()) or keep_workdir)
    if started_broker:
        if stop_broker:
            subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], capture_output=True)
        else:
            print("note: this run started the local broker and left it running (make broker-stop stops it)",
                  file=sys.stderr)


@contextlib.contextmanager
def fresh_chdb(database: str) -> Iterator[ClickHouse]:
    """A migrated ``database`` in an embedded engine's folder of its own, closed and removed after."""
    from aggregations.clickhouse import connect  # here: the scripts that need no database do not load the driver
    from aggregations.schema import migrate

    folder = tempfile.mkdtemp(prefix=f"vidpulse-{database}-")
    try:
        url = f"chdb://{folder}"
        migrate(url, database)
        db = connect(url, database)
        try:
            yield db
        finally:
            db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class KeepNothing:
    """A sink writer (``aggregations.rows.Writer``) that stores nothing: the sink's own CPU and memory alone."""

    async def record_batch(self, batch: Any) -> None: ...
    async def recorded_batches(self, *args: Any) -> dict[int, int]: return {}
    async def session_history(self, *args: Any) -> dict[int, list[Any]]: return {}
    async def write(self, rows: Any, batch: Any) -> None: ...
    async def dimension_values(self, keys: list[Any]) -> dict[Any, set[str]]: return {}
    async def admit_dimension_values(self, rows: list[Any]) -> None: ...
    async def recent_sessions(self, *args: Any) -> list[Any]: return []
