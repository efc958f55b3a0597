"""The worker's own Python per event, without Kafka or ClickHouse: decode + sessionize + build rows.

Feeds the real ``EventSink`` 20-event messages of 5,000 sessions (four messages each, as a session
grows) through a writer that keeps nothing, and prints the process's CPU time per event beside a
baseline in the same process: ``orjson.loads`` of the same messages (the least any worker must do).
What ``throughput.py``'s worker parts measure minus Kafka's fetching, Faust, the Native encoding and
the inserts (bench/README.md, "the worker's own Python per event").

    .venv/bin/python bench/sink_cpu.py [--sessions 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry  # noqa: E402

from aggregations.metrics import WorkerMetrics  # noqa: E402
from aggregations.sink import EventSink, SinkConfig  # noqa: E402
from bench.common import KeepNothing  # noqa: E402
from ingest.models import decode_batch  # noqa: E402

PARTS = 4  # messages per session


def message(session: int, part: int, now_ms: int) -> bytes:
    base = now_ms - 600_000 + part * 20_000
    events = [{"id": f"{part}-{i}", "type": "view" if part == 0 and i == 0 else "heartbeat", "ts": base + i * 1000,
               "event_time_ms": base + i * 1000, "watched_ms": 1000, "position": float(i)} for i in range(20)]
    return orjson.dumps({"account": "bench", "player": "web", "session": f"s-{session:09d}", "session_key": session + 1,
                         "fingerprint": session * 7919, "video": f"video-{session % 50}", "live": False, "tz": "UTC",
                         "user": "", "domain": "www.example.com", "duration_s": None, "country": "DE",
                         "continent": "EU", "subdivision": "", "device_type": "desktop", "os": "Windows",
                         "browser": "Chrome", "is_bot": False, "received_at_ms": now_ms, "events": events})


async def sink_cpu_us(messages: list[bytes]) -> float:
    config = SinkConfig(consumer_group="g", topic="t", session_timeout_ms=60_000, close_grace_ms=10_000,
                        flush_interval_s=1.0, flush_max_events=20_000)

    async def ack(_: Any) -> None: ...

    sink = EventSink(KeepNothing(), config, WorkerMetrics(CollectorRegistry()), ack=ack,  # type: ignore[arg-type]
                     caught_up=lambda partition, offset: True)
    started = time.process_time()
    for offset, value in enumerate(messages):
        await sink.add(0, offset, decode_batch(value), None)
    await sink.flush_all()
    return (time.process_time() - started) / (len(messages) * 20) * 1e6


def loads_cpu_us(messages: list[bytes]) -> float:
    started = time.process_time()
    for value in messages:
        orjson.loads(value)
    return (time.process_time() - started) / (len(messages) * 20) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best is printed")
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    messages = [message(session, part, now_ms) for part in range(PARTS) for session in range(args.sessions)]
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)  # as vidpulse.cli.tune_gc does in the worker
    sink = min(asyncio.run(sink_cpu_us(messages)) for _ in range(args.rounds))
    loads = min(loads_cpu_us(messages) for _ in range(args.rounds))
    print(f"{len(messages) * 20} events in {len(messages)} messages of {args.sessions} sessions")
    print(f"decode + sink, no writes  {sink:6.2f} µs CPU per event")
    print(f"orjson.loads (baseline)   {loads:6.2f} µs CPU per event  -> sink is {sink / loads:.1f}x the baseline")


if __name__ == "__main__":
    main()
