"""Throughput: the tracker and the worker against raw baselines built in the same run, on the same broker.

Parts, in order (each starts and stops its own processes; every figure is read with the machine's
load average, since this machine is shared):

1. **HTTP baseline**: a bare Starlette endpoint that produces the request body to Kafka (aiokafka,
   ``ingest.producer.PRODUCER_OPTIONS``: the tracker's producer settings) and answers 202 after
   the ack, served by the same uvicorn configuration as vidpulse (``vidpulse.cli.serve``).
2. **Tracker**: ``vidpulse tracker`` alone, driven by wrk (``bench/track.lua``: a new session per
   request, videos, client addresses and User-Agents varied) at 20 events per request, then 1 and
   200. Requests/s, events/s, p50/p99 latency, and the ratio to (1) at 20 events per request.
3. **Consume baseline**: aiokafka reads everything the tracker produced and decodes it with orjson.
   **Faust baseline**: the same backlog through the worker's own Faust app, with an agent that only decodes
   (``bench/faust_floor.py``): what Faust costs before the sink does anything.
4. **Worker**: ``vidpulse worker`` alone, catching up that backlog from offset 0: events/s from its
   first consumed event until every event is in ``events_raw``, and its ratio to (3).
   **Worker on a server** (``--parts worker-server``): the same backlog, a consumer group of its own, the worker
   writing to a ClickHouse server (deploy/clickhouse/clickhouse.sh); the server's CPU is reported apart.
5. **Exactness**: ``vidpulse api`` on the worker's database: video_view and video_seconds_viewed must
   equal what the tracker acknowledged (its own counters, checked against wrk's count of 202s).
6. **All in one**: ``vidpulse up`` with VIDPULSE_UP_PROCESSES=one under wrk at 20 events per request; the
   worker's lag sampled every second; then the same exactness check.
   **Supervised** (``--parts supervised``): the same against ``vidpulse up`` in its default split form (the
   supervisor, its ClickHouse server and three children), everything it starts counted.
   **Split** (``--parts split``): the same against a ClickHouse server (deploy/clickhouse/clickhouse.sh)
   and ``vidpulse tracker``, ``worker`` and ``api`` as separate processes (tests/topology.py, one of each);
   for both, the start-up time to /readyz, and the CPU and memory of every process summed.
7. **Memory per open session**: the sessionizer (``aggregations.sink.EventSink``) holding N sessions of
   20 events each, measured with tracemalloc (no ClickHouse: a writer that keeps nothing).

    .venv/bin/python bench/throughput.py [--seconds 15] [--profile] [--json out.json] [--help]

A report, not a test: exit code 0 whatever the figures, 1 when the run itself failed or an
exactness check failed. See bench/README.md for what was observed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from bench.common import KeepNothing, delete_topics, find_broker, keep_or_remove, log_warnings  # noqa: E402
from ingest.producer import PRODUCER_OPTIONS  # noqa: E402
from ingest.topics import ensure_topics  # noqa: E402
from tests.vidpulse_process import VidpulseProcess, free_port  # noqa: E402

ACCOUNT = "bench"
LUA = ROOT / "bench" / "track.lua"
DEFAULT_JSON = ROOT / "bench" / "results" / "throughput.json"
PARTITIONS = 3  # vidpulse's default VIDPULSE_TOPIC_PARTITIONS; the baselines use the same
# The catch-up parts: --parts name -> (what the report calls it, its key in the results)
CATCH_UPS = {"worker": ("worker catching up", "worker"),
             "worker-server": ("worker catching up on a ClickHouse server", "worker_server")}
# The bench raises the per-account request limit (default 5000/s) so it measures speed, not the limit.
SETTINGS = {"rate_limit_account": "10000000/second", "rate_limit_ip": "10000000/second"}


# --------------------------------------------------------------------------- machine state

def machine_state() -> dict[str, Any]:
    """Load averages and the busiest other processes: other people use this machine."""
    load = os.getloadavg()
    return {"at": dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S"), "load": [round(x, 2) for x in load],
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


# --------------------------------------------------------------------------- wrk

def cpu_seconds(pid: int | list[int] | None) -> float:
    """CPU time of one process, or summed over several (the split topology), children included."""
    total = 0.0
    for one in [] if pid is None else [pid] if isinstance(pid, int) else pid:
        process = psutil.Process(one)
        for each in (process, *process.children(recursive=True)):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def rss_mb(pids: list[int]) -> float:
    """Resident memory of processes (and their children), summed, in MiB."""
    processes = [psutil.Process(pid) for pid in pids]
    return sum(each.memory_info().rss for process in processes
               for each in (process, *process.children(recursive=True))) / 2**20


def run_wrk(url: str, events: int, seconds: float, connections: int, tag: str, threads: int = 1,
            pid: int | list[int] | None = None, rate: float = 0) -> dict[str, Any]:
    """One wrk run against ``url`` (POST /v1/track bodies from bench/track.lua); its RESULT line, parsed. With
    ``pid``, also the server's CPU time per answered request: on a shared machine, the figure that other
    people's load disturbs least."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: `apt-get install -y wrk` (make bench-throughput does it)")
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "--latency",
               "-s", str(LUA), f"{url}/v1/track", "--", str(events), tag, ACCOUNT]
    if rate:
        command.append(f"{rate / threads:g}")  # track.lua paces each thread
    before = machine_state()
    cpu_before = cpu_seconds(pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    cpu = cpu_seconds(pid) - cpu_before
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    seconds_run = result["duration_us"] / 1e6
    ok = result["codes"].get("202", 0)
    result.update(events_per_request=events, seconds=seconds_run, rps=ok / seconds_run,
                  events_per_s=(result["accepted"] or ok * events) / seconds_run,
                  cpu_ms_per_request=1000 * cpu / ok if pid and ok else None,
                  cpu_share=cpu / seconds_run if pid else None,
                  machine_before=before, machine_after=machine_state())
    return result


# --------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of a process's /metrics."""
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            try:
                values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            except ValueError:
                continue
    return values


def lag(metrics: dict[str, float]) -> float:
    return sum(value for name, value in metrics.items() if name.startswith("vidpulse_worker_consumer_lag_messages{"))


def raw_rows(metrics: dict[str, float]) -> float:
    """Events written to events_raw and then to events_stream (whose views fill the tables the API's totals
    read: waiting for events_raw alone raced the API on a ClickHouse server)."""
    return min(metrics.get(f'vidpulse_worker_rows_written_total{{table="{table}"}}', 0.0)
               for table in ("events_raw", "events_stream"))


def accepted_counts(metrics: dict[str, float]) -> tuple[int, int]:
    """(202 answers, events accepted) by the tracker's own counters."""
    return (int(metrics.get('vidpulse_tracker_beacons_total{status="202"}', 0)),
            int(metrics.get("vidpulse_tracker_events_accepted_total", 0)))


def settled_counts(url: str) -> tuple[int, int]:
    """The tracker's counters once requests wrk left in flight are done (unchanged for 3 s: a loaded machine
    answers a 200-event batch in up to ~2 s): they count to the run that sent them, not to the next."""
    last, since = accepted_counts(scrape(url)), time.monotonic()
    while time.monotonic() - since < 3:
        time.sleep(0.5)
        now = accepted_counts(scrape(url))
        if now != last:
            last, since = now, time.monotonic()
    return last


# --------------------------------------------------------------------------- profiles

def py_spy() -> str | None:
    for candidate in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


class Profiler:
    """py-spy sampling one process for a fixed time, in raw (collapsed stack) format."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        tool = py_spy()
        if tool is None:
            raise RuntimeError("py-spy is not installed: `.venv/bin/pip install py-spy==0.4.3` (pyproject's bench extra)")
        self.out = out
        self.proc = subprocess.Popen([tool, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                                      "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> dict[str, Any]:
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return summarize_profile(self.out) if self.out.exists() else {"error": "py-spy wrote nothing"}


def summarize_profile(path: Path, top: int = 40) -> dict[str, Any]:
    """Self and inclusive shares of the samples by function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        # idle: the event loop waiting in select/epoll
        if frames and ("select (selectors.py" in frames[-1] or "poll (" in frames[-1] or "_run_once" in frames[-1]
                       and len(frames) < 6 and "select" in frames[-1]):
            frames.append("<idle>")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = lambda counter: [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]  # noqa: E731
    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module path relative to site-packages or the repo)``."""
    match = re.match(r"^(.*) \((.*):\d+\)$", frame.strip())
    if not match:
        return frame.strip()
    function, path = match.groups()
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"


# --------------------------------------------------------------------------- the HTTP baseline

def serve_baseline(bootstrap: str, topic: str, port: int) -> None:
    """The bare endpoint: body in, produced with the tracker's producer settings, 202 after the ack."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from vidpulse.cli import serve

    state: dict[str, Any] = {"n": 0}

    async def track(request: Request) -> Response:
        body = await request.body()
        state["n"] += 1
        await (await state["producer"].send(topic, body, key=state["n"].to_bytes(8, "big")))
        return Response(b'{"accepted":0,"rejected":0,"errors":[]}', status_code=202, media_type="application/json")

    async def healthz(_: Request) -> Response:
        return Response(b"ok")

    async def lifespan(_: Any):  # type: ignore[no-untyped-def]
        await ensure_topics(bootstrap, [topic], PARTITIONS)
        state["producer"] = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
        await state["producer"].start()
        try:
            yield
        finally:
            await state["producer"].stop()

    import contextlib
    app = Starlette(routes=[Route("/v1/track", track, methods=["POST"]), Route("/healthz", healthz)],
                    lifespan=contextlib.asynccontextmanager(lifespan))
    serve(app, "127.0.0.1", port)


