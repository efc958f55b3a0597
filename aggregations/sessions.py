"""Sessionization as pure functions: which UTC minutes each session was concurrent in.

Protocol: every event but ``impression`` is activity. After an activity at t
the session stays active until its next event or t + timeout, whichever comes
first; after a ``stop`` it is inactive until its next event. A session counts
in a minute when an active stretch or an activity instant falls inside it.

A stretch's end is known only when the next event arrives, or when the
timeout has passed with none; so the minutes of a stretch are emitted then
(``advance`` and ``close``), while an activity instant's own minute is
emitted at once. Emitting a session-minute twice is harmless (the table keeps
distinct sessions per minute), which makes replays safe.

A session that ends (stop or timeout) after a view and before any first frame
is an exit before start, counted at its view's minute.

Events may arrive out of order: a tracker that spooled a batch while Kafka
was away appends it after later batches of the same session that another
tracker sent straight through. Each session therefore keeps the times of its
events, sorted, and an activity that arrives late gets its own stretch, up to
the next event known after it (exact: the stretch before it can only have been
written longer, and it ends where this one starts).

Known limits: a late ``stop`` or ``impression`` cannot shorten a stretch
already written before it (a written minute cannot be taken back), so such a
session may count in the minutes between it and that stretch's end; a session
that resumes and starts after an exit was counted stays counted.
"""

from __future__ import annotations

import bisect
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

MINUTE_MS = 60_000
NOT_ACTIVITY = "impression"
ENDS_ACTIVITY = ("impression", "stop")


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


Identified = TypeVar("Identified", bound=_HasId)


class SeenIds:
    """A session's event ids, for catching retried events: a tuple while small, a set beyond ``SMALL``.

    Most sessions hold tens of events; a set of 20 strings takes 2.2 KB, a tuple 0.2 KB, and scanning
    a few dozen interned strings costs about what hashing one does. A long session (hours of
    heartbeats) gets the set's constant-time lookups."""

    SMALL = 64
    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[str] = ()) -> None:
        unique = tuple(dict.fromkeys(sys.intern(event_id) for event_id in ids))
        self._ids: tuple[str, ...] | set[str] = unique if len(unique) <= self.SMALL else set(unique)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        if event_id not in self._ids:
            self._grow((event_id,))

    def keep_new(self, events: Sequence[Identified]) -> list[Identified]:
        """The events whose ids this has not seen (nor an earlier one of ``events``), in order; their ids are
        kept. The worker's check-and-add, one call per batch rather than two per event."""
        ids = self._ids
        fresh: list[Identified] = []
        new: dict[str, None] = {}
        for event in events:
            event_id = event.id
            if event_id not in ids and event_id not in new:
                new[event_id] = None
                fresh.append(event)
        if new:
            self._grow(new)
        return fresh

    def _grow(self, new: Iterable[str]) -> None:
        """``new``: ids not held yet. Interned: players number events alike, one copy of "17" for all sessions."""
        interned = [sys.intern(event_id) for event_id in new]
        if isinstance(self._ids, set):
            self._ids.update(interned)
        elif len(self._ids) + len(interned) <= self.SMALL:
            self._ids += tuple(interned)
        else:
            self._ids = {*self._ids, *interned}

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SeenIds):
            return set(self._ids) == set(other._ids)
        if isinstance(other, (set, frozenset)):
            return set(self._ids) == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"SeenIds({sorted(self._ids)!r})"


