"""The live answer (``live-api.md``): what is happening now, computed once per distinct question per tick.

Two sources, each for what it is exact at:
* the present (viewers now and five minutes ago, plays and watch time of the last
  60 s, the top-10 breakdowns) comes from the API process's own ``LiveWindow``,
  which follows Kafka to the second;
* the closed-minute figures (the 30-minute peak of per-minute ``ccu``, the 5-minute
  quality ratios and percentiles) are asked of ClickHouse through ``queries.answers``,
  the same code as ``/v1/timeseries`` and ``/v1/events``, so they equal what those
  answer. They are refreshed every ``slow_refresh_s`` (in the background for a
  stream, so a tick never waits on the database).

A ``Channel`` is one (account, where, fields) being watched: one computation per
tick, whatever the number of subscribers; each subscriber has a short queue, and
one that does not keep up is dropped rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from aggregations.clickhouse import ClickHouse
from aggregations.live import LiveFigures, LiveWindow
from aggregations.livetail import LiveTail, wall_ms
from aggregations.rows import DIMENSIONS
from queries import answers
from queries.auth import AuthError
from queries.params import MAX_LIMIT, MINUTE_MS, Filter, QueryError, Question, parse_buckets, parse_where

log = logging.getLogger(__name__)

CURRENT = ("viewers", "plays_per_minute", "watch_seconds_per_minute")
TREND = ("viewers_change_pct", "trend", "peak_viewers", "peak_at")
QUALITY = ("error_rate", "rebuffer_ratio", "exit_before_start_rate", "ttff_p50_ms", "ttff_p95_ms")
BREAKDOWN_FIELDS = ("by_video", "by_country", "by_device_type")
FIELDS = (*CURRENT, *TREND, *QUALITY, *BREAKDOWN_FIELDS)
# The query API metrics each figure is made of: what a public key must be allowed to read to see it.
FIELD_METRICS: dict[str, tuple[str, ...]] = {
    "viewers": ("ccu",), "viewers_change_pct": ("ccu",), "trend": ("ccu",), "peak_viewers": ("ccu",),
    "peak_at": ("ccu",), "plays_per_minute": ("video_view",), "watch_seconds_per_minute": ("video_seconds_viewed",),
    **{name: (name,) for name in QUALITY}, **{name: ("ccu", "video_view") for name in BREAKDOWN_FIELDS}}
PEAK_MINUTES = 30
QUALITY_MINUTES = 5
TOP = 10
STEADY_PCT = 5.0
CLOSED_CACHE_SIZE = 10_000  # distinct one-shot questions whose closed-minute figures are kept (for slow_refresh_s)


class LiveUnavailable(AuthError):
    """The live figures cannot be given here (501: no broker configured) or yet (503: the window is still
    being read); answered like the key check's refusals, before any data is read."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(status, error, {"Retry-After": "5"} if status == 503 else None)


