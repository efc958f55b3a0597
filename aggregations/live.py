"""Who is watching now: the sessions of the last minutes, in memory, from the events topic.

The historical tables answer about minutes; the live figures need the present to
the second and must move within a second of a beacon. Every API process therefore
reads the enriched batches from Kafka itself (``aggregations.livetail``) into a
``LiveWindow``: per session, its events of the last ``horizon`` (five minutes plus
the session timeout, enough to judge who watched five minutes ago) and the
dimensions of its latest batch. The state is rebuilt from Kafka after a restart,
so it needs no store of its own, and every API process that reads the same log
holds the same numbers.

The protocol's rule, as in ``aggregations.sessions``: after an activity at t0 a
session is watching until its next event or t0 + timeout; an ``impression`` is no
activity and a ``stop`` ends it. An event seen again (same session, same id: a
retried batch, a replayed spool) changes nothing. Bots are left out, as in every
metric.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aggregations.rows import DIMENSIONS, dimension_values
from aggregations.sessions import ENDS_ACTIVITY
from ingest.models import EnrichedBatch

TREND_WINDOW_MS = 5 * 60_000   # viewers are compared with this long ago
RATE_WINDOW_MS = 60_000        # plays and watch time per minute: the last 60 s
BREAKDOWNS = {"by_video": DIMENSIONS.index("video"), "by_country": DIMENSIONS.index("country"),
              "by_device_type": DIMENSIONS.index("device_type")}
Matcher = Callable[[str, tuple[Any, ...]], bool]  # (account, dimension values) -> does the session count


@dataclass
class LiveSession:
    """One session's events inside the window, sorted by event time (then arrival)."""

    dimensions: tuple[Any, ...]
    events: list[tuple[int, int, str, int]] = field(default_factory=list)  # (time ms, arrival, type, watched ms)
    ids: dict[str, int] = field(default_factory=dict)  # event id -> its time: retries are recognised

    def watching(self, at_ms: int, timeout_ms: int) -> bool:
        """The protocol's state at ``at_ms``, judged from the events received so far."""
        events = self.events
        if events[-1][0] <= at_ms:  # the usual case, asked about now: the newest event decides
            time_ms, _, event_type, _ = events[-1]
        else:
            index = bisect.bisect_right(events, at_ms, key=_time) - 1
            if index < 0:
                return False
            time_ms, _, event_type, _ = events[index]
        return event_type not in ENDS_ACTIVITY and at_ms < time_ms + timeout_ms


def _time(event: tuple[int, int, str, int]) -> int:
    return event[0]


@dataclass
class Group:
    viewers: int = 0
    plays: int = 0


@dataclass
class LiveFigures:
    """What the window says of one account (and filter) at one instant."""

    viewers: int = 0
    viewers_before: int = 0  # TREND_WINDOW_MS ago
    plays: int = 0           # view events in the last RATE_WINDOW_MS
    watched_ms: int = 0      # watched_ms of heartbeats and stops in the last RATE_WINDOW_MS
    groups: dict[str, dict[Any, Group]] = field(default_factory=lambda: {name: {} for name in BREAKDOWNS})


class LiveWindow:
    """The recent sessions of every account, fed with enriched batches in any order."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self.horizon_ms = TREND_WINDOW_MS + timeout_ms
        self._accounts: dict[str, dict[int, LiveSession]] = {}
        self._arrivals = 0
        self.duplicates = 0

    @property
    def sessions(self) -> int:
        return sum(len(sessions) for sessions in self._accounts.values())

    @property
    def events(self) -> int:
        return sum(len(session.events) for sessions in self._accounts.values() for session in sessions.values())

    def add(self, batch: EnrichedBatch, now_ms: int) -> int:
        """Takes a batch's events that are inside the window and new; returns how many it took."""
        if batch.is_bot:
            return 0
        oldest = now_ms - self.horizon_ms
        sessions = self._accounts.setdefault(batch.account, {})
        session = sessions.get(batch.session_key)
        if session is None:
            session = sessions[batch.session_key] = LiveSession(dimension_values(batch))
        else:
            session.dimensions = dimension_values(batch)  # a session is counted under its latest batch's values
        taken = 0
        for event in batch.events:
            if event.event_time_ms < oldest:
                continue
            if event.id in session.ids:
                self.duplicates += 1
                continue
            self._arrivals += 1
            session.ids[event.id] = event.event_time_ms
            watched = event.watched_ms if event.type in ("heartbeat", "stop") else 0
            bisect.insort(session.events, (event.event_time_ms, self._arrivals, event.type, watched))
            taken += 1
        if not session.events:
            del sessions[batch.session_key]
        return taken

    def prune(self, now_ms: int) -> None:
        """Forgets events older than the horizon: none of them can change a figure any more."""
        oldest = now_ms - self.horizon_ms
        for account, sessions in list(self._accounts.items()):
            for key, session in list(sessions.items()):
                if session.events and session.events[0][0] >= oldest:
                    continue
                cut = bisect.bisect_left(session.events, oldest, key=_time)
                session.events = session.events[cut:]
                session.ids = {event_id: time_ms for event_id, time_ms in session.ids.items() if time_ms >= oldest}
                if not session.events:
                    del sessions[key]
            if not sessions:
                del self._accounts[account]

    def figures(self, account: str, matches: Matcher | None, now_ms: int) -> LiveFigures:
        """Viewers now and five minutes ago, plays and watch time of the last minute, and the breakdowns.
        Runs over every session of the account once a second per watched question: written for speed."""
        found = LiveFigures()
        timeout, before_ms, since_ms = self.timeout_ms, now_ms - TREND_WINDOW_MS, now_ms - RATE_WINDOW_MS
        groups = [(index, found.groups[name]) for name, index in BREAKDOWNS.items()]
        viewers = viewers_before = plays_total = watched_total = 0
        for session in self._accounts.get(account, {}).values():
            dimensions, events = session.dimensions, session.events
            if matches is not None and not matches(account, dimensions):
                continue
            last_time, _, last_type, _ = events[-1]
            if last_time <= now_ms:
                watching = last_type not in ENDS_ACTIVITY and now_ms < last_time + timeout
            else:
                watching = session.watching(now_ms, timeout)
            if events[0][0] <= before_ms:
                viewers_before += session.watching(before_ms, timeout)
            plays = watched = 0
            for time_ms, _, event_type, watched_ms in reversed(events):
                if time_ms <= since_ms:
                    break
                if time_ms <= now_ms:
                    plays += event_type == "view"
                    watched += watched_ms
            viewers += watching
            plays_total += plays
            watched_total += watched
            if watching or plays:
                for index, by_value in groups:
                    group = by_value.get(dimensions[index])
                    if group is None:
                        group = by_value[dimensions[index]] = Group()
                    group.viewers += watching
                    group.plays += plays
        found.viewers, found.viewers_before, found.plays, found.watched_ms = (viewers, viewers_before, plays_total,
                                                                             watched_total)
        return found

    def viewers_by(self, account: str, matches: Matcher | None, now_ms: int,
                   dimensions: tuple[str, ...]) -> dict[tuple, int]:
        """Sessions watching at ``now_ms`` per combination of the named dimensions' values."""
        indexes = [DIMENSIONS.index(name) for name in dimensions]
        found: dict[tuple, int] = {}
        for session in self._accounts.get(account, {}).values():
            if (matches is None or matches(account, session.dimensions)) and session.watching(now_ms, self.timeout_ms):
                values = tuple(session.dimensions[index] for index in indexes)
                found[values] = found.get(values, 0) + 1
        return found
