"""Live layer: how fresh the pushed figures are, what 1,000 subscribers cost, and the realtime query at 10,000 sessions.

The live API (``live-api.md``) promises: a subscriber holds a message counting a beacon within
2 s of its 202 (p95); 1,000 subscribers of one question cost about what one does; ``viewers``
is exact. This script starts one ``vidpulse up`` (default settings, its own chdb folder, port
and topics, three accounts with a secret key each, made before the start) against the real
broker and measures, in one run, while 50 steady sessions heartbeat every 10 s:

* **Fan-out**: the ``vidpulse up`` process's CPU (% of one core) and RSS over 30 s windows with 1
  WebSocket subscriber, then 1,000 of the same account and question, then 1 again; once for a
  dashboard's question (all fields) and once for a badge's (``fields=viewers``).
  ``vidpulse_live_channels`` must read 1 with 1,000 subscribers.
* **Freshness**: a beacon starting a new session every 1.3 s (not aligned to the 1 s tick);
  from its 202 to a WebSocket subscriber (``fields=viewers``) holding a message whose
  ``current.viewers`` counts it; the same for a server-sent-events subscriber of the same
  question, measured at the same time.
* **Realtime at 10,000 sessions**: 10,000 sessions posted and kept watching by a load process,
  ``/v1/realtime`` polled until ``viewers == 10000`` exactly, then 50 GETs with all fields and
  50 with ``fields=viewers`` timed; the window gauge and the RSS.

    .venv/bin/python bench/live.py [--out bench/results/live.json] [--help]

A report, not a test: the exit code is 0 whether the goals are met or not, 1 only when the run
itself failed (broker or vidpulse would not start, the process died, a part raised). See
bench/README.md for what each number means and what was observed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import websockets  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from bench.common import clean_up, find_broker, fmt, log_warnings, report_failure, summary  # noqa: E402
from ingest.simulator import COUNTRIES, DEVICES  # noqa: E402
from tests.vidpulse_process import VidpulseProcess  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "live.json"
FRESH, FANOUT, BIG = "live-fresh", "live-fanout", "live-10k"   # one account per part: their figures stay apart
FRESHNESS_GOAL_S = 2.0
CHROME = DEVICES[0].user_agent      # desktop: Chrome on Windows
FORWARDED_FOR = "8.8.8.8"           # vidpulse trusts 127.0.0.1 as a proxy: this is the "player's" address
KEY_RATE_PER_S = 40                 # below the API's default per-key rate (50/second, fixed windows)
MiB = 1 << 20
SWEEPS_S = 240.0                    # at most this long in keep-alive sweeps between timed requests


# --------------------------------------------------------------------------- the broker





# --------------------------------------------------------------------------- numbers





def now_ms() -> int:
    return int(time.time() * 1000)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values




# --------------------------------------------------------------------------- HTTP

@dataclass(frozen=True)
class Player:
    """What the tracker derives a session's dimensions from: the User-Agent and the client address."""

    user_agent: str = CHROME
    ip: str = FORWARDED_FOR


def beacon(account: str, session: str, video: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"account": account, "player": "web-player-1", "session": session, "video": video, "events": events,
            "context": {"tz": "Europe/Berlin", "page": "https://www.example.com/watch"}}


class Api:
    """The tracker and the API of one vidpulse process, over one aiohttp session (keys per account)."""

    def __init__(self, url: str, keys: dict[str, str], connections: int = 16) -> None:
        self.url, self.keys = url, keys
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                          timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self.http.close()

    async def track(self, body: dict[str, Any], player: Player, attempts: int = 5) -> float:
        """Posts one batch; returns perf_counter() at the 202 (retries a 429/503 or a broken connection)."""
        headers = {"User-Agent": player.user_agent, "X-Forwarded-For": player.ip}
        problem = ""
        for attempt in range(attempts):
            try:
                async with self.http.post(f"{self.url}/v1/track", json=body, headers=headers) as response:
                    text = await response.read()
                    if response.status == 202:
                        accepted = time.perf_counter()
                        if orjson.loads(text).get("rejected"):
                            raise RuntimeError(f"POST /v1/track rejected events: {text[:300]!r}")
                        return accepted
                    problem = f"{response.status}: {text[:300]!r}"
                    if response.status not in (429, 503):
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                problem = repr(exc)
            await asyncio.sleep(min(2.0, 0.2 * 2 ** attempt))
        raise RuntimeError(f"POST /v1/track failed: {problem}")

    async def realtime(self, account: str, fields: str | None = None) -> tuple[int, Any, float]:
        """(status, JSON answer, seconds from sending the request to the whole answer read)."""
        params = {"fields": fields} if fields else {}
        started = time.perf_counter()
        async with self.http.get(f"{self.url}/v1/realtime/accounts/{account}", params=params,
                                 headers={"Authorization": f"Bearer {self.keys[account]}"}) as response:
            body = await response.read()
        took = time.perf_counter() - started
        return response.status, orjson.loads(body) if body else None, took

    async def metrics(self) -> dict[str, float]:
        async with self.http.get(f"{self.url}/metrics") as response:
            return parse_metrics(await response.text())

    def live_url(self, account: str, fields: str | None, scheme: str = "ws") -> str:
        query = {"key": self.keys[account], **({"fields": fields} if fields else {})}
        return f"{scheme}{self.url.removeprefix('http')}/v1/live/accounts/{account}?{urlencode(query)}"


