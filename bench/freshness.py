"""Freshness: how long after the tracker's 202 a beacon is visible in the query API.

Requirement: "Data is queryable within 5 seconds of the 202." This script starts one
``vidpulse up`` (default flush settings) against the real broker, posts one beacon batch
per sample for a new session and a new video (after a random pause, so beacons arrive at
any moment of the worker's flush cycle), and polls /v1/events every 50 ms until the view
(``video_view == 1``) and the session's concurrency (``ccu == 1``) are visible, while a few
background sessions send heartbeats. The same
script first measures a baseline on the same broker and machine: the Kafka produce ->
consume round trip alone, so the pipeline's delay is also reported as a ratio to it.

    .venv/bin/python bench/freshness.py [--samples N] [--json out.json]

A report, not a test: the exit code is 0 whether the 5 s target is met or not, 1 only
when the run itself failed (broker or vidpulse would not start, the process died, ...).
See bench/README.md for what each number means and what was observed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from bench.common import clean_up, find_broker, fmt, log_warnings, report_failure, summary  # noqa: E402
from ingest.producer import PRODUCER_OPTIONS  # noqa: E402
from ingest.topics import ensure_topics  # noqa: E402
from tests.vidpulse_process import VidpulseProcess  # noqa: E402

TARGET_S = 5.0
ACCOUNT = "bench"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
FORWARDED_FOR = "8.8.8.8"  # vidpulse trusts 127.0.0.1 as a proxy: this is the "player's" address


# --------------------------------------------------------------------------- the broker





# --------------------------------------------------------------------------- numbers



# --------------------------------------------------------------------------- baseline

async def kafka_round_trips(bootstrap: str, topic: str, samples: int) -> dict[str, list[float]]:
    """Produce (the tracker's producer options) -> a consumer reading it back, one message at a time."""
    await ensure_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    await producer.start()
    await consumer.start()
    payload = os.urandom(400).hex().encode()  # ~ the size of one enriched beacon batch
    acks: list[float] = []
    trips: list[float] = []
    try:
        for index in range(samples + 1):  # the first one warms up connections and the fetch position
            key = index.to_bytes(8, "big")
            sent = time.perf_counter()
            await (await producer.send(topic, payload, key=key))
            acked = time.perf_counter()
            while True:
                message = await asyncio.wait_for(consumer.getone(), timeout=30)
                if message.key == key:
                    break
            received = time.perf_counter()
            if index:
                acks.append(acked - sent)
                trips.append(received - sent)
    finally:
        await consumer.stop()
        await producer.stop()
    return {"produce_ack": acks, "round_trip": trips}


# --------------------------------------------------------------------------- the pipeline

@dataclass
class Sample:
    video: str
    view_s: float | None = None
    ccu_s: float | None = None
    view_polls: int = 0
    ccu_polls: int = 0
    post_s: float = 0.0
    anomalies: list[str] = field(default_factory=list)


@dataclass
class PollStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def beacon(session: str, video: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"account": ACCOUNT, "player": "web", "session": session, "video": video, "events": events,
            "context": {"tz": "Europe/Berlin", "page": "https://www.example.com/watch"}}


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/v1/track", json=body,
                                 headers={"User-Agent": CHROME, "X-Forwarded-For": FORWARDED_FOR})
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/track answered {response.status_code}: {response.text[:500]}")
    answer = response.json()
    if answer.get("rejected"):
        raise RuntimeError(f"POST /v1/track rejected events: {answer}")


async def wait_visible(client: httpx.AsyncClient, video: str, metric: str, since_ms: int, accepted_at: float,
                       interval_s: float, timeout_s: float, stats: PollStats) -> tuple[float | None, int, int]:
    """Polls until ``metric`` of ``video`` reads 1: (seconds from the 202 to the answer that showed it, polls, value)."""
    params = {"dimensions": "video", "metrics": metric, "where": f"video=={video}", "from": str(since_ms)}
    polls = 0
    while True:
        asked = time.perf_counter()
        polls += 1
        value = 0
        try:
            response = await client.get(f"/v1/events/accounts/{ACCOUNT}", params=params)
            answered = time.perf_counter()
            stats.latencies.append(answered - asked)
            if response.status_code == 200:
                rows = response.json()["data"]
                value = rows[0]["totals"][metric] if rows else 0
            else:
                stats.errors += 1
        except httpx.HTTPError:
            answered = time.perf_counter()
            stats.errors += 1
        if value:
            return answered - accepted_at, polls, value
        if answered - accepted_at > timeout_s:
            return None, polls, 0
        await asyncio.sleep(interval_s)