@dataclass(slots=True)  # slots: one per open session, and the worker may hold hundreds of thousands
class SessionState:
    """What the sessionizer remembers of one session between batches."""

    last_time_ms: int | None = None
    last_type: str = ""
    seen_ids: SeenIds = field(default_factory=SeenIds)
    closed: bool = True
    view_ms: int | None = None  # the first view: where an exit before start is counted
    started: bool = False  # a first frame was seen
    # every event's time, sorted (8 bytes each): where a late event's stretch ends
    times: array = field(default_factory=lambda: array("q"))

    @classmethod
    def from_history(cls, events: list[tuple[str, str, int]]) -> SessionState:
        """Rebuilds the state from stored (event_id, type, event_time_ms) rows after a restart.

        The rebuilt state is open when the last event was activity: closing it
        again re-emits minutes already written, which changes nothing.
        """
        if not events:  # a new session: most of a catch-up's, asked in bulk
            return cls()
        state = cls(seen_ids=SeenIds(event_id for event_id, _, _ in events),
                    times=array("q", sorted(time_ms for _, _, time_ms in events)))
        for _, event_type, time_ms in events:
            _note_start(state, event_type, time_ms)
        if events:
            _, state.last_type, state.last_time_ms = max(events, key=lambda event: event[2])
            state.closed = state.last_type in ENDS_ACTIVITY
        return state


def minutes_between(start_ms: int, end_ms: int) -> set[int]:
    """Minute starts (ms) that the half-open interval [start, end) touches."""
    if end_ms <= start_ms:
        return set()
    first = start_ms - start_ms % MINUTE_MS
    return set(range(first, end_ms, MINUTE_MS))


def minute_of(time_ms: int) -> int:
    return time_ms - time_ms % MINUTE_MS


def advance(state: SessionState, event_type: str, time_ms: int, timeout_ms: int) -> set[int]:
    """Applies one new event; returns the minutes it makes certain."""
    return advance_all(state, ((event_type, time_ms),), timeout_ms)


def advance_all(state: SessionState, events: Iterable[tuple[str, int]], timeout_ms: int) -> set[int]:
    """``advance`` of each (type, time) in turn, the minutes of all in one set: the worker's per-event loop,
    so it builds no set per event and makes one call per batch (bench/README.md, 3 December)."""
    minutes: set[int] = set()
    times = state.times
    for event_type, time_ms in events:
        if event_type == "view":  # _note_start, inlined: this loop runs once per event
            if state.view_ms is None or time_ms < state.view_ms:
                state.view_ms = time_ms
        elif event_type == "first_frame":
            state.started = True
        last = state.last_time_ms
        if last is None or time_ms >= last:
            if not state.closed and last is not None:
                end = min(time_ms, last + timeout_ms)
                if end > last:
                    minutes.update(range(last - last % MINUTE_MS, end, MINUTE_MS))
            state.last_time_ms, state.last_type = time_ms, event_type
            state.closed = event_type in ENDS_ACTIVITY
            times.append(time_ms)
        else:  # late: later events of the session came first
            index = bisect.bisect_right(times, time_ms)
            if event_type not in ENDS_ACTIVITY:
                following = times[index] if index < len(times) else last
                end = min(following, time_ms + timeout_ms)
                if end > time_ms:
                    minutes.update(range(time_ms - time_ms % MINUTE_MS, end, MINUTE_MS))
            times.insert(index, time_ms)
        if event_type != NOT_ACTIVITY:
            minutes.add(time_ms - time_ms % MINUTE_MS)
    return minutes


def close(state: SessionState, now_ms: int, timeout_ms: int, grace_ms: int) -> set[int]:
    """Emits the last stretch once no event can shorten it any more (timeout plus a grace for delivery)."""
    if state.closed or state.last_time_ms is None or now_ms < state.last_time_ms + timeout_ms + grace_ms:
        return set()
    state.closed = True
    return minutes_between(state.last_time_ms, state.last_time_ms + timeout_ms)


def exit_before_start(state: SessionState) -> int | None:
    """For a session that has ended (stop or timeout) after a view but before any first frame: the
    minute of its view, where the exit is counted. Asking again gives the same answer, and the
    table counts distinct sessions, so the exit is counted once."""
    if state.closed and state.view_ms is not None and not state.started:
        return minute_of(state.view_ms)
    return None


def _note_start(state: SessionState, event_type: str, time_ms: int) -> None:
    if event_type == "view" and (state.view_ms is None or time_ms < state.view_ms):
        state.view_ms = time_ms
    elif event_type == "first_frame":
        state.started = True