class BaselineServer:
    def __init__(self, bootstrap: str, topic: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "baseline-http.log"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-baseline", bootstrap, topic,
                                      str(self.port)], stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the baseline endpoint exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the baseline endpoint did not start within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --------------------------------------------------------------------------- the consume baseline

async def consume_and_decode(bootstrap: str, topic: str) -> dict[str, Any]:
    """Reads the whole topic from offset 0 and decodes every message with orjson: the floor of a worker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        messages = events = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    events += len(orjson.loads(record.value)["events"])
                    messages += 1
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await consumer.stop()
    return {"messages": messages, "events": events, "seconds": elapsed, "events_per_s": events / elapsed,
            "cpu_us_per_event": 1e6 * cpu / max(1, events),
            "messages_per_s": messages / elapsed}


def faust_floor(bootstrap: str, topic: str, messages: int) -> dict[str, Any]:
    """``bench/faust_floor.py`` on the same backlog: the worker's Faust app with an agent that only decodes."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("faust_floor.py")), "--bootstrap", bootstrap,
                           "--topic", topic, "--messages", str(messages), "--partitions", str(PARTITIONS)],
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"faust_floor.py exited {done.returncode}: {done.stderr.strip()[-500:]}"}
    return orjson.loads(lines[-1])


# --------------------------------------------------------------------------- exactness

