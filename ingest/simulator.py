"""``vidpulse simulate``: realistic player traffic against a tracker, plus the ground truth it implies.

Sessions are generated deterministically from ``--seed`` (only the run token
in the session ids is random, so two runs never collide) and replayed over
HTTP: each session's beacons in chronological order, sessions in parallel up
to ``--concurrency``. What got a 202 feeds ``ingest.truth``, which writes the
expected query answers to ``--truth``.

All playback happens in the past (the last ~40 minutes of device time) and
the beacons carry no ``sent_at``: the protocol then takes ``ts`` as the event
time, so the truth does not depend on the tracker's clock and is exact to the
millisecond, minute buckets included.

Each session has its own client IP, sent as ``X-Forwarded-For``. The tracker
believes that header only from a trusted proxy, so run it with
``VIDPULSE_TRUSTED_PROXIES=127.0.0.1`` (or the simulator's address);
otherwise every session comes from the simulator's own address (country
"ZZ", far fewer fingerprints) and the truth will not match.

The truth is the total of this run alone: compare against a fresh database
(or a fresh ``--account``), not one already holding other traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from ingest.truth import SentBatch, compute_truth

MINUTE_MS = 60_000
WINDOW_MS = 40 * MINUTE_MS          # sessions start within the last 40 minutes ...
LATEST_START_MS = 9 * MINUTE_MS     # ... and at least 9 minutes ago, so every event lies in the past
MAX_ATTEMPTS = 5
MAX_RETRY_DELAY_S = 5.0
HEARTBEAT_MS = 10_000


@dataclass(frozen=True)
class Device:
    name: str
    user_agent: str
    device_type: str
    players: tuple[str, ...]
    weight: int


WEB_PLAYERS = ("web-player-1", "web-player-2")
DEVICES = (
    Device("Chrome on Windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Safari/537.36", "desktop", WEB_PLAYERS, 24),
    Device("Edge on Windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", "desktop", WEB_PLAYERS, 6),
    Device("Firefox on Windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
           "desktop", WEB_PLAYERS, 5),
    Device("Safari on macOS", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.4 Safari/605.1.15", "desktop", WEB_PLAYERS, 10),
    Device("iPhone", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.4 Mobile/15E148 Safari/604.1", "mobile", WEB_PLAYERS, 20),
    Device("Android phone", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Mobile Safari/537.36", "mobile", WEB_PLAYERS, 14),
    Device("Samsung phone", "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
           "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", "mobile", WEB_PLAYERS, 6),
    Device("iPad", "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.4 Mobile/15E148 Safari/604.1", "tablet", WEB_PLAYERS, 6),
    Device("Android tablet", "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Safari/537.36", "tablet", WEB_PLAYERS, 3),
    Device("Samsung Smart TV", "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.5) AppleWebKit/537.36 (KHTML, like Gecko) "
           "85.0.4183.93/6.5 TV Safari/537.36", "tv", ("tv-app",), 4),
    Device("LG webOS TV", "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/87.0.4280.88 Safari/537.36 WebAppManager", "tv", ("tv-app",), 2),
)


@dataclass(frozen=True)
class Country:
    code: str
    weight: int
    prefixes: tuple[str, ...]   # /24s that iptocc maps to ``code`` for every host (checked by the unit tests)
    zones: tuple[str, ...]


COUNTRIES = (
    Country("US", 34, ("24.0.0.", "98.137.11."), ("America/New_York", "America/Chicago", "America/Los_Angeles")),
    Country("GB", 12, ("81.2.69.", "212.58.244."), ("Europe/London",)),
    Country("DE", 10, ("194.150.168.", "5.9.0."), ("Europe/Berlin",)),
    Country("JP", 8, ("1.0.16.", "133.11.0."), ("Asia/Tokyo",)),
    Country("BR", 8, ("200.160.0.", "177.0.0."), ("America/Sao_Paulo",)),
    Country("CA", 7, ("24.48.0.", "99.224.0."), ("America/Toronto", "America/Vancouver")),
    Country("FR", 6, ("80.67.169.", "90.0.0."), ("Europe/Paris",)),
    Country("AU", 6, ("139.130.4.", "49.255.0."), ("Australia/Sydney",)),
    Country("IN", 6, ("122.160.0.", "117.192.0."), ("Asia/Kolkata",)),
    # Carrier-grade NAT space leaking through a proxy: no registry country, counted as "ZZ".
    Country("ZZ", 2, ("100.64.0.",), ("UTC",)),
)
PAGE_HOSTS = ("www.example-news.com", "video.example.org")


@dataclass(frozen=True)
class Viewer:
    """One person on one device: the fingerprint inputs (IP, User-Agent, player) plus context."""

    ip: str
    device: Device
    player: str
    user: str | None
    tz: str
    page_host: str | None


@dataclass(frozen=True)
class Video:
    id: str
    live: bool
    duration_s: int | None
    weight: float


@dataclass
class PlannedSession:
    """One playback: its envelope fields and its complete, time-ordered event list."""

    account: str
    session: str
    video: Video
    viewer: Viewer
    batch_size: int
    content_type: str
    events: list[dict[str, Any]]

    def envelope(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        context: dict[str, Any] = {"tz": self.viewer.tz}
        if self.viewer.user:
            context["user"] = self.viewer.user
        if self.viewer.page_host:
            context["page"] = f"https://{self.viewer.page_host}/watch/{self.video.id}"
        if self.video.duration_s is not None:
            context["duration"] = float(self.video.duration_s)
        return {"v": 1, "account": self.account, "player": self.viewer.player, "session": self.session,
                "video": self.video.id, "live": self.video.live, "context": context, "events": events}

    def batches(self) -> list[list[dict[str, Any]]]:
        """Chronological batches: a player flushes when its queue is full and at once on ``stop``."""
        batches: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        for event in self.events:
            current.append(event)
            if len(current) >= self.batch_size or event["type"] == "stop":
                batches.append(current)
                current = []
        if current:
            batches.append(current)
        return batches


def generate(seed: int, sessions: int, videos: int, account: str, now_ms: int, run_token: str) -> list[PlannedSession]:
    """The whole run's traffic; the same seed gives the same traffic (ids aside, via ``run_token``)."""
    rng = random.Random(seed)
    catalog = _videos(rng, videos)
    viewers = [_viewer(rng) for _ in range(max(1, sessions * 7 // 10))]
    planned = []
    for index in range(sessions):
        video = rng.choices(catalog, weights=[v.weight for v in catalog])[0]
        viewer = rng.choice(viewers)
        start_ms = now_ms - rng.randint(LATEST_START_MS, WINDOW_MS)
        content_type = "text/plain" if viewer.page_host and rng.random() < 0.3 else "application/json"
        planned.append(PlannedSession(account, f"sim-{run_token}-{index:05d}", video, viewer,
                                      rng.choice((3, 5, 10, 10)), content_type, _events(rng, start_ms, video)))
    return planned


def _videos(rng: random.Random, count: int) -> list[Video]:
    """Popularity falls off like Zipf; every fourth video (from the first) is a live stream."""
    catalog = []
    for number in range(1, count + 1):
        live = number % 4 == 1
        duration = None if live else rng.choice((45, 60, 90, 120, 180, 240))
        catalog.append(Video(f"video-{number}", live, duration, 1 / number))
    return catalog


def _viewer(rng: random.Random) -> Viewer:
    country = rng.choices(COUNTRIES, weights=[c.weight for c in COUNTRIES])[0]
    device = rng.choices(DEVICES, weights=[d.weight for d in DEVICES])[0]
    ip = f"{rng.choice(country.prefixes)}{rng.randint(1, 254)}"
    user = f"u-{rng.randint(1, 2000)}" if rng.random() < 0.35 else None
    host = rng.choice(PAGE_HOSTS) if device.players == WEB_PLAYERS else None
    return Viewer(ip, device, rng.choice(device.players), user, rng.choice(country.zones), host)


class _Timeline:
    """A device clock and the events emitted along it, with per-session sequential ids."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms
        self.events: list[dict[str, Any]] = []

    def wait(self, ms: int) -> None:
        self.now += ms

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.append({"id": str(len(self.events) + 1), "type": kind, "ts": self.now, **fields})


def _events(rng: random.Random, start_ms: int, video: Video) -> list[dict[str, Any]]:
    """Impression; then (mostly) view, first frame and playback until stop, silence or a fatal error."""
    line = _Timeline(start_ms)
    line.emit("impression")
    if rng.random() < 0.12:
        return line.events                       # the player loaded, nobody pressed play
    line.wait(rng.randint(300, 4000))
    line.emit("view")
    startup = min(int(rng.lognormvariate(6.6, 0.6)), 8000)
    line.wait(startup)
    if rng.random() < 0.04:
        _failed_start(rng, line)
        return line.events
    line.emit("first_frame", startup_ms=startup)
    _Playback(rng, line, video).run()
    return line.events


def _failed_start(rng: random.Random, line: _Timeline) -> None:
    line.emit("error", code="MEDIA_ERR_SRC_NOT_SUPPORTED", message="no supported source", fatal=True)
    if rng.random() < 0.5:
        line.wait(rng.randint(500, 3000))
        line.emit("stop", watched_ms=0, position=0.0)


class _Playback:
    """Content playback as a walk over milestones (in played ms): heartbeats, quartiles and incidents."""

    def __init__(self, rng: random.Random, line: _Timeline, video: Video) -> None:
        self.rng, self.line, self.video = rng, line, video
        self.duration_ms = video.duration_s * 1000 if video.duration_s else None
        self.offset_s = 0.0 if not video.live else float(rng.randint(0, 3600))
        self.played = 0
        self.beacon_played = 0
        self.last_percent = -1
        self.target = self._target()

    def _target(self) -> int:
        if self.duration_ms is None:
            return self.rng.randint(15_000, 240_000)
        if self.rng.random() < 0.3:
            return self.duration_ms             # watched to the end
        return int(self.duration_ms * self.rng.uniform(0.05, 0.95))

    def run(self) -> None:
        milestones = self._milestones()
        ending = self.rng.choices(("stop", "abandon", "fatal"), weights=(78, 16, 6))[0]
        if ending == "fatal":
            milestones.append((self.rng.randint(1, self.target), 9, "fatal"))
        for at, _, kind in sorted(milestones):
            self._advance(at)
            if kind == "fatal":
                self.line.emit("error", code="MEDIA_ERR_NETWORK", message="segment download failed", fatal=True)
                ending = self.rng.choice(("stop", "abandon"))
                break
            self._incident(kind)
        else:
            self._advance(self.target)
        if ending == "stop":
            self.line.wait(self.rng.randint(0, 1500))
            self.line.emit("stop", **self._progress())

    def _milestones(self) -> list[tuple[int, int, str]]:
        """(played ms, tie order, kind); the tie order keeps a heartbeat before a quartile at the same point."""
        marks = [(at, 0, "heartbeat") for at in range(HEARTBEAT_MS, self.target, HEARTBEAT_MS)]
        if self.duration_ms is not None:
            marks += [(self.duration_ms * q // 100, 1, f"quartile{q}") for q in (25, 50, 75, 100)
                      if self.duration_ms * q // 100 <= self.target]
        incidents = [("ad", 0.25), ("rebuffer", 0.2), ("rebuffer", 0.1), ("pause", 0.06), ("warning", 0.03)]
        for kind, chance in incidents:
            if self.rng.random() < chance and self.target > 2:
                marks.append((self.rng.randint(1, self.target - 1), 2, kind))
        return marks

    def _advance(self, played: int) -> None:
        self.line.wait(played - self.played)
        self.played = played

    def _incident(self, kind: str) -> None:
        line, rng = self.line, self.rng
        if kind == "heartbeat":
            line.emit("heartbeat", **self._progress())
        elif kind.startswith("quartile"):
            line.emit("quartile", percent=int(kind.removeprefix("quartile")))
        elif kind == "ad":
            line.emit("ad_start", server_side=rng.random() < (0.7 if self.video.live else 0.15))
            line.wait(rng.randint(15_000, 30_000))
        elif kind == "rebuffer":
            stall = rng.randint(300, 8000)
            line.wait(stall)
            line.emit("rebuffer", duration_ms=stall)
        elif kind == "pause":
            line.wait(rng.randint(70_000, 150_000))    # longer than the session timeout: a second active stretch
        elif kind == "warning":
            line.emit("error", code="MEDIA_ERR_DECODE", message="frame dropped", fatal=False)

    def _progress(self) -> dict[str, Any]:
        """watched_ms since the previous heartbeat or stop, the playhead, and the content points passed."""
        fields: dict[str, Any] = {"watched_ms": self.played - self.beacon_played,
                                  "position": round(self.offset_s + self.played / 1000, 3)}
        self.beacon_played = self.played
        if self.duration_ms:
            percent = min(100, self.played * 100 // self.duration_ms)
            fields["percentiles"] = list(range(self.last_percent + 1, percent + 1))
            self.last_percent = percent
        return fields


@dataclass
class RunStats:
    accepted: list[SentBatch] = field(default_factory=list)
    batches: int = 0
    events: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)


async def run_simulation(args: Any, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Generate, send, write the truth; non-zero when anything expected to be accepted was not.

    ``transport`` lets tests stand in for the tracker without a network.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one INFO line per POST would drown the summary
    planned = generate(args.seed, args.sessions, args.videos, args.account, int(time.time() * 1000), secrets.token_hex(4))
    stats = RunStats()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, transport=transport) as client:
        gate = asyncio.Semaphore(args.concurrency)
        trackers = Trackers(args.url)
        pause_s = getattr(args, "pause_ms", 0) / 1000
        await asyncio.gather(*(_send_session(client, trackers, session, gate, stats, pause_s) for session in planned))
    elapsed = time.monotonic() - started
    if not stats.accepted:
        print(f"vidpulse simulate: nothing was accepted by {args.url}: {_first(stats.failures)}", file=sys.stderr)
        return 1
    truth = compute_truth(args.account, stats.accepted)
    Path(args.truth).write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    print(f"sent {stats.events} events in {stats.batches} batches for {len(planned)} sessions in {elapsed:.1f} s "
          f"({stats.retries} retries); truth written to {args.truth}")
    if stats.failures:
        print(f"vidpulse simulate: {len(stats.failures)} failures, e.g.:\n  " + "\n  ".join(stats.failures[:10]),
              file=sys.stderr)
        return 1
    return 0


class Trackers:
    """Several trackers behind one client, as a player behind a load balancer sees them: batches go to each in
    turn, and a retry goes to the next one (a killed tracker costs a retry, not the batch)."""

    def __init__(self, urls: str) -> None:
        self.urls = [_track_url(url) for url in urls.split(",") if url.strip()]
        self._turn = 0

    def turn(self) -> int:
        """A batch's first tracker; its attempt k goes to the k-th after it."""
        self._turn += 1
        return self._turn

    def url(self, turn: int, attempt: int) -> str:
        return self.urls[(turn + attempt) % len(self.urls)]


def _track_url(base: str) -> str:
    base = base.strip().rstrip("/")
    return base if base.endswith("/v1/track") else f"{base}/v1/track"


def _first(items: list[str]) -> str:
    return items[0] if items else "no batch was sent"


async def _send_session(client: httpx.AsyncClient, trackers: Trackers, session: PlannedSession,
                        gate: asyncio.Semaphore, stats: RunStats, pause_s: float = 0.0) -> None:
    """One session's batches in order; a batch that never got a 202 ends the session (the player gave up)."""
    async with gate:
        for index, events in enumerate(session.batches()):
            if index and pause_s:
                await asyncio.sleep(pause_s)
            if not await _send_batch(client, trackers, session, session.envelope(events), stats):
                return


async def _send_batch(client: httpx.AsyncClient, trackers: Trackers, session: PlannedSession,
                      envelope: dict[str, Any], stats: RunStats) -> bool:
    """POST with retries of the very same body (same event ids), as the protocol allows for 429/503."""
    body = orjson.dumps(envelope)
    headers = {"Content-Type": session.content_type, "User-Agent": session.viewer.device.user_agent,
               "X-Forwarded-For": session.viewer.ip}
    problem, turn = "", trackers.turn()
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            stats.retries += 1
        try:
            response = await client.post(trackers.url(turn, attempt), content=body, headers=headers)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(min(0.2 * 2 ** attempt, MAX_RETRY_DELAY_S))
            continue
        if response.status_code == 202:
            _record(session, envelope, response.json(), stats)
            return True
        problem = f"HTTP {response.status_code}: {response.text[:300]}"
        if response.status_code not in (429, 503):
            break
        await asyncio.sleep(_retry_delay(response, attempt))
    stats.failures.append(f"session {session.session}: batch of {len(envelope['events'])} events not accepted: {problem}")
    return False


def _retry_delay(response: httpx.Response, attempt: int) -> float:
    try:
        delay = float(response.headers.get("retry-after", ""))
    except ValueError:
        delay = 0.2 * 2 ** attempt
    return min(max(delay, 0.0), MAX_RETRY_DELAY_S)


def _record(session: PlannedSession, envelope: dict[str, Any], answer: dict[str, Any], stats: RunStats) -> None:
    """Keeps exactly what was accepted; any rejection is a generator or tracker bug, so it is a failure."""
    rejected = {error["index"] for error in answer.get("errors", [])}
    if rejected or answer.get("rejected"):
        stats.failures.append(f"session {session.session}: tracker rejected events: {answer.get('errors')}")
    kept = [event for index, event in enumerate(envelope["events"]) if index not in rejected]
    stats.batches += 1
    stats.events += len(kept)
    if kept:
        stats.accepted.append(SentBatch({**envelope, "events": kept}, session.viewer.ip, session.viewer.device.user_agent))