async def one_sample(client: httpx.AsyncClient, label: str, args: argparse.Namespace, stats: PollStats) -> Sample:
    video = f"fresh-{label}-{uuid.uuid4().hex[:8]}"
    session = f"bench-{uuid.uuid4().hex}"
    now_ms = int(time.time() * 1000)
    sample = Sample(video)
    started = time.perf_counter()
    await post(client, beacon(session, video, [{"id": "1", "type": "view", "ts": now_ms}]))
    accepted_at = time.perf_counter()  # the 202 is in
    sample.post_s = accepted_at - started
    since_ms = now_ms - 5 * 60_000
    (view_s, view_polls, views), (ccu_s, ccu_polls, ccu) = await asyncio.gather(
        wait_visible(client, video, "video_view", since_ms, accepted_at, args.poll_s, args.timeout_s, stats),
        wait_visible(client, video, "ccu", since_ms, accepted_at, args.poll_s, args.timeout_s, stats))
    sample.view_s, sample.view_polls, sample.ccu_s, sample.ccu_polls = view_s, view_polls, ccu_s, ccu_polls
    for name, value in (("video_view", views), ("ccu", ccu)):
        if value not in (0, 1):
            sample.anomalies.append(f"{name} read {value}, expected 1")
    return sample


async def background_session(client: httpx.AsyncClient, number: int, stop: asyncio.Event, interval_s: float,
                             max_beats: int, sent: list[int]) -> None:
    """One player: a view, then a heartbeat every ``interval_s`` until told to stop (at most ``max_beats``)."""
    session = f"bench-bg-{number}-{uuid.uuid4().hex[:12]}"
    video = f"background-{number}"
    try:
        await post(client, beacon(session, video, [{"id": "0", "type": "view", "ts": int(time.time() * 1000)}]))
        sent[0] += 1
        for beat in range(1, max_beats + 1):
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
                return
            except asyncio.TimeoutError:
                pass
            event = {"id": str(beat), "type": "heartbeat", "ts": int(time.time() * 1000),
                     "watched_ms": int(interval_s * 1000)}
            await post(client, beacon(session, video, [event]))
            sent[0] += 1
    except (RuntimeError, httpx.HTTPError) as exc:  # background load is not the measurement
        print(f"note: background session {number} stopped: {exc}", file=sys.stderr)


async def measure_pipeline(url: str, args: argparse.Namespace, auth: httpx.Auth) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.background + 4)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, auth=auth) as client:
        # Warm-up: readyz answers before the Faust consumer has its partitions; the first
        # beacon's delay includes that start-up, so it is reported apart.
        warm = await one_sample(client, "warmup", argparse.Namespace(**{**vars(args), "timeout_s": 120}), PollStats())
        if warm.view_s is None:
            raise RuntimeError("the warm-up beacon never became visible (120 s)")
        stop = asyncio.Event()
        sent = [0]
        # bounded even if every sample waits its longest pause and then times out
        beats = math.ceil(args.samples * (args.jitter_s + args.timeout_s + 5) / args.heartbeat_s)
        load = [asyncio.create_task(background_session(client, n, stop, args.heartbeat_s, beats, sent))
                for n in range(args.background)]
        stats = PollStats()
        samples: list[Sample] = []
        started = time.perf_counter()
        try:
            if load:
                await asyncio.sleep(2 * args.heartbeat_s)  # let the load settle into its rhythm
            pauses = random.Random(args.seed)
            for index in range(args.samples):
                # Beacons arrive at any moment, not just after a flush: without this pause every
                # sample would be posted right after the previous one became visible, i.e. right
                # after the worker's timer ticked, and would wait the longest possible time.
                await asyncio.sleep(pauses.uniform(0, args.jitter_s))
                samples.append(await one_sample(client, f"{index:03d}", args, stats))
                if args.progress:
                    s = samples[-1]
                    print(f"  sample {index + 1:3d}/{args.samples}: view {fmt(s.view_s)}  ccu {fmt(s.ccu_s)}",
                          file=sys.stderr)
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
        elapsed = time.perf_counter() - started
        metrics_text = (await client.get("/metrics")).text
    return {"warmup": warm, "samples": samples, "polls": stats, "background_batches": sent[0],
            "elapsed_s": elapsed, "worker": worker_metrics(metrics_text)}


