"""The tracker's own Python per request, without HTTP or Kafka: parse, envelope, events' checks, enrichment, message.

Runs the pieces of ``Tracker._accept`` on one 20-event beacon (a view, a first frame, heartbeats; the
shape ``track.lua`` sends) and prints the process's CPU time per request for each, beside a baseline
in the same process: ``orjson.loads`` and ``orjson.dumps`` of the body, the least a tracker that
forwards the body must do. What ``throughput.py``'s tracker part measures minus uvicorn, the event
loop, aiokafka and the access line (bench/README.md, "3 December, night").

    .venv/bin/python bench/track_cpu.py [--events 20] [--requests 5000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import fastpath  # noqa: E402
from ingest.enrich import Sender, salt_for  # noqa: E402
from ingest.geo import Locator  # noqa: E402
from ingest.models import Envelope  # noqa: E402
from vidpulse.cli import tune_gc  # noqa: E402

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
LATENESS_S = 7 * 86400


def beacon(events: int, now: int) -> bytes:
    start = now - 600_000 - events * 1000
    batch: list[dict[str, Any]] = [{"id": "1", "type": "view", "ts": start}]
    if events > 1:
        batch.append({"id": "2", "type": "first_frame", "ts": start + 1000, "startup_ms": 800})
    batch += [{"id": str(i), "type": "heartbeat", "ts": start + i * 1000, "watched_ms": 1000, "position": float(i)}
              for i in range(3, events + 1)]
    return orjson.dumps({"v": 1, "account": "bench", "player": "web", "session": "bench-t1-000001", "video": "video-17",
                         "sent_at": now, "context": {"tz": "Europe/Berlin"}, "events": batch})


def cpu_us(step: Callable[[], Any], requests: int) -> float:
    step()
    started = time.process_time()
    for _ in range(requests):
        step()
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20, help="events per request (default 20)")
    parser.add_argument("--requests", type=int, default=5000, help="requests timed per step (default 5000)")
    args = parser.parse_args()
    tune_gc()  # as every vidpulse process does
    now = int(time.time() * 1000)
    body = beacon(args.events, now)
    sender, locator = Sender(now, "81.2.69.160", UA), Locator(None)
    payload = orjson.loads(body)
    envelope = fastpath.plain_envelope(payload)
    assert envelope is not None, "the beacon should take the fast path"
    accepted, rejected = fastpath.check_events(envelope, now, LATENESS_S)
    assert len(accepted) == args.events and not rejected
    salt = salt_for("secret", False, now)
    batch = fastpath.enrich(envelope, accepted, sender, salt, locator)
    message = orjson.dumps(batch)

    def whole() -> bytes:
        plain = fastpath.plain_envelope(orjson.loads(body))
        assert plain is not None
        events, _ = fastpath.check_events(plain, now, LATENESS_S)
        return orjson.dumps(fastpath.enrich(plain, events, sender, salt_for("secret", False, now), locator))

    steps: dict[str, Callable[[], Any]] = {
        "baseline: orjson.loads + orjson.dumps of the body": lambda: orjson.dumps(orjson.loads(body)),
        "orjson.loads": lambda: orjson.loads(body),
        "envelope, by hand": lambda: fastpath.plain_envelope(payload),
        "envelope, by the model": lambda: Envelope.model_validate(payload),
        "events' checks": lambda: fastpath.check_events(envelope, now, LATENESS_S),
        "enrichment": lambda: fastpath.enrich(envelope, accepted, sender, salt, locator),
        "orjson.dumps of the message": lambda: orjson.dumps(batch),
        "all of it (the fast path)": whole,
    }
    print(f"{args.events} events per request: body {len(body)} bytes, Kafka message {len(message)} bytes")
    for name, step in steps.items():
        print(f"  {cpu_us(step, args.requests):8.1f} us CPU/request  {name}")


if __name__ == "__main__":
    main()
