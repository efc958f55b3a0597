"""The expected query answers, computed independently from what the tracker accepted.

This is the ground truth the pipeline is checked against, so it deliberately
shares no code with ``aggregations/*``: it re-derives every metric straight
from the beacon protocol and the query API spec, from the raw envelopes that
got a 202 plus, for each, the client IP and User-Agent the tracker saw.

Event time is exact only when it does not depend on the tracker's clock:
without ``sent_at`` the event time is ``ts`` (what ``vidpulse simulate``
sends). A batch with ``sent_at`` needs its ``received_at_ms``; if that is only
known to within the request's round trip, minute-level comparisons are exact
only for events that are not that close to a minute boundary.

Bots are not detected here (that would need the pipeline's User-Agent rules):
feed only human User-Agents, as the simulator does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import iptocc

MINUTE_MS = 60_000
DEFAULT_TIMEOUT_MS = 60_000
UNKNOWN_COUNTRY = "ZZ"
COUNTERS = ("video_impression", "video_view", "ad_start", "alive_ss_ad_start")
METRICS = (*COUNTERS, "video_seconds_viewed", "ccu", "fingerprint_count", "unique_viewers")


@dataclass(frozen=True)
class SentBatch:
    """One accepted beacon as sent, with what the tracker learnt from the request itself."""

    envelope: Mapping[str, Any]
    ip: str
    user_agent: str
    received_at_ms: int | None = None


@dataclass(frozen=True)
class TimedEvent:
    time_ms: int
    type: str
    raw: Mapping[str, Any]
    user: str


@dataclass
class Session:
    """One playback, identified as the protocol does: (account, fingerprint inputs, session id)."""

    account: str
    ip: str
    user_agent: str
    player: str
    session: str
    video: str
    country: str
    events: list[TimedEvent] = field(default_factory=list)

    @property
    def fingerprint_key(self) -> tuple[str, str, str, str]:
        """Stands for the keyed hash: equal inputs give equal fingerprints, and (bar collisions) only they."""
        return (self.account, self.ip, self.user_agent, self.player)


def country_of(ip: str) -> str:
    """The same offline registry data the tracker is specified to use; unknown is "ZZ"."""
    try:
        return iptocc.country_code(ip) or UNKNOWN_COUNTRY
    except (ValueError, TypeError):
        return UNKNOWN_COUNTRY


def event_time_ms(envelope: Mapping[str, Any], ts: int, received_at_ms: int | None) -> int:
    """Snowplow's derived timestamp; refuses to guess when the tracker's clock matters."""
    sent_at = envelope.get("sent_at")
    if sent_at is None:
        return ts
    if received_at_ms is None:
        raise ValueError("a batch with sent_at needs received_at_ms for an exact event time")
    return received_at_ms - (sent_at - ts)


def build_sessions(batches: Iterable[SentBatch]) -> list[Session]:
    """Groups accepted events by session, drops retried duplicates (same event id), sorts by time."""
    sessions: dict[tuple[str, ...], Session] = {}
    seen: set[tuple[tuple[str, ...], str]] = set()
    for batch in batches:
        env = batch.envelope
        key = (env["account"], batch.ip, batch.user_agent, env["player"], env["session"])
        session = sessions.get(key)
        if session is None:
            session = sessions[key] = Session(*key, video=env["video"], country=country_of(batch.ip))
        elif session.video != env["video"]:
            raise ValueError(f"session {env['session']} changes video; the protocol has one video per session")
        user = (env.get("context") or {}).get("user") or ""
        for raw in env["events"]:
            if (key, raw["id"]) in seen:
                continue
            seen.add((key, raw["id"]))
            when = event_time_ms(env, raw["ts"], batch.received_at_ms)
            session.events.append(TimedEvent(when, raw["type"], raw, user))
    for session in sessions.values():
        session.events.sort(key=lambda event: event.time_ms)
    return list(sessions.values())


def activity(session: Session, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> tuple[list[int], list[tuple[int, int]]]:
    """Activity instants and half-open active stretches [start, end), per "Sessions and concurrency"."""
    instants: list[int] = []
    stretches: list[tuple[int, int]] = []
    events = session.events
    for index, event in enumerate(events):
        if event.type == "impression":
            continue
        instants.append(event.time_ms)
        if event.type == "stop":
            continue
        end = event.time_ms + timeout_ms
        if index + 1 < len(events):
            end = min(end, events[index + 1].time_ms)
        if end > event.time_ms:
            stretches.append((event.time_ms, end))
    return instants, stretches


def active_minutes(session: Session, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> set[int]:
    """UTC minute starts (ms) in which the session is concurrent."""
    instants, stretches = activity(session, timeout_ms)
    minutes = {minute_of(t) for t in instants}
    for start, end in stretches:
        minutes.update(range(minute_of(start), end, MINUTE_MS))
    return minutes


def minute_of(time_ms: int) -> int:
    return time_ms - time_ms % MINUTE_MS


def ccu_timeseries(sessions: Iterable[Session], from_ms: int, to_ms: int,
                   timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[int, int]:
    """Concurrent sessions per minute, every minute from floor(from) through the minute holding ``to``."""
    counts = dict.fromkeys(range(minute_of(from_ms), minute_of(to_ms) + 1, MINUTE_MS), 0)
    for session in sessions:
        for minute in active_minutes(session, timeout_ms):
            if minute in counts:
                counts[minute] += 1
    return counts


def fingerprint_timeseries(sessions: Iterable[Session], from_ms: int, to_ms: int,
                           timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[int, int]:
    """Distinct fingerprints of the concurrent sessions per minute (the 1-minute fingerprint_count series)."""
    seen: dict[int, set[tuple[str, str, str, str]]] = {
        minute: set() for minute in range(minute_of(from_ms), minute_of(to_ms) + 1, MINUTE_MS)}
    for session in sessions:
        for minute in active_minutes(session, timeout_ms):
            if minute in seen:
                seen[minute].add(session.fingerprint_key)
    return {minute: len(keys) for minute, keys in seen.items()}


def totals(sessions: Iterable[Session], from_ms: int, to_ms: int,
           timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[str, float | int]:
    """The events endpoint's totals over [floor(from), end of the minute holding ``to``)."""
    start, stop = minute_of(from_ms), minute_of(to_ms) + MINUTE_MS
    result: dict[str, float | int] = dict.fromkeys(COUNTERS, 0)
    watched_ms, concurrent, fingerprints, viewers = 0, 0, set(), set()
    for session in sessions:
        for event in session.events:
            if start <= event.time_ms < stop:
                watched_ms += _count(event, result)
                if event.type == "view" and event.user:
                    viewers.add(event.user)
        if any(start <= minute < stop for minute in active_minutes(session, timeout_ms)):
            concurrent += 1
            fingerprints.add(session.fingerprint_key)
    result.update(video_seconds_viewed=round(watched_ms / 1000, 3), ccu=concurrent,
                  fingerprint_count=len(fingerprints), unique_viewers=len(viewers))
    return result


