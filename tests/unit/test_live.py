"""The live window (who is watching at an instant) and the hub's sharing, pacing and dropping, without services."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from aggregations.live import LiveWindow
from ingest.models import EnrichedBatch, EnrichedEvent
from queries.auth import AuthError
from queries.live import FIELDS, LiveHub, LiveMetrics, parse_live
from queries.params import QueryError

T = 60_000  # session timeout
NOW = 1_800_000_000_000


def batch(session: int, events: list[tuple[str, str, int]], video: str = "v1", country: str = "DE",
          device: str = "desktop", account: str = "a", bot: bool = False, **extra: int) -> EnrichedBatch:
    return EnrichedBatch(
        account=account, player="web", session=f"s{session}", session_key=session, fingerprint=session, video=video,
        live=True, tz="UTC", user="", domain="", duration_s=None, country=country, continent="EU", subdivision="",
        device_type=device, os="Linux", browser="Firefox", is_bot=bot, received_at_ms=NOW,
        events=[EnrichedEvent(id=event_id, type=kind, ts=at, event_time_ms=at, **extra) for event_id, kind, at in events])


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Runs an async test in a fresh event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())
    return run


def everyone(account: str, values: tuple[Any, ...]) -> bool:
    return True


def test_a_session_watches_from_its_activity_until_the_timeout():
    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - 10_000)]), NOW)
    assert window.figures("a", everyone, NOW).viewers == 1
    assert window.figures("a", everyone, NOW - 10_001).viewers == 0  # not before its first activity
    assert window.figures("a", everyone, NOW - 10_000 + T - 1).viewers == 1
    assert window.figures("a", everyone, NOW - 10_000 + T).viewers == 0  # silent past the timeout


def test_stop_ends_watching_and_an_impression_is_no_activity():
    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - 20_000), ("2", "stop", NOW - 5_000)]), NOW)
    window.add(batch(2, [("1", "impression", NOW - 5_000)]), NOW)
    window.add(batch(3, [("1", "heartbeat", NOW - 30_000), ("2", "impression", NOW - 1_000)]), NOW)
    figures = window.figures("a", everyone, NOW)
    assert figures.viewers == 0
    assert window.figures("a", everyone, NOW - 6_000).viewers == 2  # sessions 1 and 3 before their ends


def test_a_retried_or_replayed_event_changes_nothing():
    window = LiveWindow(T)
    first = batch(1, [("1", "view", NOW - 2_000), ("2", "heartbeat", NOW - 1_000)], watched_ms=10_000)
    assert window.add(first, NOW) == 2
    assert window.add(first, NOW) == 0
    window.add(batch(1, [("2", "heartbeat", NOW - 1_000), ("3", "stop", NOW - 500)], watched_ms=1_000), NOW)
    figures = window.figures("a", everyone, NOW)
    # a view carries no watch time: 10 s of the first heartbeat and 1 s of the stop
    assert (figures.viewers, figures.plays, figures.watched_ms, window.duplicates) == (0, 1, 11_000, 3)


def test_bots_and_events_older_than_the_horizon_are_left_out():
    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - 1_000)], bot=True), NOW)
    window.add(batch(2, [("1", "view", NOW - window.horizon_ms - 1)]), NOW)
    assert window.sessions == 0


def test_plays_and_watch_time_count_the_last_60_seconds_only():
    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - 61_000), ("2", "heartbeat", NOW - 60_000)], watched_ms=5_000), NOW)
    window.add(batch(2, [("1", "view", NOW - 59_000), ("2", "heartbeat", NOW - 1)], watched_ms=7_000), NOW)
    figures = window.figures("a", everyone, NOW)
    assert (figures.plays, figures.watched_ms, figures.viewers) == (1, 7_000, 1)  # session 1 timed out at NOW


def test_five_minutes_ago_and_the_breakdowns():
    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - 5 * T - 10_000), ("2", "heartbeat", NOW - 1_000)], video="x"), NOW)
    window.add(batch(2, [("1", "view", NOW - 2_000)], video="y", country="FR", device="mobile"), NOW)
    window.add(batch(3, [("1", "view", NOW - 3_000)], video="y", country="FR", device="mobile"), NOW)
    figures = window.figures("a", everyone, NOW)
    assert (figures.viewers, figures.viewers_before) == (3, 1)
    assert {video: (g.viewers, g.plays) for video, g in figures.groups["by_video"].items()} == {"x": (1, 0), "y": (2, 2)}
    assert {c: g.viewers for c, g in figures.groups["by_country"].items()} == {"DE": 1, "FR": 2}
    assert {d: g.viewers for d, g in figures.groups["by_device_type"].items()} == {"desktop": 1, "mobile": 2}


def test_prune_forgets_only_what_can_no_longer_count():
    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - window.horizon_ms + 1_000)]), NOW)
    window.add(batch(2, [("1", "view", NOW - 1_000)]), NOW)
    before = window.figures("a", everyone, NOW + 2_000)
    window.prune(NOW + 2_000)
    after = window.figures("a", everyone, NOW + 2_000)
    assert window.sessions == 1 and (before.viewers, before.viewers_before) == (after.viewers, after.viewers_before)
    window.add(batch(1, [("1", "view", NOW - window.horizon_ms + 1_000)]), NOW + 2_000)  # too old now: ignored
    assert window.sessions == 1


def test_where_filters_sessions_by_the_query_apis_dimensions():
    from queries.live import matcher

    window = LiveWindow(T)
    window.add(batch(1, [("1", "view", NOW - 1_000)], video="x"), NOW)
    window.add(batch(2, [("1", "view", NOW - 1_000)], video="y", country="FR"), NOW)
    assert window.figures("a", matcher(parse_live("a", "video==x,y;country==FR", None).filters), NOW).viewers == 1
    assert window.figures("a", matcher(parse_live("a", "live==false", None).filters), NOW).viewers == 0
    assert window.figures("b", everyone, NOW).viewers == 0  # another account


def test_bad_questions_are_400s_with_the_valid_values():
    with pytest.raises(QueryError) as unknown:
        parse_live("a", None, "viewers,watchers")
    assert unknown.value.valid == list(FIELDS)
    with pytest.raises(QueryError):
        parse_live("a", "video=x", None)
    assert parse_live("a", None, "trend,viewers").fields == ("viewers", "trend")
    assert parse_live("a", None, "viewers").metrics == ("ccu",)


class _Hub:
    """A hub over a window fed by hand (no Kafka, no database: the fields asked need neither)."""

    def __init__(self, **options: Any) -> None:
        from prometheus_client import CollectorRegistry

        self.window = LiveWindow(T)
        self.now = NOW
        tail = SimpleNamespace(window=self.window, caught_up=True)
        self.hub = LiveHub(None, tail, LiveMetrics(CollectorRegistry()), clock_ms=lambda: self.now,  # type: ignore[arg-type]
                           **options)
        self.computed = 0
        compose = self.hub.compose

        def counting(*args: Any) -> dict[str, Any]:
            self.computed += 1
            return compose(*args)
        self.hub.compose = counting  # type: ignore[method-assign]


@in_loop
async def test_subscribers_of_one_question_share_one_computation_per_tick():
    fake = _Hub(tick_s=0.05)
    question = parse_live("a", None, "viewers,plays_per_minute,by_video")
    async with contextlib_nested(fake.hub, question, 200) as subscribers:
        await asyncio.sleep(0.5)
        assert fake.hub.metrics.channels._value.get() == 1
        assert 5 <= fake.computed <= 12  # per tick, not per subscriber
        for subscriber in subscribers:
            assert subscriber.pending == 1
            assert orjson.loads((await subscriber.next()).body)["current"] == {"viewers": 0, "plays_per_minute": 0}
    await asyncio.sleep(0.15)
    assert fake.hub.metrics.channels._value.get() == 0


@in_loop
async def test_a_message_goes_out_on_change_and_as_a_keep_alive_only():
    fake = _Hub(tick_s=0.05, keepalive_s=0.4)
    question = parse_live("a", None, "viewers")
    async with fake.hub.subscribe(question, "test") as subscriber:
        first = await within(subscriber, 1)
        assert first and orjson.loads(first.body)["current"]["viewers"] == 0
        assert await within(subscriber, 0.25) is None  # nothing changed, keep-alive not due
        fake.window.add(batch(1, [("1", "view", NOW)]), NOW)
        changed = await within(subscriber, 0.2)
        assert changed and changed.sequence == first.sequence + 1 and orjson.loads(changed.body)["current"]["viewers"] == 1
        assert changed.text == changed.body.decode()
        keepalive = await within(subscriber, 0.6)
        assert keepalive and orjson.loads(keepalive.body)["current"]["viewers"] == 1


@in_loop
async def test_a_subscriber_that_does_not_read_is_dropped_and_the_others_go_on():
    fake = _Hub(tick_s=0.02, keepalive_s=0.0, queue_size=4)
    question = parse_live("a", None, "viewers")
    async with fake.hub.subscribe(question, "test") as stuck, fake.hub.subscribe(question, "test") as reader:
        for _ in range(20):
            assert await within(reader, 1) is not None
        assert stuck.ended == "slow" and stuck.pending == 4 and reader.ended is None
        assert await stuck.next() is None  # what it holds is not delivered after the drop


@in_loop
async def test_a_revoked_key_ends_its_streams_at_the_next_tick_and_only_those():
    fake = _Hub(tick_s=0.02)
    question = parse_live("a", None, "viewers")
    valid = {"revoked": True, "kept": True}
    async with fake.hub.subscribe(question, "test", lambda: valid["revoked"]) as revoked, \
            fake.hub.subscribe(question, "test", lambda: valid["kept"]) as kept:
        assert await within(revoked, 1) is not None
        valid["revoked"] = False
        await asyncio.wait_for(revoked.finished.wait(), 1)
        assert revoked.ended == "revoked" and kept.ended is None


@in_loop
async def test_closing_ends_every_stream_and_refuses_new_ones():
    fake = _Hub(tick_s=0.02)
    question = parse_live("a", None, "viewers")
    async with fake.hub.subscribe(question, "test") as first:
        assert await within(first, 1) is not None
        waiting = asyncio.create_task(first.next())  # asleep: nothing changes, no keep-alive due
        await asyncio.sleep(0.05)
        fake.hub.close()
        assert await asyncio.wait_for(waiting, 1) is None and first.ended == "closing"
        async with fake.hub.subscribe(question, "test") as late:
            assert late.ended == "closing" and await late.next() is None


@in_loop
async def test_live_figures_refuse_until_the_window_is_read():
    fake = _Hub()
    fake.hub.tail.caught_up = False
    with pytest.raises(AuthError) as refused:
        await fake.hub.answer(parse_live("a", None, "viewers"))
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "5"}
    fake.hub.tail = None
    with pytest.raises(AuthError) as absent:
        fake.hub.check_ready()
    assert absent.value.status == 501


async def within(subscriber: Any, timeout_s: float) -> Any:
    """The subscriber's next message, or None when none came in time."""
    try:
        return await asyncio.wait_for(subscriber.next(), timeout_s)
    except TimeoutError:
        return None


class contextlib_nested:  # noqa: N801 - reads as the context manager it is
    """``count`` subscribers of one question, entered and left together."""

    def __init__(self, hub: LiveHub, question: Any, count: int) -> None:
        self.managers = [hub.subscribe(question, "test") for _ in range(count)]

    async def __aenter__(self) -> list[Any]:
        return [await manager.__aenter__() for manager in self.managers]

    async def __aexit__(self, *exc: object) -> None:
        for manager in self.managers:
            await manager.__aexit__(None, None, None)