def totals(process: VidpulseProcess, since_ms: int) -> dict[str, float]:
    response = httpx.get(f"{process.url}/v1/events/accounts/{ACCOUNT}", auth=process.auth, timeout=60,
                         params={"dimensions": "account", "metrics": "video_view,video_seconds_viewed",
                                 "from": str(since_ms)})
    response.raise_for_status()
    data = response.json()["data"]
    return data[0]["totals"] if data else {"video_view": 0, "video_seconds_viewed": 0}


def expected_totals(runs: list[dict[str, Any]]) -> dict[str, float]:
    """From the tracker's counters per run: each batch holds one view and (events - 2) heartbeats of 1 s."""
    views = sum(run["server_batches"] for run in runs)
    seconds = sum(run["server_batches"] * max(0, run["events_per_request"] - 2) for run in runs)
    return {"video_view": views, "video_seconds_viewed": float(seconds)}


def check_run_counts(run: dict[str, Any]) -> list[str]:
    """The tracker's counters against wrk's: a 202 wrk saw must be one the tracker counted, events too. Requests
    still in flight when wrk stopped may have been accepted without wrk seeing the answer."""
    problems = []
    in_flight = run["sent"] - run["requests"]
    ok = run["codes"].get("202", 0)
    if not ok <= run["server_batches"] <= ok + in_flight:
        problems.append(f"{run['label']}: tracker counted {run['server_batches']} 202s, wrk saw {ok} (+{in_flight} in flight)")
    if run["server_events"] != run["server_batches"] * run["events_per_request"]:
        problems.append(f"{run['label']}: {run['server_events']} events accepted in {run['server_batches']} batches of "
                        f"{run['events_per_request']}: some were rejected")
    if run["accepted"] != ok * run["events_per_request"]:
        problems.append(f"{run['label']}: the 202 bodies accepted {run['accepted']} events of {ok} batches")
    other = {code: n for code, n in run["codes"].items() if code != "202"}
    if other or any(run["errors"].values()):
        problems.append(f"{run['label']}: other answers {other}, errors {run['errors']}")
    return problems


# --------------------------------------------------------------------------- parts

def drive_tracker(url: str, args: argparse.Namespace, sizes: list[int], tag: str, label: str,
                  profile_pid: int | None, pid: int | None, metrics_url: str | None) -> list[dict[str, Any]]:
    runs = []
    run_wrk(url, 20, args.warmup, args.connections, f"{tag}w")  # warm-up: not reported, counted by the server
    for size in sizes:
        before = settled_counts(metrics_url) if metrics_url else (0, 0)
        profiler = None
        if profile_pid and size == 20:
            profiler = Profiler(profile_pid, args.seconds - 1, args.json.with_name(f"{args.json.stem}-{label}.profile.txt"))
        print(f"  {label}: {size} events/request for {args.seconds:g} s ...", file=sys.stderr)
        run = run_wrk(url, size, args.seconds, args.connections, f"{tag}{size}", pid=pid)
        run["label"] = f"{label} x{size}"
        if profiler:
            run["profile"] = profiler.finish()
        if metrics_url:
            after = settled_counts(metrics_url)
            run["server_batches"], run["server_events"] = after[0] - before[0], after[1] - before[1]
        print("  " + fmt_run(run), file=sys.stderr)
        runs.append(run)
    return runs


def wait_until_written(url: str, expected_events: int, timeout_s: float, samples: list[dict[str, Any]],
                       started: float) -> float | None:
    """Polls a worker's /metrics until ``expected_events`` rows are in events_raw; the time it happened."""
    first_consumed: float | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = scrape(url)
        now = time.monotonic()
        consumed = metrics.get("vidpulse_worker_events_consumed_total", 0)
        if consumed and first_consumed is None:
            first_consumed = now
        samples.append({"t": round(now - started, 2), "consumed": consumed, "written": raw_rows(metrics),
                        "lag": lag(metrics), "open_sessions": metrics.get("vidpulse_worker_open_sessions", 0)})
        if raw_rows(metrics) >= expected_events:
            return now
        time.sleep(0.5)
    return None


def insert_waits(metrics: dict[str, float], events: int) -> dict[str, float]:
    """µs per event the worker spent awaiting each table's inserts (its latency histogram's sums): the share of
    its wall time the database, not its own CPU, decided."""
    prefix = 'vidpulse_worker_insert_latency_seconds_sum{table="'
    return {name[len(prefix):-2]: round(1e6 * value / max(1, events), 2)
            for name, value in sorted(metrics.items()) if name.startswith(prefix)}