@dataclass(frozen=True)
class LiveQuestion:
    """What a realtime request or a subscription asks: hashable, so equal questions share a channel."""

    account: str
    filters: tuple[Filter, ...]
    fields: tuple[str, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        """The query API metrics behind the asked fields (a public key's scope is checked on them)."""
        return tuple(dict.fromkeys(metric for name in self.fields for metric in FIELD_METRICS[name]))

    def as_question(self) -> Question:
        return Question(self.account, (), self.metrics, self.filters, 0, MINUTE_MS)


def parse_live(account: str, where: str | None, fields: str | None) -> LiveQuestion:
    names = [name.strip() for name in (fields or "").split(",") if name.strip()] or list(FIELDS)
    unknown = [name for name in names if name not in FIELDS]
    if unknown:
        raise QueryError(f"unknown field(s): {', '.join(unknown)}", list(FIELDS))
    filters = tuple(sorted(parse_where(where), key=lambda f: (f.dimension, f.values)))
    return LiveQuestion(account, filters, tuple(name for name in FIELDS if name in names))


def matcher(filters: tuple[Filter, ...]) -> Callable[[str, tuple[Any, ...]], bool] | None:
    """The where clause as a test of a session's dimension values (the query API's semantics); None without one."""
    if not filters:
        return None
    tests = []
    for condition in filters:
        if condition.dimension == "account":
            tests.append((None, frozenset(condition.values)))
        elif condition.dimension == "live":
            tests.append((DIMENSIONS.index("live"), frozenset(value == "true" for value in condition.values)))
        else:
            tests.append((DIMENSIONS.index(condition.dimension), frozenset(condition.values)))

    def matches(account: str, values: tuple[Any, ...]) -> bool:
        return all((account if index is None else values[index]) in allowed for index, allowed in tests)
    return matches


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.subscribers = Gauge("vidpulse_live_subscribers", "Open live streams, by transport.", ["transport"],
                                 registry=registry)
        self.channels = Gauge("vidpulse_live_channels", "Distinct live questions being computed each tick.",
                              registry=registry)
        self.messages = Counter("vidpulse_live_messages_total", "Live snapshots computed and pushed (once per "
                                "channel, whatever its subscribers).", registry=registry)
        self.dropped = Counter("vidpulse_live_dropped_total", "Live streams closed by the server, by reason "
                               "(slow: the client did not read; revoked: its key was revoked).", ["reason"],
                               registry=registry)
        self.sessions = Gauge("vidpulse_live_window_sessions", "Sessions held in the live window.", registry=registry)


@dataclass(frozen=True)
class Message:
    """One push message, serialized once for every subscriber: JSON bytes for SSE, text for WebSockets."""

    sequence: int
    body: bytes
    text: str

    @classmethod
    def of(cls, sequence: int, answer: dict[str, Any]) -> Message:
        body = orjson.dumps(answer)
        return cls(sequence, body, body.decode())


class Subscriber:
    """One stream's short queue. The channel fills it and ends it; the stream sleeps until either happens.

    No timer and no polling per subscriber: 1,000 subscribers cost 1,000 wake-ups
    per message and nothing between messages. A subscriber whose queue is full
    did not read ``size`` messages and is ended as ``slow`` rather than buffered.
    """

    def __init__(self, size: int, still_open: Callable[[], bool]) -> None:
        self.size, self.still_open = size, still_open
        self.ended: str | None = None  # why the stream ends: slow, revoked, closing, failed or gone
        self.finished = asyncio.Event()
        self._messages: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._messages)

    def offer(self, message: Message) -> None:
        if self.ended is not None:
            return
        if len(self._messages) >= self.size:
            self.end("slow")
            return
        self._messages.append(message)
        self._wake()

    def end(self, reason: str) -> None:
        """The first reason wins; the stream's ``next`` returns None from now on."""
        if self.ended is None:
            self.ended = reason
            self.finished.set()
            self._wake()

    async def next(self) -> Message | None:
        """The next message, or None once the stream is to end (``ended`` says why)."""
        while self.ended is None:
            if self._messages:
                return self._messages.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Channel:
    """One live question being watched: computed every tick, pushed on change or as a keep-alive."""

    def __init__(self, hub: LiveHub, question: LiveQuestion) -> None:
        self.hub, self.question = hub, question
        self.subscribers: set[Subscriber] = set()
        self.latest: Message | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed: dict[str, Any] | None = None
        self.closed_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        sequence, last_body, last_sent = 0, None, 0.0
        try:
            await self._closed_minutes()
            while self.subscribers:
                started = time.monotonic()
                self._end_revoked()
                self._refresh_closed_minutes()
                answer = self.hub.compose(self.question, self.closed or {})
                body = {name: value for name, value in answer.items() if name != "timestamp"}
                if body != last_body or started - last_sent >= self.hub.keepalive_s:
                    sequence += 1
                    self.latest = Message.of(sequence, answer)
                    for subscriber in list(self.subscribers):
                        subscriber.offer(self.latest)
                    self.hub.metrics.messages.inc()
                    last_body, last_sent = body, started
                await asyncio.sleep(max(0.0, self.hub.tick_s - (time.monotonic() - started)))
        finally:
            if self._refreshing:
                self._refreshing.cancel()

    def _end_revoked(self) -> None:
        """Once per tick for all subscribers (a dictionary lookup each), not once per subscriber's timer."""
        for subscriber in list(self.subscribers):
            if not subscriber.still_open():
                subscriber.end("revoked")

    def _refresh_closed_minutes(self) -> None:
        if self._refreshing is None and time.monotonic() - self.closed_at >= self.hub.slow_refresh_s:
            self._refreshing = asyncio.create_task(self._closed_minutes())

    async def _closed_minutes(self) -> None:
        try:
            self.closed = await self.hub.closed_minutes(self.question)
        except Exception as exc:  # noqa: BLE001 - the last figures stay (null at first); the next refresh tries again
            log.warning("live: the closed-minute figures of %s were not refreshed: %s", self.question.account, exc)
        finally:
            self.closed_at, self._refreshing = time.monotonic(), None