def _count(event: TimedEvent, result: dict[str, float | int]) -> int:
    """Adds one event to the counters; returns its watched ms."""
    if event.type == "impression":
        result["video_impression"] += 1
    elif event.type == "view":
        result["video_view"] += 1
    elif event.type == "ad_start":
        result["ad_start"] += 1
        result["alive_ss_ad_start"] += int(bool(event.raw.get("server_side", False)))
    elif event.type in ("heartbeat", "stop"):
        return int(event.raw.get("watched_ms", 0))
    return 0


def time_range(sessions: Iterable[Session], timeout_ms: int = DEFAULT_TIMEOUT_MS) -> tuple[int, int]:
    """From the first event to the last instant any session is still active (or the last event)."""
    times: list[int] = []
    for session in sessions:
        times.extend(event.time_ms for event in session.events)
        times.extend(end - 1 for _, end in activity(session, timeout_ms)[1])
    if not times:
        raise ValueError("no accepted events: nothing to compute")
    return min(times), max(times)


def grouped(sessions: list[Session], key: Callable[[Session], str]) -> dict[str, list[Session]]:
    groups: dict[str, list[Session]] = {}
    for session in sessions:
        groups.setdefault(key(session), []).append(session)
    return dict(sorted(groups.items()))


def compute_truth(account: str, batches: list[SentBatch], timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[str, Any]:
    """The truth file: totals per account, video and (video, country), plus the per-minute CCU series."""
    sessions = [s for s in build_sessions(batches) if s.account == account]
    first, last = time_range(sessions, timeout_ms)
    by_video = grouped(sessions, lambda s: s.video)
    by_video_country = grouped(sessions, lambda s: f"{s.video}|{s.country}")

    def series(group: list[Session], per_minute: Callable[..., dict[int, int]] = ccu_timeseries) -> list[dict[str, int]]:
        points = per_minute(group, first, last, timeout_ms)
        return [{"timestamp": minute, "value": value} for minute, value in points.items()]

    return {
        "account": account,
        "range": {"from": first, "to": last},
        "totals": {
            "account": totals(sessions, first, last, timeout_ms),
            "by_video": {video: totals(group, first, last, timeout_ms) for video, group in by_video.items()},
            "by_video_country": {key: totals(group, first, last, timeout_ms) for key, group in by_video_country.items()},
        },
        "timeseries": {
            "ccu": {"account": series(sessions), "by_video": {video: series(group) for video, group in by_video.items()}},
            "fingerprint_count": {"account": series(sessions, fingerprint_timeseries),
                                  "by_video": {video: series(group, fingerprint_timeseries)
                                               for video, group in by_video.items()}},
        },
        "sessions": len(sessions),
        "batches": sum(1 for b in batches if b.envelope["account"] == account),
        "events": sum(len(s.events) for s in sessions),
    }
