"""The worker's raw block serialized two ways in one process: clickhouse-connect's writer on a value per row, and
``aggregations.native`` on the batches' fields as runs (what the worker sends since issue 12's runs).

Builds ``RawColumns`` from synthetic batches of N events (a view, then heartbeats; a new session each), reads
events_raw's column types from a fresh chdb database, checks that both ways give the same bytes, and prints
the CPU time per event of each (the best of the rounds) and their ratio.

    .venv/bin/python bench/native_encode.py [--events 60000] [--sizes 20,1,200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clickhouse_connect.datatypes.base import ClickHouseType  # noqa: E402
from clickhouse_connect.driver.insert import InsertContext  # noqa: E402
from clickhouse_connect.driver.transform import NativeTransform  # noqa: E402

from aggregations.native import Runs, body  # noqa: E402
from aggregations.rows import RAW_COLUMNS, RawColumns  # noqa: E402
from bench.common import fresh_chdb  # noqa: E402
from ingest.models import EnrichedBatch, EnrichedEvent  # noqa: E402

BASE = (int(time.time() * 1000) // 60_000 - 30) * 60_000


def batches(total: int, size: int) -> list[EnrichedBatch]:
    rng = random.Random(size)
    found = []
    for key in range(max(1, total // size)):
        events = [EnrichedEvent(id=str(i), type="view" if i == 0 else "heartbeat", ts=BASE + i * 1000,
                                event_time_ms=BASE + i * 1000, watched_ms=0 if i == 0 else 1000, position=float(i))
                  for i in range(size)]
        found.append(EnrichedBatch(
            account="bench", player="web", session=f"s-{key:09d}", session_key=key + 1, fingerprint=key * 7919,
            video=f"video-{key % 50}", live=False, tz=rng.choice(["UTC", "Europe/Berlin", "Asia/Tokyo"]), user="",
            domain="www.example.com", duration_s=None, country=rng.choice(["DE", "FR", "US", "BR", "JP"]),
            continent="EU", subdivision="", device_type=rng.choice(["desktop", "mobile", "tv"]), os="Windows",
            browser="Chrome", is_bot=False, received_at_ms=BASE + size * 1000, events=events))
    return found


def per_row(types: list[ClickHouseType], columns: list) -> bytes:
    """clickhouse-connect's own serialization, every run expanded to a value per row (as before the runs)."""
    plain = [column.expand() if isinstance(column, Runs) else column for column in columns]
    context = InsertContext("events_raw", list(RAW_COLUMNS), types, data=plain, column_oriented=True,
                            block_size=len(plain[0]))
    sent = b"".join(NativeTransform.build_insert(context))
    return sent[sent.index(b"\n") + 1:]


def runs(types: list[ClickHouseType], columns: list) -> bytes:
    return body(RAW_COLUMNS, types, columns, timezone.utc)


def measure(types: list[ClickHouseType], total: int, size: int, rounds: int) -> tuple[float, float]:
    raw = RawColumns()
    for offset, batch in enumerate(batches(total, size)):
        raw.add(batch, batch.events, 0, offset)
    columns = raw.columns
    assert per_row(types, columns) == runs(types, columns), "the two serializations differ"
    best = {}
    for way in (per_row, runs):
        times = []
        for _ in range(rounds):
            started = time.process_time()
            way(types, columns)
            times.append((time.process_time() - started) / len(raw) * 1e6)
        best[way] = min(times)
    return best[per_row], best[runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000, help="events per block (the worker's flush count)")
    parser.add_argument("--sizes", default="20,1,200", help="events per batch, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with fresh_chdb("encode") as db:
        types = list(db._column_types("events_raw", RAW_COLUMNS))
    print(f"events_raw block of {args.events} events, CPU µs per event (best of {args.rounds})")
    for size in (int(size) for size in args.sizes.split(",")):
        before, after = measure(types, args.events, size, args.rounds)
        print(f"  {size:4d} events per batch: per row {before:5.2f}   runs {after:5.2f}   ratio {after / before:.2f}")


if __name__ == "__main__":
    main()