def worker_metrics(text: str) -> dict[str, Any]:
    """A few of the worker's own Prometheus numbers: how many flushes, how big, how long the inserts took."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vidpulse_worker_") and " " in line:
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    out: dict[str, Any] = {"flushes": values.get("vidpulse_worker_batch_messages_count", 0),
                           "messages": values.get("vidpulse_worker_batch_messages_sum", 0)}
    for table in ("events_raw", "session_minutes", "sink_batches"):
        count = values.get(f'vidpulse_worker_insert_latency_seconds_count{{table="{table}"}}', 0)
        total = values.get(f'vidpulse_worker_insert_latency_seconds_sum{{table="{table}"}}', 0)
        out[f"insert_{table}_mean_s"] = total / count if count else math.nan
    return out




# --------------------------------------------------------------------------- report



def report(args: argparse.Namespace, meta: dict[str, Any], baseline: dict[str, list[float]],
           run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    samples: list[Sample] = run["samples"]
    view = [s.view_s for s in samples if s.view_s is not None]
    ccu = [s.ccu_s for s in samples if s.ccu_s is not None]
    timeouts = {"view": sum(s.view_s is None for s in samples), "ccu": sum(s.ccu_s is None for s in samples)}
    # A timed-out sample counts as the timeout in the statistics: it is at least that late.
    stats = {"view_visible": summary(view + [args.timeout_s] * timeouts["view"]),
             "ccu_visible": summary(ccu + [args.timeout_s] * timeouts["ccu"]),
             "kafka_round_trip": summary(baseline["round_trip"]),
             "kafka_produce_ack": summary(baseline["produce_ack"]),
             "post_202": summary([s.post_s for s in samples]),
             "poll_query": summary(run["polls"].latencies)}
    ratios = {name: {q: stats[name][q] / stats["kafka_round_trip"][q] for q in ("p50", "p95", "max")}
              for name in ("view_visible", "ccu_visible")}
    verdict = {name: stats[name]["p95"] <= TARGET_S and not timeouts[key]
               for name, key in (("view_visible", "view"), ("ccu_visible", "ccu"))}

    rows = [("view visible   (202 -> video_view == 1)", stats["view_visible"]),
            ("ccu visible    (202 -> ccu == 1)", stats["ccu_visible"]),
            ("baseline: Kafka produce -> consume", stats["kafka_round_trip"]),
            ("  (of which produce -> ack, acks=all)", stats["kafka_produce_ack"]),
            ("context: POST /v1/track -> 202", stats["post_202"]),
            ("context: one poll query", stats["poll_query"])]
    width = max(len(label) for label, _ in rows)
    lines = [f"vidpulse freshness - {meta['date']}, {meta['cpus']} cores, {meta['platform']}",
             f"{args.samples} samples, each "
             + (f"after a random 0-{args.jitter_s:g} s pause" if args.jitter_s else "as soon as the previous showed up")
             + "; flush_interval_s="
             f"{meta['flush_interval_s']}; polling every {args.poll_s * 1000:.0f} ms",
             f"background: {args.background} sessions x 1 heartbeat / {args.heartbeat_s:g} s "
             f"({run['background_batches']} batches)",
             "",
             f"{'':{width}}  {'median':>10} {'p95':>10} {'max':>10}"]
    lines += [f"{label:{width}}  {fmt(s['p50']):>10} {fmt(s['p95']):>10} {fmt(s['max']):>10}" for label, s in rows]
    lines.append("")
    for name, label in (("view_visible", "view / baseline"), ("ccu_visible", "ccu  / baseline")):
        r = ratios[name]
        lines.append(f"{label:{width}}  {r['p50']:>9.0f}x {r['p95']:>9.0f}x {r['max']:>9.0f}x")
    lines.append("")
    warm: Sample = run["warmup"]
    lines.append(f"warm-up beacon (right after /readyz, not in the statistics): view {fmt(warm.view_s)}, "
                 f"ccu {fmt(warm.ccu_s)}")
    worker = run["worker"]
    lines.append(f"worker: {worker['flushes']:.0f} partition flushes of {worker['messages']:.0f} messages; mean insert "
                 f"events_raw {fmt(worker['insert_events_raw_mean_s'])}, session_minutes "
                 f"{fmt(worker['insert_session_minutes_mean_s'])}, sink_batches {fmt(worker['insert_sink_batches_mean_s'])}")
    warnings = run.get("log_warnings", [])
    if warnings:
        lines.append(f"vidpulse.log: {len(warnings)} WARNING/ERROR line(s), e.g.:")
        lines += [f"  {line}" for line in warnings[:3]]
    if run["polls"].errors:
        lines.append(f"poll errors (non-200 or connection): {run['polls'].errors}")
    anomalies = [f"{s.video}: {a}" for s in samples for a in s.anomalies]
    if anomalies:
        lines.append("anomalies: " + "; ".join(anomalies))
    for key, count in timeouts.items():
        if count:
            lines.append(f"{count} sample(s) never showed {key} within {args.timeout_s:g} s")
    lines.append("")
    for name, label in (("view_visible", "view"), ("ccu_visible", "ccu ")):
        lines.append(f"target p95 <= {TARGET_S:g} s, {label}: {'PASS' if verdict[name] else 'FAIL'} "
                     f"(p95 {fmt(stats[name]['p95'])})")

    numbers = {"meta": meta, "target_s": TARGET_S, "stats": stats, "ratios": ratios,
               "pass": verdict, "timeouts": timeouts, "worker": worker,
               "warmup": {"view_s": warm.view_s, "ccu_s": warm.ccu_s},
               "background_batches": run["background_batches"], "elapsed_s": run["elapsed_s"],
               "poll_errors": run["polls"].errors, "anomalies": anomalies,
               "log_warnings": run.get("log_warnings", []),
               "samples": [{"video": s.video, "view_s": s.view_s, "ccu_s": s.ccu_s, "post_s": s.post_s,
                            "view_polls": s.view_polls, "ccu_polls": s.ccu_polls} for s in samples],
               "baseline": baseline}
    return "\n".join(lines), numbers


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50, help="beacons measured (default 50)")
    parser.add_argument("--json", type=Path, help="also write the numbers (and every sample) to this file")
    parser.add_argument("--poll-s", type=float, default=0.05, help="pause between polls (default 0.05)")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="give up on a sample after this (default 30)")
    parser.add_argument("--jitter-s", type=float, default=4.0,
                        help="random pause (0..this) before each sample, so beacons arrive at any phase of the "
                             "worker's flush cycle, which under load is two timer ticks, ~2.3 s (default 4; "
                             "0 posts right after the previous sample showed up: phase-locked, near the worst case)")
    parser.add_argument("--seed", type=int, default=1, help="seed of those pauses (default 1)")
    parser.add_argument("--background", type=int, default=4, help="concurrent background sessions (default 4)")
    parser.add_argument("--heartbeat-s", type=float, default=1.0, help="their heartbeat interval (default 1)")
    parser.add_argument("--progress", action="store_true", help="print each sample as it is measured")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the chdb folder and vidpulse.log")
    parser.add_argument("--stop-broker", action="store_true",
                        help="stop the local broker afterwards if this run started it (default: leave it running)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.background < 0 or args.background > 32 or args.poll_s <= 0 or args.heartbeat_s < 0.1 \
            or args.jitter_s < 0:
        parser.error("need --samples >= 1, 0 <= --background <= 32, --poll-s > 0, --heartbeat-s >= 0.1, --jitter-s >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop vidpulse
    run_id = f"bench{uuid.uuid4().hex[:8]}"
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "flush_interval_s": os.environ.get("VIDPULSE_FLUSH_INTERVAL_S", "1.0 (default)"),
            "samples": args.samples, "poll_s": args.poll_s, "background_sessions": args.background,
            "heartbeat_s": args.heartbeat_s, "jitter_s": args.jitter_s, "seed": args.seed, "run_id": run_id}
    try:
        bootstrap, started_broker = find_broker()
    except RuntimeError as exc:
        print(f"freshness: {exc}", file=sys.stderr)
        return 1
    meta["bootstrap"] = bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="vidpulse-bench-"))
    process = VidpulseProcess(bootstrap, workdir, run_id)
    failed = True
    try:
        print(f"baseline: {args.samples} Kafka round trips on {bootstrap} ...", file=sys.stderr)
        baseline = asyncio.run(kafka_round_trips(bootstrap, f"{run_id}-baseline", args.samples))
        print(f"starting vidpulse up on {process.url} ...", file=sys.stderr)
        process.start()
        print(f"measuring {args.samples} beacons ...", file=sys.stderr)
        run = asyncio.run(measure_pipeline(process.url, args, process.auth))
        if process.proc is None or process.proc.poll() is not None:
            raise RuntimeError("vidpulse up exited during the run")
        run["log_warnings"] = log_warnings(process.log_path)
        text, numbers = report(args, meta, baseline, run)
        print(text)
        if args.json:
            args.json.write_text(json.dumps(numbers, indent=2, default=str) + "\n")
        failed = False
    except Exception as exc:  # noqa: BLE001 - any failure of the run is reported with the log
        report_failure("freshness", exc, process)
    finally:
        clean_up(process, bootstrap, run_id, workdir, failed=failed, keep_workdir=args.keep_workdir,
                 started_broker=started_broker, stop_broker=args.stop_broker)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