def measure_catch_up(worker: VidpulseProcess, expected_events: int, args: argparse.Namespace,
                     engine_pid: int | None = None) -> dict[str, Any]:
    """Starts ``worker`` on a backlog and times it from its first consumed event until every event is in
    events_raw; its CPU per event, and a separate ClickHouse server's (``engine_pid``) when there is one."""
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"events": expected_events}
    started = time.monotonic()
    profiler = None
    try:
        worker.start()
        result["ready_after_s"] = time.monotonic() - started
        cpu_ready = cpu_seconds(worker.proc.pid if worker.proc else None)
        engine_ready = cpu_seconds(engine_pid)
        if args.profile:
            assert worker.proc is not None
            profiler = Profiler(worker.proc.pid, args.seconds, args.json.with_name(
                f"{args.json.stem}-worker{'-server' if engine_pid else ''}.profile.txt"))
        done_at = wait_until_written(worker.url, expected_events, args.catch_up_timeout, samples, started)
        if profiler:
            result["profile"] = profiler.finish()
        first = next((s["t"] for s in samples if s["consumed"]), None)
        result.update(samples=samples, done=done_at is not None, machine=machine_state())
        if done_at is not None and first is not None:
            # the consumed counter moves at flush time: measure from the sample before the first movement
            t0 = max(0.0, first - 0.5)
            result["seconds"] = done_at - started - t0
            result["events_per_s"] = expected_events / result["seconds"]
            result["seconds_from_spawn"] = done_at - started
        result["cpu_us_per_event"] = 1e6 * (cpu_seconds(worker.proc.pid if worker.proc else None) - cpu_ready) \
            / max(1, expected_events)
        if engine_pid is not None:
            result["engine_cpu_us_per_event"] = 1e6 * (cpu_seconds(engine_pid) - engine_ready) / max(1, expected_events)
        if done_at is not None:
            result["insert_wait_us_per_event"] = insert_waits(scrape(worker.url), expected_events)
        proc = psutil.Process(worker.proc.pid) if worker.proc else None
        result["rss_mb"] = proc.memory_info().rss / 2**20 if proc else None
        result["log_warnings"] = log_warnings(worker.log_path)[:5]
    finally:
        if profiler and profiler.proc.poll() is None:
            profiler.proc.kill()
        worker.stop()
    return result


def worker_catch_up(bootstrap: str, run_id: str, workdir: Path, expected_events: int, args: argparse.Namespace,
                    keys: dict[str, str]) -> dict[str, Any]:
    """``vidpulse worker`` on the tracker's topic from offset 0, then ``vidpulse api`` on its database."""
    worker = VidpulseProcess(bootstrap, workdir, run_id, command="worker", accounts=(ACCOUNT,), **SETTINGS)
    worker.provision((ACCOUNT,))
    keys.update(worker.auth.keys)
    result = measure_catch_up(worker, expected_events, args)
    api = VidpulseProcess(bootstrap, workdir, run_id, command="api", accounts=(), **SETTINGS)
    api.auth.keys.update(keys)
    try:
        api.start()
        result["totals"] = totals(api, args.since_ms)
    finally:
        api.stop()
    return result


def worker_on_server(bootstrap: str, run_id: str, workdir: Path, expected_events: int,
                     args: argparse.Namespace) -> dict[str, Any]:
    """The same backlog caught up by ``vidpulse worker`` writing to a ClickHouse server (deploy/clickhouse/), in a
    consumer group of its own: the engine's inserts, views and merges then run in the server's process, not the
    worker's. Then ``vidpulse api`` on that server."""
    from tests.clickhouse_server import ClickHouseServer
    from tests.topology import Topology

    clickhouse = ClickHouseServer(workdir / "clickhouse")
    topology = Topology(workdir, bootstrap, clickhouse, run_id, trackers=0, workers=1, apis=1, replication=1,
                        topic_partitions=str(PARTITIONS), worker_group=f"test-{run_id}.worker-server", **SETTINGS)
    try:
        clickhouse.start()
        topology.migrate()
        topology.provision((ACCOUNT,))
        result = measure_catch_up(topology.workers[0], expected_events, args,
                                  engine_pid=clickhouse.pid)
        topology.apis[0].start()
        result["totals"] = totals(topology.apis[0], args.since_ms)
        return result
    finally:
        topology.stop()
        if clickhouse.running():
            clickhouse.stop()


