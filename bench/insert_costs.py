"""Where the worker's writes spend CPU (issue 12): each raw insert, and each view behind events_stream.

The in-process engine (chdb) runs every insert and every view in the worker's process, so its CPU is
the worker's. This writes synthetic 20-event sessions in blocks as the worker does, to a fresh chdb
database, and prints the CPU time of the whole process (every thread) per event of: serializing the
Native block, inserting it into events_raw, into events_stream, then into events_stream again as its
views are dropped one by one. Background merges are stopped (the worker pays for them too, later).
The numbers are for reading side by side within one run.

    .venv/bin/python bench/insert_costs.py [--blocks 12] [--sessions 300]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregations.clickhouse import ClickHouse, NativeBlock  # noqa: E402
from aggregations.rows import RAW_COLUMNS, raw_rows  # noqa: E402
from bench.common import fresh_chdb  # noqa: E402
from ingest.models import EnrichedBatch, EnrichedEvent  # noqa: E402

BASE = (int(time.time() * 1000) // 60_000 - 30) * 60_000
PROJECTIONS = ("by_video", "hours", "days", "video_minutes", "account_minutes")


def session(key: int) -> list[tuple[Any, ...]]:
    """The raw rows of one 20-event session (a view, then heartbeats of 1 s), as the worker builds them."""
    events = [EnrichedEvent(id=f"e{i}", type="view" if i == 0 else "heartbeat", ts=BASE + i * 1000,
                            event_time_ms=BASE + i * 1000, watched_ms=0 if i == 0 else 1000) for i in range(20)]
    batch = EnrichedBatch(
        account="1234", player="p", session=f"s{key}", session_key=key, fingerprint=key % 7, video=f"v{key % 50}",
        live=False, tz="UTC", user="", domain="example.com", duration_s=60.0, country=("FR", "US", "JP")[key % 3],
        continent="EU", subdivision="", device_type="desktop", os="Linux", browser="Firefox", is_bot=False,
        received_at_ms=BASE, events=events)
    return raw_rows(batch, events, 0, key)


def cpu_per_event(blocks: list[NativeBlock], step: Callable[[NativeBlock], Any]) -> float:
    """µs of process CPU (all threads: the engine's too) per event, the better of two passes."""
    passes = []
    for _ in range(2):
        started = time.process_time()
        for block in blocks:
            step(block)
        passes.append((time.process_time() - started) / sum(block.rows for block in blocks) * 1e6)
    return min(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12, help="blocks per measurement (default 12)")
    parser.add_argument("--sessions", type=int, default=300, help="20-event sessions per block (default 300)")
    args = parser.parse_args()
    with fresh_chdb("costs") as db:
        measure(db, args.blocks, args.sessions)


def measure(db: ClickHouse, count: int, sessions: int) -> None:
    rows = [[row for key in range(n * sessions, (n + 1) * sessions) for row in session(key)] for n in range(count)]
    columns = [list(zip(*block, strict=True)) for block in rows]
    started = time.process_time()
    blocks = [db.encode("events_raw", RAW_COLUMNS, block) for block in columns]
    # parts merging in the background would bill one insert's merges to the next measurement
    db.command("SYSTEM STOP MERGES")
    print(f"{sessions * 20} events per block, {count} blocks")
    print(f"{'serialize the Native block':58s} {(time.process_time() - started) / (count * sessions * 20) * 1e6:6.2f} µs")
    tokens = itertools.count()
    print(f"{'insert into events_raw':58s} "
          f"{cpu_per_event(blocks, lambda b: db.insert_block('events_raw', b, f'r{next(tokens)}')):6.2f} µs")

    def stream(name: str) -> None:
        cost = cpu_per_event(blocks, lambda b: db.insert_block("events_stream", b, f"s{next(tokens)}"))
        print(f"{'insert into events_stream, ' + name:58s} {cost:6.2f} µs")

    stream("all its views")
    db.command("DROP VIEW retention_passes_mv")
    stream("less retention_passes_mv")
    db.command("DROP VIEW usage_daily_mv")
    stream("less usage_daily_mv too: minute_metrics_mv alone")
    db.command("SYSTEM START MERGES")  # dropping a projection is a mutation: it waits for merges to run
    for projection in PROJECTIONS:
        db.command(f"ALTER TABLE minute_metrics DROP PROJECTION {projection} SETTINGS mutations_sync = 1")
    db.command("SYSTEM STOP MERGES")
    stream("minute_metrics_mv without its projections")
    db.command("DROP VIEW minute_metrics_mv")
    stream("no view left (the Null engine alone)")


if __name__ == "__main__":
    main()
