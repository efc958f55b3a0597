"""Faust alone: what the worker's Faust app costs before the sink does anything (issue 12).

Runs the worker's own app (``aggregations.worker.faust_app``, the same settings) with one agent that
decodes each message of a backlog with orjson and counts its events, and prints one JSON line: the
events/s and the process's CPU per event, from the first message to the last. ``throughput.py`` runs
it on the tracker's backlog after the plain aiokafka baseline: the gap between the two is Faust's
consumer thread and per-message delivery, the gap between this and the worker is the sink.

    .venv/bin/python bench/faust_floor.py --bootstrap HOST:PORT --topic T --messages N
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregations.worker import faust_app, prepare_to_start  # noqa: E402
from ingest.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, required=True, help="how many the topic holds")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), worker_group=f"faust-floor-{os.getpid()}-{time.time_ns()}",
                            topic_partitions=args.partitions)
        app = faust_app(settings, args.bootstrap)
        topic = app.topic(args.topic, value_type=bytes, key_type=bytes, partitions=args.partitions)
        seen = {"messages": 0, "events": 0}
        clock: dict[str, float] = {}

        @app.agent(topic, name="floor")
        async def floor(stream: Any) -> None:
            async for event in stream.noack().events():
                if not clock:
                    clock.update(started=time.perf_counter(), cpu=time.process_time())
                seen["events"] += len(orjson.loads(event.value)["events"])
                seen["messages"] += 1
                if seen["messages"] >= args.messages:
                    seconds, cpu = time.perf_counter() - clock["started"], time.process_time() - clock["cpu"]
                    print(orjson.dumps({**seen, "seconds": seconds, "events_per_s": seen["events"] / seconds,
                                        "messages_per_s": seen["messages"] / seconds,
                                        "cpu_us_per_event": 1e6 * cpu / seen["events"]}).decode(), flush=True)
                    os._exit(0)  # Faust's orderly stop takes seconds and measures nothing

        async def run() -> None:
            prepare_to_start(app)  # as Worker.start does
            await app.start()
            await asyncio.sleep(args.timeout)
            print(orjson.dumps({"error": f"{seen['messages']} of {args.messages} messages in {args.timeout:.0f} s",
                                **seen}).decode(), flush=True)
            os._exit(1)

        asyncio.run(run())


if __name__ == "__main__":
    main()