async def wait_viewers(api: Api, account: str, expected: int, timeout_s: float, interval_s: float = 1.0) -> tuple[bool, Any]:
    """Polls /v1/realtime (fields=viewers) until viewers == expected; (reached, last answer or status)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            status, answer, _ = await api.realtime(account, "viewers")
            last = answer if status == 200 else f"HTTP {status}: {answer}"
            if status == 200 and answer["current"]["viewers"] == expected:
                return True, answer
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = repr(exc)
        await asyncio.sleep(interval_s)
    return False, last


# --------------------------------------------------------------------------- subscribers

class Paced:
    """At most ``rate`` starts per second (the API limits each key per fixed one-second window)."""

    def __init__(self, rate: float) -> None:
        self.gap, self.next = 1.0 / rate, 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        self.next = max(self.next, now)
        delay, self.next = self.next - now, self.next + self.gap
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class Received:
    count: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    log: list[tuple[float, int | None]] = field(default_factory=list)   # (perf_counter, current.viewers)
    error: str = ""


def viewers_of(message: bytes | str) -> int | None:
    answer = orjson.loads(message)
    return (answer.get("current") or {}).get("viewers")


class WsSubscriber:
    """One WebSocket subscriber, as a browser would open it (key in the query, compression offered, no pings)."""

    def __init__(self, url: str, keep_log: bool) -> None:
        self.url, self.keep_log = url, keep_log
        self.got = Received()
        self.socket: Any = None
        self.task: asyncio.Task[None] | None = None

    def _take(self, message: bytes | str) -> None:
        at = time.perf_counter()
        viewers = viewers_of(message)
        got = self.got
        got.count += 1
        got.first_at = got.first_at or at
        got.last_at = at
        if self.keep_log:
            got.log.append((at, viewers))

    async def open(self, pace: Paced, attempts: int = 6) -> None:
        """Connects and takes the first message (the latest snapshot); retries a 4429 (rate limited)."""
        for attempt in range(attempts):
            await pace.wait()
            socket = await ws_connect(self.url, ping_interval=None, open_timeout=15, close_timeout=5, max_queue=16)
            first = await asyncio.wait_for(socket.recv(), 15)
            answer = orjson.loads(first)
            if "error" not in answer:
                self.socket = socket
                self._take(first)
                self.task = asyncio.create_task(self._read())
                return
            await socket.close()
            if answer.get("status") != 429 or attempt == attempts - 1:
                raise RuntimeError(f"the live WebSocket was refused: {answer}")
            await asyncio.sleep(1.0)

    async def _read(self) -> None:
        try:
            async for message in self.socket:
                self._take(message)
        except websockets.ConnectionClosed as exc:
            self.got.error = f"closed: {exc}"

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.socket.close(), 5)


class SseSubscriber:
    """One server-sent-events subscriber (key in the query, as an EventSource must)."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.got = Received()
        self.task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    async def open(self, timeout_s: float = 15) -> None:
        self.task = asyncio.create_task(self._read())
        first = asyncio.create_task(self._first.wait())
        await asyncio.wait({first, self.task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        first.cancel()
        if not self._first.is_set():
            raise RuntimeError(f"the live event stream gave no snapshot within {timeout_s:g} s: {self.got.error}")

    async def _read(self) -> None:
        try:
            async with self.http.get(self.url, headers={"Accept": "text/event-stream"},
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as response:
                if response.status != 200:
                    self.got.error = f"HTTP {response.status}: {(await response.read())[:300]!r}"
                    return
                async for line in response.content:
                    if line.startswith(b"data:"):
                        at = time.perf_counter()
                        got = self.got
                        got.count += 1
                        got.first_at = got.first_at or at
                        got.last_at = at
                        got.log.append((at, viewers_of(line[5:])))
                        self._first.set()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.got.error = repr(exc)

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# --------------------------------------------------------------------------- steady sessions

class Heartbeats:
    """Sessions that send a view, then a heartbeat every ``interval_s`` (+-20 %, as players drift) until
    stopped (each at most ``max_beats``). The drift matters: with exact intervals a session's heartbeat
    entering the last minute would cancel its heartbeat leaving it, and the minute's figures would hardly move."""

    def __init__(self, api: Api, account: str, interval_s: float, max_beats: int, seed: int = 1) -> None:
        self.api, self.account, self.interval_s, self.max_beats = api, account, interval_s, max_beats
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.failures: list[str] = []

    def start(self, session: str, video: str, player: Player, delay_s: float = 0.0, viewed: bool = False) -> None:
        self.tasks.append(asyncio.create_task(self._run(session, video, player, delay_s, viewed)))

    async def _run(self, session: str, video: str, player: Player, delay_s: float, viewed: bool) -> None:
        try:
            if not viewed:
                await asyncio.sleep(delay_s)
                await self.api.track(beacon(self.account, session, video,
                                            [{"id": "v", "type": "view", "ts": now_ms()}]), player)
                self.batches += 1
            for beat in range(1, self.max_beats + 1):
                interval = self.interval_s * self.rng.uniform(0.8, 1.2)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), interval)
                    return
                event = {"id": f"h{beat}", "type": "heartbeat", "ts": now_ms(), "watched_ms": int(interval * 1000)}
                await self.api.track(beacon(self.account, session, video, [event]), player)
                self.batches += 1
        except RuntimeError as exc:   # the steady load is not the measurement, but a gap in it is reported
            self.failures.append(f"{session}: {exc}")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --------------------------------------------------------------------------- freshness

@dataclass
class Freshness:
    accepted: list[float] = field(default_factory=list)   # perf_counter of each sample's 202
    posted_at: list[float] = field(default_factory=list)  # perf_counter when each sample's POST was sent
    ws: Received = field(default_factory=Received)
    sse: Received = field(default_factory=Received)


def delays(accepted: list[float], log: list[tuple[float, int | None]], base: int, timeout_s: float
           ) -> tuple[list[float | None], int]:
    """For sample k (k = 1..n): first message with viewers >= base + k, minus the sample's 202.

    Every sample starts one more session of an account nobody else posts to, and every session is kept
    watching, so the count only grows, by one per sample. A message that arrived before the 202 (the tail
    can read the beacon before the tracker's answer reaches this client) counts as 0 s; returns those too.
    """
    found: list[float | None] = []
    early = 0
    for k, at in enumerate(accepted, start=1):
        hit = next((seen for seen, viewers in log if viewers is not None and viewers >= base + k), None)
        if hit is None or hit - at > timeout_s:
            found.append(None)
        else:
            early += hit < at
            found.append(max(0.0, hit - at))
    return found, early


def overcounts(posted_at: list[float], log: list[tuple[float, int | None]], base: int) -> list[str]:
    """Messages counting more sessions than had been posted when they arrived (exactness)."""
    wrong = []
    for seen, viewers in log:
        posted = base + sum(1 for sent in posted_at if sent <= seen)
        if viewers is not None and viewers > posted:
            wrong.append(f"viewers {viewers} with {posted} sessions posted")
    return wrong


async def measure_freshness(api: Api, args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    keep = Heartbeats(api, FRESH, args.fresh_keepalive_s,
                      max_beats=math.ceil((args.samples * args.spacing_s + 60) / args.fresh_keepalive_s) + 2,
                      seed=args.seed)
    ws = WsSubscriber(api.live_url(FRESH, "viewers"), keep_log=True)
    sse = SseSubscriber(api.http, api.live_url(FRESH, "viewers", scheme="http"))
    pace = Paced(KEY_RATE_PER_S)
    run = Freshness(ws=ws.got, sse=sse.got)
    try:
        await ws.open(pace)
        if not args.no_sse:
            await pace.wait()
            await sse.open()
        base = ws.got.log[0][1] or 0
        started = time.perf_counter()
        for k in range(1, args.samples + 1):
            # fixed spacing, 1.3 s by default: each beacon meets the channel's 1 s tick at another phase
            await asyncio.sleep(max(0.0, started + (k - 1) * args.spacing_s - time.perf_counter()))
            session, video = f"fresh-{k:03d}-{uuid.uuid4().hex[:12]}", f"fresh-{k:03d}"
            run.posted_at.append(time.perf_counter())
            run.accepted.append(await api.track(beacon(FRESH, session, video, [{"id": "v", "type": "view",
                                                                                "ts": now_ms()}]), Player()))
            keep.start(session, video, Player(), viewed=True)
            if args.progress:
                print(f"  sample {k:3d}/{args.samples}: 202 after {time.perf_counter() - run.posted_at[-1]:.3f} s",
                      file=sys.stderr)
        deadline = time.monotonic() + args.timeout_s
        target = base + args.samples
        while time.monotonic() < deadline and not (
                _reached(ws.got, target) and (args.no_sse or _reached(sse.got, target))):
            await asyncio.sleep(0.05)
    finally:
        await ws.close()
        await sse.close()
        await keep.close()
    result.update({"base_viewers": base, "keepalive_batches": keep.batches, "keepalive_failures": keep.failures,
                   "post_202": summary([a - p for a, p in zip(run.accepted, run.posted_at, strict=True)])})
    for name, got in (("websocket", run.ws), ("sse", run.sse)):
        if name == "sse" and args.no_sse:
            continue
        found, early = delays(run.accepted, got.log, base, args.timeout_s)
        timeouts = sum(value is None for value in found)
        stats = summary([value if value is not None else args.timeout_s for value in found])
        result[name] = {"stats": stats, "timeouts": timeouts, "before_202": early, "messages": got.count,
                        "error": got.error, "overcounts": overcounts(run.posted_at, got.log, base)[:10],
                        "samples_s": found,
                        "pass": stats["p95"] <= FRESHNESS_GOAL_S and not timeouts}
    return result


def _reached(got: Received, target: int) -> bool:
    return any(viewers is not None and viewers >= target for _, viewers in got.log[-3:])


# --------------------------------------------------------------------------- fan-out

def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def loop_cpu_s(process: psutil.Process) -> float:
    """The main thread's CPU: vidpulse's event loop, where every subscriber's work is done (the process
    total also holds ClickHouse's threads: inserts and background merges, which come and go)."""
    return next((t.user_time + t.system_time for t in process.threads() if t.id == process.pid), math.nan)


def system_busy(before: Any, after: Any) -> float:
    """Share of all cores that was busy (not idle, not waiting for I/O) between two psutil.cpu_times()."""
    total = sum(after) - sum(before)
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    return 100 * (total - idle) / total if total > 0 else math.nan


class Profiler:
    """``--profile DIR``: py-spy (if installed; not a dependency) samples the server during each measured stretch."""

    def __init__(self, folder: Path | None, pid: int) -> None:
        self.folder, self.pid = folder, pid
        self.spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if folder and not self.spy:
            print("note: --profile needs py-spy (.venv/bin/pip install py-spy); not profiling", file=sys.stderr)
        if folder and self.spy:
            folder.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
        if not (self.folder and self.spy):
            return None
        return subprocess.Popen([self.spy, "record", "-p", str(self.pid), "-d", str(math.ceil(seconds)), "-r", "50",
                                 "--threads", "-f", "raw", "-o", str(self.folder / f"{name}.txt"), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def finish(spy: subprocess.Popen[bytes] | None) -> None:
        """Lets py-spy end (on its own, or on SIGINT, after which it still writes its file)."""
        if spy is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(2)
            return
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(20)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)


async def cpu_window(server: psutil.Process, seconds: float, subscribers: list[WsSubscriber],
                     profiler: Profiler | None = None, name: str = "") -> dict[str, Any]:
    """The server's CPU (% of one core) and RSS over ``seconds``, with the machine's state beside it."""
    spy = profiler.start(name, seconds) if profiler else None
    me = psutil.Process()
    rss: list[int] = []
    messages0 = sum(s.got.count for s in subscribers)
    system0, bench0, server0, loop0 = psutil.cpu_times(), cpu_s(me), cpu_s(server), loop_cpu_s(server)
    wall0 = time.perf_counter()
    end = wall0 + seconds
    while time.perf_counter() < end:
        rss.append(server.memory_info().rss)
        await asyncio.sleep(min(1.0, max(0.0, end - time.perf_counter())))
    wall = time.perf_counter() - wall0
    server_cpu, loop_cpu = cpu_s(server) - server0, loop_cpu_s(server) - loop0
    bench_cpu, system1 = cpu_s(me) - bench0, psutil.cpu_times()
    messages = sum(s.got.count for s in subscribers) - messages0
    await asyncio.to_thread(Profiler.finish, spy)
    return {"subscribers": len(subscribers), "seconds": wall, "cpu_pct": 100 * server_cpu / wall,
            "loop_cpu_pct": 100 * loop_cpu / wall,
            "rss_mib": statistics.mean(rss) / MiB, "rss_max_mib": max(rss) / MiB,
            "messages_per_s": messages / wall, "messages_per_subscriber_s": messages / wall / max(1, len(subscribers)),
            "bench_cpu_pct": 100 * bench_cpu / wall, "system_busy_pct": system_busy(system0, system1),
            "load_avg_1m": os.getloadavg()[0]}


async def measure_fanout(api: Api, server: psutil.Process, args: argparse.Namespace, profiler: Profiler,
                         question: str, result: dict[str, Any]) -> dict[str, Any]:
    """1, then ``--subscribers``, then 1 again, of one question (``question``: "all" fields or a comma list)."""
    url = api.live_url(FANOUT, None if question == "all" else question)
    tag = question.replace(",", "+")
    pace = Paced(KEY_RATE_PER_S)
    first = WsSubscriber(url, keep_log=False)
    crowd: list[WsSubscriber] = []
    result.update({"fields": question, "window_s": args.window_s})
    try:
        await first.open(pace)
        await asyncio.sleep(args.settle_s)
        print(f"  window 1: 1 subscriber, {args.window_s:g} s ...", file=sys.stderr)
        result["one"] = await cpu_window(server, args.window_s, [first], profiler, f"fanout-{tag}-1")

        print(f"  opening {args.subscribers - 1} more WebSockets ({KEY_RATE_PER_S}/s: the per-key rate) ...",
              file=sys.stderr)
        opened = time.perf_counter()
        crowd = [WsSubscriber(url, keep_log=False) for _ in range(args.subscribers - 1)]
        outcomes = await asyncio.gather(*(s.open(pace) for s in crowd), return_exceptions=True)
        failed = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        result["open_s"] = time.perf_counter() - opened
        result["open_failures"] = len(failed)
        result["open_failure_examples"] = failed[:3]
        everyone = [first, *(s for s, o in zip(crowd, outcomes, strict=True) if not isinstance(o, BaseException))]
        await asyncio.sleep(args.settle_s)
        metrics = await api.metrics()
        result["channels_with_many"] = metrics.get("vidpulse_live_channels")
        result["websocket_subscribers_gauge"] = metrics.get('vidpulse_live_subscribers{transport="websocket"}')
        print(f"  window 2: {len(everyone)} subscribers, {args.window_s:g} s ...", file=sys.stderr)
        result["many"] = await cpu_window(server, args.window_s, everyone, profiler, f"fanout-{tag}-{len(everyone)}")
        metrics = await api.metrics()
        result["channels_after_window"] = metrics.get("vidpulse_live_channels")
        result["dropped"] = {name: value for name, value in metrics.items() if name.startswith("vidpulse_live_dropped_total")}
        result["closed_by_server"] = [s.got.error for s in everyone if s.got.error][:5]
        result["silent_subscribers"] = sum(1 for s in everyone if s.got.last_at < time.perf_counter() - 15)
    finally:
        await asyncio.gather(*(s.close() for s in crowd))
    try:
        await asyncio.sleep(args.settle_s)
        print(f"  window 3: 1 subscriber again, {args.window_s:g} s ...", file=sys.stderr)
        result["one_again"] = await cpu_window(server, args.window_s, [first], profiler, f"fanout-{tag}-1-again")
    finally:
        await first.close()
    base = (result["one"]["cpu_pct"] + result["one_again"]["cpu_pct"]) / 2
    result["cpu_ratio"] = result["many"]["cpu_pct"] / result["one"]["cpu_pct"]
    loop_base = (result["one"]["loop_cpu_pct"] + result["one_again"]["loop_cpu_pct"]) / 2
    result["loop_cpu_ratio"] = result["many"]["loop_cpu_pct"] / loop_base
    result["cpu_ratio_vs_both_baselines"] = result["many"]["cpu_pct"] / base
    result["rss_ratio"] = result["many"]["rss_mib"] / result["one"]["rss_mib"]
    extra = max(1, result["many"]["subscribers"] - 1)
    result["cpu_ms_per_subscriber_s"] = 10 * (result["many"]["cpu_pct"] - base) / extra   # % of a core -> ms/s
    result["loop_ms_per_subscriber_s"] = 10 * (result["many"]["loop_cpu_pct"] - loop_base) / extra
    messages = result["many"]["messages_per_s"] - (result["one"]["messages_per_s"] + result["one_again"]["messages_per_s"]) / 2
    result["cpu_ms_per_message"] = 10 * (result["many"]["cpu_pct"] - base) / messages if messages > 0 else math.nan
    result["loop_ms_per_message"] = 10 * (result["many"]["loop_cpu_pct"] - loop_base) / messages if messages > 0 else math.nan
    result["rss_kib_per_subscriber"] = (result["many"]["rss_mib"] - result["one"]["rss_mib"]) * 1024 / extra
    result["channels_ok"] = result["channels_with_many"] == 1
    result["about_the_same"] = result["cpu_ratio_vs_both_baselines"] <= args.fanout_tolerance
    return result


# --------------------------------------------------------------------------- realtime at 10,000 sessions

def players(count: int, seed: int) -> list[Player]:
    """Varied devices (the simulator's User-Agents, by its weights) and countries (its per-country /24s)."""
    rng = random.Random(seed)
    chosen = []
    for _ in range(count):
        device = rng.choices(DEVICES, weights=[d.weight for d in DEVICES])[0]
        country = rng.choices(COUNTRIES, weights=[c.weight for c in COUNTRIES])[0]
        chosen.append(Player(device.user_agent, f"{rng.choice(country.prefixes)}{rng.randint(1, 254)}"))
    return chosen


def load_main(url: str, keys: dict[str, str], count: int, videos: int, keepalive_s: float, concurrency: int,
              seed: int, deadline_s: float, shared: dict[str, Any]) -> None:
    """The 10,000 sessions, in a process of their own so their client work does not delay the timed requests."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(_load(url, keys, count, videos, keepalive_s, concurrency, seed, deadline_s, shared))


async def _load(url: str, keys: dict[str, str], count: int, videos: int, keepalive_s: float, concurrency: int,
                seed: int, deadline_s: float, shared: dict[str, Any]) -> None:
    """Posts every session (a batch of view + heartbeat), then a heartbeat for each once its last batch is
    ``keepalive_s`` old (before any new session), oldest first, until told to stop; and, while
    ``refresh_after_s`` is lowered (a sweep), for each older than that. Nothing while ``pause`` is set."""
    api = Api(url, keys, connections=concurrency)
    rng = random.Random(seed)
    who = players(count, seed)
    names = [f"s{index:05d}-{uuid.uuid4().hex[:16]}" for index in range(count)]
    # popularity falls off like 1/rank (log-uniform ranks): a few big videos and a long tail
    watch = [f"live-video-{int(videos ** rng.random()) - 1:04d}" for _ in range(count)]
    last = [0.0] * count
    beats = [0] * count
    due: deque[int] = deque()   # sessions in the order of their last batch
    state = {"next": 0}
    end = time.monotonic() + deadline_s
    stop, pause = shared["stop"], shared["pause"]

    async def send(index: int) -> None:
        ts = now_ms()
        if beats[index] == 0:
            events = [{"id": "v", "type": "view", "ts": ts}, {"id": "h0", "type": "heartbeat", "ts": ts, "watched_ms": 0}]
        else:
            watched = min(600_000, int((time.monotonic() - last[index]) * 1000))
            events = [{"id": f"h{beats[index]}", "type": "heartbeat", "ts": ts, "watched_ms": watched}]
        with shared["lock"]:
            shared["inflight"].value += 1
        try:
            await api.track(beacon(BIG, names[index], watch[index], events), who[index])
        except RuntimeError:
            with shared["lock"]:
                shared["failures"].value += 1
        finally:
            with shared["lock"]:
                shared["inflight"].value -= 1
        if beats[index] == 0:
            with shared["lock"]:
                shared["posted"].value += 1
                if shared["posted"].value == count:
                    shared["setup_done"].value = time.time()
        else:
            late = time.monotonic() - last[index]
            with shared["lock"]:
                shared["keepalives"].value += 1
                shared["max_gap_s"].value = max(shared["max_gap_s"].value, late)
        beats[index] += 1
        last[index] = time.monotonic()
        due.append(index)

    async def worker() -> None:
        while not stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            oldest = now - last[due[0]] if due else 0.0
            shared["oldest_age_s"].value = oldest
            if pause.is_set():
                await asyncio.sleep(0.05)
            elif due and oldest >= keepalive_s:       # due: before anything else
                await send(due.popleft())
            elif state["next"] < count:               # then the sessions not posted yet
                state["next"] += 1
                await send(state["next"] - 1)
            elif due and oldest >= shared["refresh_after_s"].value:   # a sweep: as fast as the tracker takes them
                await send(due.popleft())
            else:
                await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await api.close()


async def measure_realtime(api: Api, server: psutil.Process, url: str, args: argparse.Namespace,
                           profiler: Profiler, result: dict[str, Any]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    shared = {"stop": context.Event(), "pause": context.Event(), "inflight": context.Value("i", 0),
              "refresh_after_s": context.Value("d", args.keepalive_s),
              "oldest_age_s": context.Value("d", 0.0),
              "lock": context.Lock(), "posted": context.Value("i", 0),
              "keepalives": context.Value("i", 0), "failures": context.Value("i", 0),
              "setup_done": context.Value("d", 0.0), "max_gap_s": context.Value("d", 0.0)}
    budget = args.setup_timeout_s + args.settle_timeout_s + 60 + 2 * args.requests * 20   # the load's own bound
    loader = context.Process(target=load_main, name="live-bench-load", daemon=True,
                             args=(url, api.keys, args.sessions, args.videos, args.keepalive_s, args.concurrency,
                                   args.seed, budget, shared))
    result.update({"sessions": args.sessions, "videos": args.videos, "keepalive_s": args.keepalive_s, "problems": []})
    started = time.time()
    loader.start()
    try:
        deadline = time.monotonic() + args.setup_timeout_s
        reported = time.monotonic()
        while not shared["setup_done"].value and time.monotonic() < deadline and loader.is_alive():
            await asyncio.sleep(0.5)
            if time.monotonic() - reported >= 10:
                reported = time.monotonic()
                print(f"  {shared['posted'].value:,} sessions posted, {shared['keepalives'].value:,} keep-alives, "
                      f"{time.time() - started:.0f} s", file=sys.stderr)
        if not loader.is_alive():
            raise RuntimeError(f"the load process exited with {loader.exitcode}")
        result["posted"] = shared["posted"].value
        result["beacons_per_s_during_setup"] = (shared["posted"].value + shared["keepalives"].value) / (time.time() - started)
        if shared["setup_done"].value:
            result["setup_s"] = shared["setup_done"].value - started
            reached, last = await wait_viewers(api, BIG, args.sessions, args.settle_timeout_s)
            result["exact_reached"] = reached
            result["until_exact_s"] = time.time() - shared["setup_done"].value
            if not reached:
                result["problems"].append(f"viewers never read exactly {args.sessions} within "
                                          f"{args.settle_timeout_s:g} s after the last new session: {last}")
        else:
            # The tracker cannot post and keep alive that many sessions here (each needs a batch per timeout).
            # The window still holds every session posted (the query's cost is per session held), so the
            # requests are timed anyway, and reported as what they are.
            result["exact_reached"] = False
            result["problems"].append(f"only {shared['posted'].value:,} of {args.sessions:,} sessions were posted in "
                                      f"{args.setup_timeout_s:g} s while keeping the earlier ones alive "
                                      f"({result['beacons_per_s_during_setup']:.0f} batches/s): the tracker's "
                                      "capacity on this machine at this time")
        print(f"  {'viewers == ' + str(args.sessions) if result['exact_reached'] else 'NOT exact'}; "
              f"timing {args.requests} + {args.requests} requests "
              f"({'with the keep-alives running' if args.under_load else 'keep-alives held during each'}) ...", file=sys.stderr)
        keepalives0, metrics0 = shared["keepalives"].value, await api.metrics()
        spy = profiler.start(f"realtime-{args.sessions}", 600)   # stopped when the timed requests end
        cpu0, wall0 = cpu_s(server), time.perf_counter()
        timings: dict[str, list[float]] = {"all": [], "viewers": []}
        log: list[tuple[float, str, float, int]] = []   # (seconds into the series, question, seconds, viewers)
        seen: dict[str, list[int]] = {"all": [], "viewers": []}
        errors: list[str] = []
        rss = []
        pace = Paced(min(KEY_RATE_PER_S, 1 / args.gap_s))
        held: list[float] = []
        for index in range(2 * args.requests):     # alternating, so both see the same conditions
            which = "all" if index % 2 == 0 else "viewers"
            await pace.wait()
            if not args.under_load:
                # sweeps are bounded in all: beyond that the requests go on, and the answers' viewers tell
                sweeping = sum(held) < SWEEPS_S
                held.append(await hold_keepalives(shared, args.keepalive_s if sweeping else math.inf))
            try:
                status, answer, took = await api.realtime(BIG, None if which == "all" else "viewers")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))
                continue
            if status != 200:
                errors.append(f"HTTP {status}: {str(answer)[:200]}")
                continue
            timings[which].append(took)
            seen[which].append(answer["current"]["viewers"])
            log.append((round(time.perf_counter() - wall0, 3), which, round(took, 4), answer["current"]["viewers"]))
            if index % 10 == 0:
                rss.append(server.memory_info().rss)
        wall = time.perf_counter() - wall0
        shared["pause"].clear()
        await asyncio.to_thread(Profiler.finish, spy)
        metrics = await api.metrics()
        result["timed_s"] = wall
        result["under_load"] = args.under_load
        result["requests"] = log
        result["sweeps"] = sum(1 for wait in held if wait > 0.5)
        result["sweeps_s"] = sum(held)
        result["server_cpu_pct_while_timed"] = 100 * (cpu_s(server) - cpu0) / wall
        result["beacons_per_s_while_timed"] = (shared["keepalives"].value - keepalives0) / wall
        result["all_fields"] = summary(timings["all"])
        result["viewers_only"] = summary(timings["viewers"])
        result["viewers_seen"] = {which: [min(values, default=0), max(values, default=0)] for which, values in seen.items()}
        result["exact_throughout"] = all(value == args.sessions for values in seen.values() for value in values)
        result["errors"] = errors[:10]
        result["server_side_mean_s"] = _histogram_mean(metrics0, metrics, "realtime")
        result["window_sessions_gauge"] = metrics.get("vidpulse_live_window_sessions")
        result["rss_mib"] = statistics.mean(rss) / MiB if rss else server.memory_info().rss / MiB
        result["rss_max_mib"] = max(rss) / MiB if rss else result["rss_mib"]
        result["load_avg_1m"] = os.getloadavg()[0]
        result["answer_example"] = (await api.realtime(BIG))[1]
        return result
    finally:
        shared["stop"].set()
        loader.join(15)
        if loader.is_alive():
            loader.terminate()
            loader.join(5)
        result["keepalives"] = shared["keepalives"].value
        result["post_failures"] = shared["failures"].value
        result["max_gap_between_batches_s"] = shared["max_gap_s"].value


async def hold_keepalives(shared: dict[str, Any], keepalive_s: float, limit_s: float = 90.0) -> float:
    """Keeps the keep-alives paused while requests are timed, so a request is timed alone, not beside the
    tracker's work in the same process. When a session would come due during the next request, it lets
    them run first, as a sweep: every session older than half ``keepalive_s`` gets its batch, so the
    requests that follow have a quiet stretch again (bounded by ``limit_s``: then it goes ahead, and the
    answers' viewers tell). Then it waits for the batches in flight. Returns the seconds it waited."""
    started = time.monotonic()
    if shared["oldest_age_s"].value > keepalive_s - 3:
        shared["refresh_after_s"].value = keepalive_s / 2
        shared["pause"].clear()
        # done when the sessions older than keepalive_s / 2 at the start have theirs (the others aged meanwhile)
        while (shared["oldest_age_s"].value > keepalive_s / 2 + 1 + time.monotonic() - started
               and time.monotonic() - started < limit_s):
            await asyncio.sleep(0.05)
        shared["refresh_after_s"].value = keepalive_s
    shared["pause"].set()
    while shared["inflight"].value > 0 and time.monotonic() - started < limit_s:
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def _histogram_mean(before: dict[str, float], after: dict[str, float], endpoint: str) -> float:
    labels = f'{{endpoint="{endpoint}",status="200"}}'

    def totals(values: dict[str, float]) -> tuple[float, float]:
        return (values.get(f"vidpulse_api_query_latency_seconds_sum{labels}", 0.0),
                values.get(f"vidpulse_api_query_latency_seconds_count{labels}", 0.0))
    (sum0, count0), (sum1, count1) = totals(before), totals(after)
    return (sum1 - sum0) / (count1 - count0) if count1 > count0 else math.nan


# --------------------------------------------------------------------------- the run

async def measure(process: VidpulseProcess, args: argparse.Namespace, run: dict[str, Any]) -> None:
    """Fills ``run`` part by part; a part that fails is recorded as its error and the next one still runs
    (unless vidpulse itself died). Raises only when nothing sensible is left to measure."""
    assert process.proc is not None
    server = psutil.Process(process.proc.pid)
    api = Api(process.url, dict(process.auth.keys), connections=64)
    run["server_children"] = len(server.children(recursive=True))
    profiler = Profiler(args.profile, server.pid)
    background = Heartbeats(api, FANOUT, args.heartbeat_s, max_beats=math.ceil(3600 / args.heartbeat_s),
                            seed=args.seed)

    async def part(name: str, measure: Any, *arguments: Any) -> None:
        """Runs one part into run[name], which holds what was measured even when it stops early."""
        run[name] = {}
        try:
            run[name] = await measure(*arguments, run[name])
        except Exception as exc:  # noqa: BLE001 - reported with the other parts
            run[name]["error"] = repr(exc)
            run.setdefault("failed_parts", []).append(name)
            print(f"  {name} failed: {exc!r}", file=sys.stderr)
        if process.proc is None or process.proc.poll() is not None:
            raise RuntimeError(f"vidpulse up exited during the {name} part")

    try:
        # /readyz answers before the live tail has read its window: the first answers may be 503
        print(f"starting {args.background} background sessions (a heartbeat every {args.heartbeat_s:g} s) ...",
              file=sys.stderr)
        started = time.perf_counter()
        rng = random.Random(args.seed)
        for number, player in enumerate(players(args.background, args.seed + 1)):
            background.start(f"bg-{number:03d}-{uuid.uuid4().hex[:12]}", f"bg-video-{number % 7}", player,
                             delay_s=rng.uniform(0, args.heartbeat_s))
        reached, last = await wait_viewers(api, FANOUT, args.background, 120 + args.heartbeat_s, interval_s=0.5)
        if not reached:
            raise RuntimeError(f"the background sessions never all showed in /v1/realtime: {last}")
        run["warmup_s"] = time.perf_counter() - started

        # Fan-out first: its baselines then see only the steady sessions (the freshness part's sessions
        # would be closed by the worker a minute after the part, in the middle of a window).
        await asyncio.sleep(args.heartbeat_s)   # every steady session is heartbeating
        run["fanout"] = {}
        for question in args.fanout_fields if "fanout" in args.parts else ():
            print(f"fan-out, fields={question}: 1 vs {args.subscribers} WebSocket subscribers ...", file=sys.stderr)
            await part("fanout-" + question, measure_fanout, api, server, args, profiler, question)
            run["fanout"][question] = run.pop("fanout-" + question)

        if "freshness" in args.parts:
            print(f"freshness: {args.samples} new sessions, {args.spacing_s:g} s apart ...", file=sys.stderr)
            await part("freshness", measure_freshness, api, args)
        await background.close()
        run["background_batches"] = background.batches
        run["background_failures"] = background.failures[:10]

        if "realtime" in args.parts:
            print(f"realtime at {args.sessions:,} sessions ...", file=sys.stderr)
            await part("realtime", measure_realtime, api, server, process.url, args, profiler)
    finally:
        await background.close()
        await api.close()


# --------------------------------------------------------------------------- report

def freshness_lines(fresh: dict[str, Any], args: argparse.Namespace) -> tuple[list[tuple[str, dict[str, float], str]],
                                                                                list[str]]:
    rows, notes = [], []
    for name, label in (("websocket", "freshness, WebSocket (202 -> a message counting it)"),
                        ("sse", "freshness, SSE (the same question, at the same time)")):
        if name not in fresh:
            continue
        result = fresh[name]
        rows.append((label, result["stats"], f"p95 <= {FRESHNESS_GOAL_S:g} s: {'PASS' if result['pass'] else 'FAIL'}"))
        parts = [f"{result['messages']} messages", f"{result['timeouts']} timed out ({args.timeout_s:g} s)",
                 f"{result['before_202']} arrived before the 202"]
        if result["overcounts"]:
            parts.append(f"OVERCOUNTS: {result['overcounts'][:3]}")
        if result["error"]:
            parts.append(f"stream error: {result['error']}")
        notes.append(f"freshness {name}: " + ", ".join(parts))
    if "post_202" in fresh:
        notes.append(f"freshness context: POST -> 202 p50 {fmt(fresh['post_202']['p50'])}, p95 "
                     f"{fmt(fresh['post_202']['p95'])}; {args.samples} samples {args.spacing_s:g} s apart, "
                     f"{args.background} background sessions")
    return rows, notes


def fanout_lines(fan: dict[str, Any], args: argparse.Namespace) -> list[str]:
    n = args.subscribers
    lines = [f"fan-out, fields={fan['fields']}: {fan['window_s']:g} s windows, {args.background} sessions x "
             f"1 heartbeat / {args.heartbeat_s:g} s",
             f"  {'subscribers':>11}  {'API CPU':>9}  {'its loop':>9}  {'RSS':>9}  {'msgs/s recv':>11}  "
             f"{'bench CPU':>9}  {'machine busy':>12}  {'load 1m':>7}"]
    for key, label in (("one", "1"), ("many", str(fan.get("many", {}).get("subscribers", n))), ("one_again", "1 again")):
        if key in fan:
            w = fan[key]
            lines.append(f"  {label:>11}  {w['cpu_pct']:8.1f}%  {w['loop_cpu_pct']:8.1f}%  {w['rss_mib']:5.0f} MiB  "
                         f"{w['messages_per_s']:11.1f}  {w['bench_cpu_pct']:8.1f}%  {w['system_busy_pct']:11.0f}%  "
                         f"{w['load_avg_1m']:7.2f}")
    if "cpu_ratio" in fan:
        many = fan["many"]["subscribers"]
        lines.append(f"  ratio {many} / 1: CPU {fan['cpu_ratio']:.2f}x ({fan['cpu_ratio_vs_both_baselines']:.2f}x against "
                     f"the mean of both baselines; its event loop {fan['loop_cpu_ratio']:.2f}x), RSS {fan['rss_ratio']:.2f}x")
        per_message = (f"; per message delivered: {fan['cpu_ms_per_message']:.2f} ms "
                       f"({fan['loop_ms_per_message']:.2f} ms)" if fan["many"]["messages_per_subscriber_s"] >= 0.5 else "")
        lines.append(f"  per extra subscriber: {fan['cpu_ms_per_subscriber_s']:.2f} ms of CPU per second (of which "
                     f"the event loop {fan['loop_ms_per_subscriber_s']:.2f} ms), {fan['rss_kib_per_subscriber']:.0f} KiB"
                     f"{per_message}")
        lines.append(f"  about the same (CPU <= {args.fanout_tolerance:g}x): {'PASS' if fan['about_the_same'] else 'FAIL'}; "
                     f"vidpulse_live_channels with {many}: {fan['channels_with_many']:.0f} (expected 1): "
                     f"{'PASS' if fan['channels_ok'] else 'FAIL'}")
    if "open_s" in fan:
        lines.append(f"  opening {n - 1} took {fan['open_s']:.1f} s, {fan['open_failures']} failed; closed by the "
                     f"server: {len(fan.get('closed_by_server', []))}; silent > 15 s: {fan.get('silent_subscribers')}; "
                     f"dropped: {fan.get('dropped') or 'none'}")
    if "error" in fan:
        lines.append(f"  FAILED: {fan['error']}")
    return lines


def realtime_lines(big: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [f"realtime at {args.sessions:,} sessions ({args.videos} videos, varied devices and countries, a batch "
             f"every {args.keepalive_s:g} s or more per session, session timeout {args.session_timeout_s:g} s):"]
    if "posted" in big:
        setup = f"setup {big['setup_s']:.1f} s" if "setup_s" in big else f"{big['posted']:,} posted"
        exact = (f"viewers == {args.sessions} exactly {big['until_exact_s']:.1f} s after the last new session"
                 if big.get("exact_reached") else f"viewers == {args.sessions} NOT reached")
        lines.append(f"  {setup} ({big['beacons_per_s_during_setup']:.0f} batches/s); {exact}")
        lines.append(f"  {big.get('keepalives', 0):,} keep-alive batches, {big.get('post_failures', 0)} failed posts, "
                     f"longest gap between a session's batches {big.get('max_gap_between_batches_s', 0):.1f} s")
    lines += [f"  PROBLEM: {problem}" for problem in big.get("problems", [])]
    if "all_fields" in big:
        lines.append(f"  viewers in every timed answer == {args.sessions}: {'yes' if big['exact_throughout'] else 'NO'} "
                     f"(all fields {big['viewers_seen']['all']}, viewers only {big['viewers_seen']['viewers']}); "
                     f"{len(big['errors'])} errors")
        if big["under_load"]:
            beside = f"with the keep-alives running ({big['beacons_per_s_while_timed']:.0f} batches/s)"
        else:
            beside = (f"each request alone: keep-alives held, except {big['sweeps']} sweeps between requests "
                      f"({big['sweeps_s']:.0f} s) that gave every session older than {args.keepalive_s / 2:g} s its batch")
        lines.append(f"  timed in {big['timed_s']:.1f} s, {beside}")
        lines.append(f"  server-side mean (vidpulse_api_query_latency_seconds): {fmt(big['server_side_mean_s'])}; API CPU "
                     f"while timed {big['server_cpu_pct_while_timed']:.0f}% of a core")
        lines.append(f"  vidpulse_live_window_sessions {big['window_sessions_gauge']:.0f}; RSS {big['rss_mib']:.0f} MiB "
                     f"(max {big['rss_max_mib']:.0f} MiB); load average {big['load_avg_1m']:.2f}")
    if "error" in big:
        lines.append(f"  FAILED: {big['error']}")
    return lines


def report(meta: dict[str, Any], run: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"vidpulse live layer - {meta['date']}, {meta['cpus']} cores, {meta['platform']}",
             f"load average before the run: {meta['load_before']}; after: {meta.get('load_after', '?')}", ""]
    if "error" in run:
        lines += [f"THE RUN STOPPED EARLY: {run['error']}", ""]
    rows, notes = freshness_lines(run.get("freshness", {}), args)
    big = run.get("realtime", {})
    if "all_fields" in big:
        label = f"realtime GET at {args.sessions:,} sessions"
        rows.append((f"{label}, all fields", big["all_fields"], ""))
        rows.append((f"{label}, fields=viewers", big["viewers_only"], ""))
    if rows:
        width = max(len(label) for label, _, _ in rows)
        lines.append(f"{'':{width}}  {'p50':>9} {'p95':>9} {'max':>9}    n  goal")
        lines += [f"{label:{width}}  {fmt(stats['p50']):>9} {fmt(stats['p95']):>9} {fmt(stats['max']):>9} "
                  f"{stats['n']:4d}  {goal}" for label, stats, goal in rows]
        lines.append("")
    lines += notes
    if "error" in run.get("freshness", {}):
        lines.append(f"freshness FAILED: {run['freshness']['error']}")
    unfinished = [value for key, value in run.items() if key.startswith("fanout-")]   # a run stopped in the middle
    for fan in [*run.get("fanout", {}).values(), *unfinished]:
        lines += ["", *fanout_lines(fan, args)]
    if big:
        lines += ["", *realtime_lines(big, args)]
    warnings = run.get("log_warnings", [])
    if warnings:
        lines += ["", f"vidpulse log: {len(warnings)} WARNING/ERROR line(s), e.g.:", *[f"  {line}" for line in warnings[:3]]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"the JSON report (default {DEFAULT_OUT.relative_to(ROOT)})")
    group = parser.add_argument_group("freshness")
    group.add_argument("--samples", type=int, default=60, help="new sessions measured (default 60)")
    group.add_argument("--spacing-s", type=float, default=1.3, help="between them (default 1.3: off the 1 s tick)")
    group.add_argument("--timeout-s", type=float, default=10.0, help="a sample not seen by then counts as this (default 10)")
    group.add_argument("--fresh-keepalive-s", type=float, default=20.0, help="their heartbeats (default 20)")
    group.add_argument("--no-sse", action="store_true", help="no server-sent-events subscriber")
    group.add_argument("--progress", action="store_true", help="print each sample")
    group = parser.add_argument_group("fan-out")
    group.add_argument("--subscribers", type=int, default=1000, help="WebSocket subscribers (default 1000)")
    group.add_argument("--fanout-fields", action="append", metavar="FIELDS",
                       help="the question they ask, repeatable: all (a dashboard: with the steady load a message every "
                            "tick) or a comma list such as viewers (a badge: a keep-alive every 10 s while the count "
                            "holds); default: all, then viewers")
    group.add_argument("--window-s", type=float, default=30.0, help="each CPU window (default 30)")
    group.add_argument("--settle-s", type=float, default=5.0, help="pause before each window (default 5)")
    group.add_argument("--background", type=int, default=50, help="steady sessions (default 50)")
    group.add_argument("--heartbeat-s", type=float, default=10.0, help="their heartbeat interval (default 10, +-20 %%)")
    group.add_argument("--fanout-tolerance", type=float, default=1.25,
                       help="the process CPU ratio (1,000 over the mean of the 1-subscriber windows) still read as "
                            "'about the same' (default 1.25)")
    group = parser.add_argument_group("realtime at many sessions")
    group.add_argument("--sessions", type=int, default=10_000, help="concurrent sessions (default 10000)")
    group.add_argument("--videos", type=int, default=500, help="videos they watch (default 500, popularity ~ 1/rank)")
    group.add_argument("--session-timeout-s", type=float, default=60,
                       help="VIDPULSE_SESSION_TIMEOUT_S of the vidpulse process (default 60, its own default): each "
                            "session needs a batch within it, so --sessions / it is the least beacon rate")
    group.add_argument("--keepalive-s", type=float,
                       help="a session's next batch after its last (default: the session timeout - 15 s)")
    group.add_argument("--concurrency", type=int, default=32, help="posts in flight (default 32)")
    group.add_argument("--setup-timeout-s", type=float, default=150.0, help="to post every session (default 150)")
    group.add_argument("--settle-timeout-s", type=float, default=60.0, help="then for viewers == sessions (default 60)")
    group.add_argument("--requests", type=int, default=50, help="timed GETs of each kind (default 50)")
    group.add_argument("--gap-s", type=float, default=0.1, help="least time between timed GETs' starts (default 0.1)")
    group.add_argument("--under-load", action="store_true",
                       help="keep the keep-alives running while timing (default: paused while the requests run, "
                            "with a sweep between two requests when sessions come due, so only the requests are "
                            "timed: vidpulse up is also the tracker)")
    group = parser.add_argument_group("the run")
    group.add_argument("--parts", default="fanout,freshness,realtime",
                       help="which parts to run, in that order (default all: fanout,freshness,realtime)")
    group.add_argument("--seed", type=int, default=1, help="of the random choices: pauses, devices, videos (default 1)")
    group.add_argument("--profile", type=Path, metavar="DIR",
                       help="sample the server with py-spy (if installed) in each CPU window and the timed GETs; "
                            "collapsed stacks go to DIR")
    group.add_argument("--keep-workdir", action="store_true", help="keep the chdb folder and the vidpulse log")
    group.add_argument("--keep-broker", action="store_true",
                       help="leave the local broker running if this run started it (default: stop it)")
    args = parser.parse_args(argv)
    args.fanout_fields = args.fanout_fields or ["all", "viewers"]
    args.parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not args.parts or args.parts - {"fanout", "freshness", "realtime"}:
        parser.error("--parts: a comma list of fanout, freshness, realtime")
    args.keepalive_s = args.keepalive_s or args.session_timeout_s - 15
    if not (1 <= args.samples <= 500 and args.spacing_s > 0 and 2 <= args.subscribers <= 5000 and args.window_s > 0
            and 1 <= args.background <= 500 and args.heartbeat_s >= 1 and 1 <= args.sessions <= 50_000
            and 1 <= args.videos and 1 <= args.session_timeout_s <= 3600 and 1 <= args.keepalive_s <= args.session_timeout_s - 15
            and 1 <= args.concurrency <= 256 and 1 <= args.requests <= 1000 and args.gap_s > 0):
        parser.error("out of range: see --help (at least one background session: the warm-up waits for them)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop vidpulse
    run_id = f"live{uuid.uuid4().hex[:8]}"
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "load_before": " ".join(f"{value:.2f}" for value in os.getloadavg()), "run_id": run_id,
        "args": {name: str(value) for name, value in vars(args).items()}}
    try:
        bootstrap, started_broker = find_broker()
    except RuntimeError as exc:
        print(f"live: {exc}", file=sys.stderr)
        return 1
    meta["bootstrap"], meta["started_broker"] = bootstrap, started_broker
    workdir = Path(tempfile.mkdtemp(prefix="vidpulse-bench-live-"))
    settings = {} if args.session_timeout_s == 60 else {"session_timeout_s": str(int(args.session_timeout_s))}
    process = VidpulseProcess(bootstrap, workdir, run_id, accounts=(FRESH, FANOUT, BIG), **settings)
    run: dict[str, Any] = {}
    failed = True
    try:
        print(f"starting vidpulse up on {process.url} (topics test-{run_id}.*) ...", file=sys.stderr)
        process.start()
        try:
            asyncio.run(measure(process, args, run))
            failed = bool(run.get("failed_parts"))
        except (Exception, KeyboardInterrupt, SystemExit) as exc:  # reported below, with what was measured before
            run["error"] = repr(exc)
            report_failure("live", exc, process)
        run["log_warnings"] = log_warnings(process.log_path)
        meta["load_after"] = " ".join(f"{value:.2f}" for value in os.getloadavg())
        print(report(meta, run, args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, **run}, indent=2, default=str) + "\n")
        print(f"(written to {args.out})", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - vidpulse did not start, or the report could not be written
        report_failure("live", exc, process)
    finally:
        clean_up(process, bootstrap, run_id, workdir, failed=failed, keep_workdir=args.keep_workdir,
                 started_broker=started_broker, stop_broker=not args.keep_broker)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