class LiveHub:
    """The live figures of one API process: one-shot answers and shared channels for the streams."""

    def __init__(self, db: ClickHouse, tail: LiveTail | None, metrics: LiveMetrics, tick_s: float = 1.0,
                 keepalive_s: float = 10.0, slow_refresh_s: float = 5.0, queue_size: int = 8,
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        self.db, self.tail, self.metrics = db, tail, metrics
        self.tick_s, self.keepalive_s, self.slow_refresh_s = tick_s, keepalive_s, slow_refresh_s
        self.queue_size, self._clock_ms = queue_size, clock_ms
        self._channels: dict[LiveQuestion, Channel] = {}
        self._closed_cache: dict[LiveQuestion, tuple[float, dict[str, Any]]] = {}
        self.closing = False  # the process shuts down: streams end (their clients reconnect elsewhere or later)
        if tail is not None:
            metrics.sessions.set_function(lambda: tail.window.sessions)

    @property
    def window(self) -> LiveWindow:
        if self.tail is None:
            raise LiveUnavailable(501, "this API process reads no Kafka broker (set VIDPULSE_KAFKA_BOOTSTRAP): "
                                       "live figures are not available here")
        if not self.tail.caught_up:
            raise LiveUnavailable(503, "the live view is still reading the last minutes of events from Kafka; "
                                       "retry in a few seconds")
        return self.tail.window

    def check_ready(self) -> None:
        _ = self.window

    def now_ms(self) -> int:
        return self._clock_ms()

    async def answer(self, question: LiveQuestion) -> dict[str, Any]:
        """A one-shot answer: the present computed now, the closed-minute figures as a watched channel or an
        earlier answer of the last ``slow_refresh_s`` has them (as fresh as a stream's)."""
        self.check_ready()
        channel = self._channels.get(question)
        closed = channel.closed if channel is not None else None
        if closed is None:
            closed = await self._recent_closed_minutes(question)
        return self.compose(question, closed)

    async def _recent_closed_minutes(self, question: LiveQuestion) -> dict[str, Any]:
        now = time.monotonic()
        cached = self._closed_cache.get(question)
        if cached is not None and now - cached[0] < self.slow_refresh_s:
            return cached[1]
        closed = await self.closed_minutes(question)
        if len(self._closed_cache) >= CLOSED_CACHE_SIZE:
            self._closed_cache = {q: entry for q, entry in self._closed_cache.items()
                                  if now - entry[0] < self.slow_refresh_s}
        self._closed_cache[question] = (now, closed)
        return closed

    @contextlib.asynccontextmanager
    async def subscribe(self, question: LiveQuestion, transport: str,
                        still_open: Callable[[], bool] = lambda: True) -> AsyncIterator[Subscriber]:
        """A subscriber of the question's channel (started with its first subscriber, ended after its last);
        it receives the latest message at once, and is ended when ``still_open`` (its key) turns false."""
        self.check_ready()
        subscriber = Subscriber(self.queue_size, still_open)
        if self.closing:
            subscriber.end("closing")
        channel = self._channels.get(question)
        if channel is None:
            channel = self._channels[question] = Channel(self, question)
            channel.task = asyncio.create_task(channel.run(), name=f"live-{question.account}")
            channel.task.add_done_callback(lambda _: self._forget(question, channel))
            self.metrics.channels.set(len(self._channels))
        channel.subscribers.add(subscriber)
        if channel.latest is not None:
            subscriber.offer(channel.latest)
        self.metrics.subscribers.labels(transport).inc()
        try:
            yield subscriber
        finally:
            channel.subscribers.discard(subscriber)
            self.metrics.subscribers.labels(transport).dec()

    def _forget(self, question: LiveQuestion, channel: Channel) -> None:
        if self._channels.get(question) is channel:
            del self._channels[question]
        self.metrics.channels.set(len(self._channels))
        if channel.task and not channel.task.cancelled() and channel.task.exception():
            log.error("live channel of %s failed: %s", question.account, channel.task.exception())
            for subscriber in channel.subscribers:
                subscriber.end("failed")

    def close(self) -> None:
        """The process shuts down: every stream ends now (its client reconnects elsewhere or later)."""
        self.closing = True
        for channel in self._channels.values():
            for subscriber in channel.subscribers:
                subscriber.end("closing")

    async def stop(self) -> None:
        for channel in list(self._channels.values()):
            if channel.task:
                channel.task.cancel()

    def compose(self, question: LiveQuestion, closed: dict[str, Any]) -> dict[str, Any]:
        """The spec's answer from the window's present and the closed-minute figures."""
        now_ms = self._clock_ms()
        found = self.window.figures(question.account, matcher(question.filters), now_ms)
        figures: dict[str, Any] = {
            "viewers": found.viewers, "plays_per_minute": found.plays,
            "watch_seconds_per_minute": round(found.watched_ms / 1000, 3),
            **_trend(found, closed.get("peak"), now_ms), **dict.fromkeys(QUALITY), **closed.get("quality", {}),
            **{name: _top(found, name) for name in BREAKDOWN_FIELDS}}
        answer: dict[str, Any] = {"account": question.account, "timestamp": _iso(now_ms, milliseconds=True)}
        for section, names in (("current", CURRENT), ("trend", TREND), ("quality", QUALITY)):
            asked = {name: figures[name] for name in names if name in question.fields}
            if asked:
                answer[section] = asked
        answer.update({name: figures[name] for name in BREAKDOWN_FIELDS if name in question.fields})
        return answer

    async def closed_minutes(self, question: LiveQuestion) -> dict[str, Any]:
        """The peak of per-minute ccu over the last 30 minutes and the quality of the last 5, through the
        query API's own code (only what the question's fields need)."""
        now_minute = self._clock_ms() // MINUTE_MS * MINUTE_MS
        closed: dict[str, Any] = {}
        if {"peak_viewers", "peak_at"} & set(question.fields):
            ask = Question(question.account, (), ("ccu",), question.filters,
                           now_minute - (PEAK_MINUTES - 1) * MINUTE_MS, now_minute + MINUTE_MS)
            series = (await answers.timeseries(self.db, ask, parse_buckets(ask, "1m", None)))["ccu"]["data"]
            points = [(point["value"], point["timestamp"]) for point in (series[0]["points"] if series else [])]
            closed["peak"] = max(points, default=(0, None))
        quality = [name for name in QUALITY if name in question.fields]
        if quality:
            ask = Question(question.account, (), tuple(quality), question.filters,
                           now_minute - (QUALITY_MINUTES - 1) * MINUTE_MS, now_minute + MINUTE_MS)
            rows = (await answers.totals(self.db, ask, None, False, 1, 0))["data"]
            closed["quality"] = rows[0]["totals"] if rows else {name: None for name in quality}
        return closed


    async def error_rates(self, question: LiveQuestion, dimensions: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
        """The query API's error rate of the last 5 minutes per combination of ``dimensions``."""
        now_minute = self._clock_ms() // MINUTE_MS * MINUTE_MS
        ask = Question(question.account, dimensions, ("error_rate",), question.filters,
                       now_minute - (QUALITY_MINUTES - 1) * MINUTE_MS, now_minute + MINUTE_MS)
        rows = (await answers.totals(self.db, ask, None, False, MAX_LIMIT, 0))["data"]
        return {tuple(row["dimensions"][name] for name in dimensions): row["totals"]["error_rate"] for row in rows}


def _trend(found: LiveFigures, peak: tuple[int, int | None] | None, now_ms: int) -> dict[str, Any]:
    change = None if not found.viewers_before else round(
        (found.viewers - found.viewers_before) / found.viewers_before * 100, 1)
    if change is None:
        direction = "increasing" if found.viewers else "steady"
    else:
        direction = "increasing" if change > STEADY_PCT else "decreasing" if change < -STEADY_PCT else "steady"
    peak_value, peak_minute = peak if peak and peak[0] else (0, None)
    if found.viewers > peak_value:  # the current minute's ccu is at least the viewers now
        peak_value, peak_minute = found.viewers, now_ms // MINUTE_MS * MINUTE_MS
    return {"viewers_change_pct": change, "trend": direction, "peak_viewers": peak_value,
            "peak_at": _iso(peak_minute) if peak_minute is not None else None}


def _top(found: LiveFigures, name: str) -> list[dict[str, Any]]:
    dimension = name.removeprefix("by_")
    ranked = sorted(found.groups[name].items(), key=lambda item: (-item[1].viewers, -item[1].plays, str(item[0])))
    return [{dimension: value, "viewers": group.viewers, "plays_per_minute": group.plays}
            for value, group in ranked[:TOP]]


def _iso(epoch_ms: int, milliseconds: bool = False) -> str:
    """The answer's instant to the millisecond (the figures are exact at it); minutes to the second."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace("+00:00", "Z")