def all_in_one(bootstrap: str, run_id: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``vidpulse up`` as one process (VIDPULSE_UP_PROCESSES=one; its split default is what ``split`` measures, by
    hand) under load at 20 events per request; the worker's lag every second; the totals after."""
    process = VidpulseProcess(bootstrap, workdir, run_id, accounts=(ACCOUNT,), up_processes="one", **SETTINGS)
    process.provision((ACCOUNT,))
    try:
        started = time.monotonic()
        process.start()
        startup = {"ready_s": time.monotonic() - started}
        assert process.proc is not None
        return under_load(process.url, process.url, process, {"up": process.proc.pid}, "up", startup, args,
                          [process.log_path])
    finally:
        process.stop()


def supervised(bootstrap: str, run_id: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``vidpulse up`` in its default form: the supervisor (vidpulse/supervisor.py) with a ClickHouse server on its
    folder and the tracker, worker and API as its children; the same load as ``up``. Ready when the supervisor
    says so (every part's /readyz)."""
    tracker_port, worker_port = free_port(), free_port()
    process = VidpulseProcess(bootstrap, workdir, run_id, accounts=(ACCOUNT,), up_processes="split",
                              up_tracker_port=str(tracker_port), up_worker_port=str(worker_port), **SETTINGS)
    process.provision((ACCOUNT,))  # into the folder the supervisor's server then opens
    try:
        started = time.monotonic()
        process.start()
        while "vidpulse up: ready in" not in process.log_tail(100_000):
            if time.monotonic() - started > 180 or (process.proc and process.proc.poll() is not None):
                raise RuntimeError(f"vidpulse up (split) did not get ready:\n{process.log_tail()}")
            time.sleep(0.1)
        startup = {"ready_s": time.monotonic() - started}
        assert process.proc is not None
        return under_load(f"http://127.0.0.1:{tracker_port}", f"http://127.0.0.1:{worker_port}", process,
                          {"up": process.proc.pid}, "supervised", startup, args, [process.log_path])
    finally:
        process.stop()


def split(bootstrap: str, run_id: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same load on a ClickHouse server and one ``vidpulse tracker``, ``worker`` and ``api``, each its own
    process (tests/topology.py: docker-compose.yml's commands and environment), on ``up``'s topic setup."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.clickhouse_server import ClickHouseServer
    from tests.topology import Topology

    clickhouse = ClickHouseServer(workdir / "clickhouse")
    topology = Topology(workdir, bootstrap, clickhouse, run_id, trackers=1, workers=1, apis=1, replication=1,
                        topic_partitions=str(PARTITIONS), **SETTINGS)
    startup: dict[str, Any] = {}
    try:
        began = time.monotonic()
        clickhouse.start()
        startup["clickhouse_s"] = time.monotonic() - began
        topology.migrate()
        startup["migrate_s"] = time.monotonic() - began - startup["clickhouse_s"]
        topology.provision((ACCOUNT,))  # as for up: before the clock, not part of a start
        processes = {"tracker": topology.trackers[0], "worker": topology.workers[0], "api": topology.apis[0]}
        began_processes = time.monotonic()

        def start(role: str) -> tuple[str, float]:
            processes[role].start()
            return role, time.monotonic() - began_processes

        with ThreadPoolExecutor(3) as pool:  # all three at once, as a supervisor would start them
            startup.update({f"{role}_s": seconds for role, seconds in pool.map(start, processes)})
        startup["ready_s"] = startup["clickhouse_s"] + startup["migrate_s"] + max(
            startup[f"{role}_s"] for role in processes)
        pids = {"clickhouse": clickhouse.pid,
                **{role: process.proc.pid for role, process in processes.items() if process.proc}}
        return under_load(processes["tracker"].url, processes["worker"].url, processes["api"], pids, "split", startup, args,
                          [process.log_path for process in processes.values()])
    finally:
        topology.stop()
        if clickhouse.running():
            clickhouse.stop()


def under_load(tracker_url: str, worker_url: str, api: VidpulseProcess, pids: dict[str, int], label: str,
               startup: dict[str, Any], args: argparse.Namespace, logs: list[Path]) -> dict[str, Any]:
    """wrk at 20 events per request on the tracker; the worker's lag and every process's memory every second;
    the time from the load's end until every accepted event is in events_raw and events_stream (sampled every
    0.25 s); the API's totals. CPU is also read from the start of the load until every event is written: a
    worker that lags does its share after the load."""
    result: dict[str, Any] = {"startup": startup, "rss_idle_mb": rss_mb(list(pids.values()))}
    run_wrk(tracker_url, 20, args.warmup, args.connections, f"{label[0]}w", rate=args.up_rate)
    before = settled_counts(tracker_url)
    samples: list[dict[str, Any]] = []
    load_ended: list[float] = []  # set when wrk returns: samples after it are the drain
    stop = False

    def sample_lag() -> None:
        while not stop:
            try:
                metrics = scrape(worker_url)
                samples.append({"t": round(time.monotonic() - started, 2), "lag": lag(metrics),
                                "written": raw_rows(metrics), "rss_mb": rss_mb(list(pids.values())),
                                "oldest_pending_s": metrics.get("vidpulse_worker_oldest_pending_batch_age_seconds", 0)})
            except (httpx.HTTPError, psutil.Error):
                pass
            time.sleep(1 if not load_ended else 0.25)

    import threading
    sampler = threading.Thread(target=sample_lag, daemon=True)
    paced = f" at {args.up_rate:g} requests/s" if args.up_rate else ""
    print(f"  {label}: 20 events/request{paced} for {args.up_seconds:g} s ...", file=sys.stderr)
    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    started = time.monotonic()
    sampler.start()
    run = run_wrk(tracker_url, 20, args.up_seconds, args.connections, f"{label}20", pid=list(pids.values()),
                  rate=args.up_rate)
    load_ended.append(time.monotonic() - started)
    after = settled_counts(tracker_url)
    run.update(label=f"{label} x20", server_batches=after[0] - before[0], server_events=after[1] - before[1])
    _, accepted = after
    done = wait_until_written(worker_url, accepted, args.catch_up_timeout, [], started)
    stop = True
    sampler.join()
    # from the end of the load to the first sample (every 0.25 s after the load) with every event written
    written_at = next((sample["t"] for sample in samples if sample["written"] >= accepted), None)
    run["drain_s"] = max(0.0, (written_at if written_at is not None else done - started) - load_ended[0]) \
        if done else None
    run["offered_rps"] = args.up_rate or None
    run["sustained_rps"] = run["server_batches"] / (run["seconds"] + run["drain_s"]) if run["drain_s"] is not None \
        else None
    run["lag"] = [sample for sample in samples if sample["t"] <= load_ended[0]]
    run["drain"] = [sample for sample in samples if sample["t"] > load_ended[0]]
    result["rss_max_mb"] = max((sample["rss_mb"] for sample in samples), default=None)
    # until written: the settle wait (3 s of idle timers) may be in it too, a little in the processes' disfavour
    cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
    result["cpu_s_until_written"] = cpu
    result["cpu_ms_per_request_until_written"] = 1000 * sum(cpu.values()) / max(1, after[0] - before[0])
    result["run"] = run
    result["expected"] = {"video_view": after[0], "video_seconds_viewed": float(after[0] * 18)}
    result["totals"] = totals(api, args.since_ms)
    result["log_warnings"] = [line for path in logs for line in log_warnings(path)][:5]
    return result


# --------------------------------------------------------------------------- memory per open session

def session_memory(sessions: int) -> dict[str, Any]:
    """tracemalloc's growth while the real sink holds ``sessions`` open sessions of 20 events each."""
    from prometheus_client import CollectorRegistry

    from aggregations.metrics import WorkerMetrics
    from aggregations.sink import EventSink, SinkConfig
    from ingest.models import decode_batch

    now = int(time.time() * 1000)

    def batch(n: int) -> bytes:
        events = [{"id": "1", "type": "view", "ts": now - 60_000, "event_time_ms": now - 60_000},
                  {"id": "2", "type": "first_frame", "ts": now - 59_000, "event_time_ms": now - 59_000, "startup_ms": 300}]
        events += [{"id": str(i), "type": "heartbeat", "ts": now - 60_000 + i * 1000, "event_time_ms": now - 60_000 + i * 1000,
                    "watched_ms": 1000, "position": float(i)} for i in range(3, 21)]
        return orjson.dumps({"account": ACCOUNT, "player": "web", "session": f"memory-{n:09d}", "session_key": n + 1,
                             "fingerprint": n * 7919, "video": f"video-{n % 50}", "live": False, "tz": "UTC", "user": "",
                             "domain": "www.example.com", "duration_s": None, "country": "DE", "continent": "EU",
                             "subdivision": "", "device_type": "desktop", "os": "Windows", "browser": "Chrome",
                             "is_bot": False, "received_at_ms": now, "events": events})

    async def fill() -> tuple[int, int]:
        config = SinkConfig(consumer_group="g", topic="t", session_timeout_ms=60_000, close_grace_ms=10_000,
                            flush_interval_s=1.0, flush_max_events=20_000)
        async def ack(_: Any) -> None: ...
        sink = EventSink(KeepNothing(), config, WorkerMetrics(CollectorRegistry()), ack=ack,  # type: ignore[arg-type]
                         caught_up=lambda partition, offset: True)
        await sink.add(0, 0, decode_batch(batch(sessions + 1)), None)  # warm caches first
        await sink.flush_all()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(sessions):
            await sink.add(0, n + 1, decode_batch(batch(n)), None)
        await sink.flush_all()
        after = tracemalloc.get_traced_memory()[0]
        held = len(sink._sessions)  # noqa: SLF001 - the bench measures the cache itself
        tracemalloc.stop()
        return after - before, held

    grown, held = asyncio.run(fill())
    return {"sessions": held, "bytes": grown, "bytes_per_session": grown / max(1, held - 1)}


# --------------------------------------------------------------------------- report

def fmt_run(run: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    lat = run["latency_us"]
    ratio = f"  {run['rps'] / baseline['rps']:5.2f}x baseline" if baseline else ""
    if run.get("cpu_ms_per_request"):
        ratio += f"  cpu {run['cpu_ms_per_request']:.2f} ms/req ({100 * run['cpu_share']:.0f} % of a core)"
        if baseline and baseline.get("cpu_ms_per_request"):
            ratio += f" = {baseline['cpu_ms_per_request'] / run['cpu_ms_per_request']:.2f}x baseline per CPU"
    return (f"{run['label']:<22} {run['rps']:8.0f} req/s {run['events_per_s']:9.0f} events/s   p50 {lat['p50'] / 1000:6.1f} ms"
            f"  p99 {lat['p99'] / 1000:6.1f} ms{ratio}   load {run['machine_before']['load'][0]:.2f}->"
            f"{run['machine_after']['load'][0]:.2f}")


def fmt_catch_up(title: str, run: dict[str, Any], consume: dict[str, Any] | None,
                 expected: dict[str, float], floor: dict[str, Any] | None = None) -> list[str]:
    """A catch-up part's lines; CPU per event counts a separate ClickHouse server's too when there is one."""
    if not run.get("events_per_s"):
        return [f"{title}: did not finish within the timeout ({run['samples'][-1:]})",
                f"  API totals {run.get('totals')} / expected {expected}"]
    engine = run.get("engine_cpu_us_per_event")
    cpu = run["cpu_us_per_event"] + (engine or 0)
    return [f"{title}: {run['events']} events in {run['seconds']:.1f} s = {run['events_per_s']:.0f} events/s"
            + (f" = {run['events_per_s'] / consume['events_per_s']:.3f}x consume+decode" if consume else "")
            + (f" = {run['events_per_s'] / floor['events_per_s']:.2f}x Faust+decode" if floor else "")
            + f" ({run['seconds_from_spawn']:.1f} s from spawn, RSS {run['rss_mb']:.0f} MiB, load "
            f"{run['machine']['load'][0]:.2f}), cpu {run['cpu_us_per_event']:.1f} us/event"
            + (f" in the worker + {engine:.1f} in the server" if engine is not None else "")
            + (f" = {consume['cpu_us_per_event'] / cpu:.3f}x consume+decode per CPU" if consume else ""),
            *(["  awaiting inserts, us/event: " + ", ".join(f"{table} {us}" for table, us in waits.items())
               + f" (all {sum(waits.values()):.1f})"] if (waits := run.get("insert_wait_us_per_event")) else []),
            f"  API totals {run.get('totals')} / expected {expected}"]


def report(results: dict[str, Any]) -> str:
    lines = [f"vidpulse throughput - {results['meta']['date']}, {results['meta']['cpus']} cores, "
             f"{results['meta']['platform']}", f"uvicorn: {results['meta']['uvicorn']}", ""]
    base = results.get("http_baseline")
    if base:
        lines.append(fmt_run(base))
    for run in results.get("tracker", []):
        lines.append(fmt_run(run, base if run["events_per_request"] == 20 else None))
    consume = results.get("consume_baseline")
    if consume:
        lines.append(f"consume+decode baseline: {consume['events']} events in {consume['seconds']:.2f} s = "
                     f"{consume['events_per_s']:.0f} events/s ({consume['messages_per_s']:.0f} messages/s), "
                     f"cpu {consume['cpu_us_per_event']:.1f} us/event")
    floor = results.get("faust_baseline")
    if floor and "error" not in floor:
        lines.append(f"Faust+decode baseline (the worker's app, an agent that only decodes): {floor['events']} events in "
                     f"{floor['seconds']:.2f} s = {floor['events_per_s']:.0f} events/s ({floor['messages_per_s']:.0f} "
                     f"messages/s), cpu {floor['cpu_us_per_event']:.1f} us/event")
    if results.get("topic_copies"):
        lines.append(f"  the topic holds {results['topic_copies']} events twice (Kafka acknowledged after the spool took "
                     "them); the worker must drop them as retries")
    for title, key in CATCH_UPS.values():
        if results.get(key):
            lines += fmt_catch_up(title, results[key], consume, results["expected"],
                                  floor if floor and "error" not in floor else None)
    for part in ("up", "supervised", "split"):
        up = results.get(part)
        if not up:
            continue
        run = up["run"]
        lines.append(fmt_run(run, base))
        lags = [sample["lag"] for sample in run["lag"]]
        lines.append(f"  worker lag during the run: max {max(lags, default=0):.0f} messages, last {lags[-1] if lags else 0:.0f};"
                     f" drained {run['drain_s']:.1f} s after the load stopped" if run["drain_s"] is not None
                     else "  the worker did not drain within the timeout")
        if run["drain_s"] is not None:
            offered = f"offered {run['offered_rps']:g} req/s, " if run.get("offered_rps") else "unpaced, "
            lines.append(f"  sustained ({offered}accepted requests over the load and its drain): "
                         f"{run['sustained_rps']:.0f} req/s")
        steps = ", ".join(f"{name[:-2]} {seconds:.1f} s" for name, seconds in up["startup"].items() if name != "ready_s")
        lines.append(f"  ready after {up['startup']['ready_s']:.1f} s" + (f" ({steps})" if steps else "")
                     + f"; resident memory {up['rss_idle_mb']:.0f} MiB after start, up to "
                     f"{up['rss_max_mb'] or 0:.0f} MiB under load (all processes)")
        shares = ", ".join(f"{role} {seconds:.1f} s" for role, seconds in up["cpu_s_until_written"].items())
        lines.append(f"  cpu from the load's start until every event is written: "
                     f"{up['cpu_ms_per_request_until_written']:.2f} ms/request ({shares})")
        lines.append(f"  API totals {up['totals']} / expected {up['expected']}")
    memory = results.get("memory")
    if memory:
        lines.append(f"sessionizer: {memory['sessions']} open sessions of 20 events: "
                     f"{memory['bytes_per_session']:.0f} bytes per session (tracemalloc)")
    for part in ("baseline", "tracker", "worker", "worker_server"):
        profile = results.get(f"profile_{part}")
        if profile and "self" in profile:
            lines.append(f"profile of the {part} ({profile['samples']} samples), top self time:")
            lines += [f"  {share:5.1f} %  {name}" for name, share in profile["self"][:12]]
    lines.append("")
    problems = results.get("problems", [])
    lines.append("exactness: " + ("PASS (API totals equal the tracker's acknowledged events)" if not problems
                                  else "FAIL\n  " + "\n  ".join(problems)))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="each measured wrk run (default 15)")
    parser.add_argument("--warmup", type=float, default=3, help="an unreported wrk run before each target (default 3)")
    parser.add_argument("--up-seconds", type=float, default=30, help="the vidpulse up and split runs (default 30)")
    parser.add_argument("--up-rate", type=float, default=0,
                        help="offer the up, supervised and split loads at this many requests/s (track.lua paces wrk) "
                             "instead of as fast as they answer: whether the worker keeps up at that rate (default: "
                             "unpaced)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--sizes", default="20,1,200", help="events per request of the tracker runs (default 20,1,200)")
    parser.add_argument("--parts", default="http,tracker,consume,worker,up,memory",
                        help="which parts to run (default: http,tracker,consume,worker,up,memory; also worker-server, "
                             "supervised and split; up, supervised and split run in the order given)")
    parser.add_argument("--catch-up-timeout", type=float, default=600, help="give the worker this long (default 600)")
    parser.add_argument("--memory-sessions", type=int, default=20_000, help="sessions for the memory part (default 20000)")
    parser.add_argument("--profile", action="store_true", help="py-spy the bare endpoint, the tracker (20 events/request) "
                        "and the worker")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"numbers written here (default {DEFAULT_JSON})")
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    args.since_ms = int(time.time() * 1000) - 2 * 3600 * 1000
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "--serve-baseline":
        serve_baseline(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    args = parse_args(argv)
    parts = set(args.parts.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import uvicorn

    from vidpulse.cli import server_flavour

    run_id = f"tput{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {"meta": {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "uvicorn": f"{uvicorn.__version__}, {server_flavour()}", "run_id": run_id, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "machine": machine_state()}}
    try:
        bootstrap, _ = find_broker()
    except RuntimeError as exc:
        print(f"throughput: {exc}", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="vidpulse-throughput-"))
    failed = True
    problems: list[str] = []
    keys: dict[str, str] = {}
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
        if "http" in parts:
            print("HTTP baseline ...", file=sys.stderr)
            baseline = BaselineServer(bootstrap, f"test-{run_id}.baseline", workdir)
            try:
                run_wrk(baseline.url, 20, args.warmup, args.connections, "bw")
                profiler = Profiler(baseline.proc.pid, args.seconds - 1, args.json.with_name(
                    f"{args.json.stem}-baseline.profile.txt")) if args.profile else None
                results["http_baseline"] = run_wrk(baseline.url, 20, args.seconds, args.connections, "b20",
                                                   pid=baseline.proc.pid)
                if profiler:
                    results["profile_baseline"] = profiler.finish()
                results["http_baseline"]["label"] = "baseline x20"
                print("  " + fmt_run(results["http_baseline"]), file=sys.stderr)
            finally:
                baseline.stop()
        if "tracker" in parts:
            print("vidpulse tracker ...", file=sys.stderr)
            (workdir / "tracker").mkdir()
            tracker = VidpulseProcess(bootstrap, workdir / "tracker", run_id, command="tracker", accounts=(ACCOUNT,),
                                      **SETTINGS)
            try:
                tracker.start()
                assert tracker.proc is not None
                runs = drive_tracker(tracker.url, args, sizes, "t", "tracker", tracker.proc.pid if args.profile else None,
                                     tracker.proc.pid, tracker.url)
                final = settled_counts(tracker.url)
                results["tracker"] = runs
                results["tracker_totals"] = {"batches": final[0], "events": final[1]}
                for run in runs:
                    problems += check_run_counts(run)
                # the warm-up run (20 events per request) is accepted too: everything in the topic counts
                warm = {"events_per_request": 20, "server_batches": final[0] - sum(r["server_batches"] for r in runs)}
                results["expected"] = expected_totals([*runs, warm])
                if args.profile:
                    results["profile_tracker"] = next((r["profile"] for r in runs if "profile" in r), None)
            finally:
                tracker.stop()
        if "consume" in parts and "tracker" in parts:
            print("consume + decode baseline ...", file=sys.stderr)
            results["consume_baseline"] = asyncio.run(consume_and_decode(bootstrap, f"test-{run_id}.events"))
            print("Faust + decode baseline ...", file=sys.stderr)
            results["faust_baseline"] = faust_floor(bootstrap, f"test-{run_id}.events",
                                                    results["consume_baseline"]["messages"])
            if "error" in results["faust_baseline"]:
                problems.append(f"Faust baseline: {results['faust_baseline']['error']}")
            in_topic, accepted = results["consume_baseline"]["events"], results["tracker_totals"]["events"]
            if in_topic < accepted:
                problems.append(f"the topic holds {in_topic} events, the tracker accepted {accepted}: some were lost")
            elif in_topic > accepted:
                # A batch Kafka acknowledged after the tracker had given up waiting (spool_after_s) is in the
                # topic twice, once from the send and once from the spool: the worker drops the copy as a retry.
                results["topic_copies"] = in_topic - accepted
        for part, (title, key) in CATCH_UPS.items():
            if part not in parts or "tracker" not in parts:
                continue
            print(f"{title} ...", file=sys.stderr)
            (workdir / part).mkdir()
            events = results["tracker_totals"]["events"]
            caught_up = (worker_catch_up(bootstrap, run_id, workdir / part, events, args, keys) if part == "worker"
                         else worker_on_server(bootstrap, run_id, workdir / part, events, args))
            results[key] = caught_up
            if args.profile:
                results[f"profile_{key}"] = caught_up.pop("profile", None)
            if not caught_up.get("done"):
                problems.append(f"{title}: not every accepted event was written within the timeout")
            if caught_up.get("totals") != results["expected"]:
                problems.append(f"{title}: API totals {caught_up.get('totals')} != expected {results['expected']}")
        forms = {"up": (all_in_one, "vidpulse up as one process ..."),
                 "supervised": (supervised, "vidpulse up, split (its default) ..."),
                 "split": (split, "split by hand: ClickHouse server, vidpulse tracker, worker and api ...")}
        for part in [part for part in args.parts.split(",") if part in forms]:  # in the order given
            run_form, title = forms[part]
            print(title, file=sys.stderr)
            (workdir / part).mkdir()
            results[part] = run_form(bootstrap, f"{run_id}{part[:3]}", workdir / part, args)
            problems += check_run_counts(results[part]["run"])
            if results[part]["totals"] != results[part]["expected"]:
                problems.append(f"{part}: API totals {results[part]['totals']} != expected {results[part]['expected']}")
        if "memory" in parts:
            print("sessionizer memory ...", file=sys.stderr)
            results["memory"] = session_memory(args.memory_sessions)
        results["problems"] = problems
        results["meta"]["machine_end"] = machine_state()
        print(report(results))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"numbers: {args.json}", file=sys.stderr)
        failed = bool(problems)
    except Exception as exc:  # noqa: BLE001 - any failure of the run is reported, with the work folder kept
        print(f"throughput: the run failed: {exc!r}", file=sys.stderr)
        args.keep_workdir = True
    finally:
        asyncio.run(delete_topics(bootstrap, run_id))
        keep_or_remove(workdir, args.keep_workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
