"""From a validated envelope and what the request says about its sender, to the Kafka message.

Pure functions: no I/O, so the tracker's behaviour is unit-tested with plain data.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, NamedTuple

from pydantic import ValidationError

from ingest import geo, identity, useragent
from ingest.models import EVENT_ADAPTER, EnrichedBatch, EnrichedEvent, Envelope
from ingest.timing import event_time_ms, time_error

DUPLICATE_ID = "duplicate_id: an earlier event in this batch has the same id"

DAY_MS = 86_400_000
EPOCH = dt.date(1970, 1, 1)


class Sender(NamedTuple):
    """What the tracker knows of the request; never leaves the tracker as such."""

    received_at_ms: int
    ip: str
    user_agent: str


class Rejection(NamedTuple):
    index: int
    error: str
    event: Any


def validation_reason(exc: ValidationError, subject: str) -> str:
    """One line a player developer can act on: the failing field and why."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or subject
    return f"invalid: {where}: {first['msg']}"


def check_events(envelope: Envelope, received_at_ms: int, lateness_s: int) -> tuple[list[EnrichedEvent], list[Rejection]]:
    """Validate each event alone, so one bad event never costs the others."""
    accepted: list[EnrichedEvent] = []
    rejected: list[Rejection] = []
    seen_ids: set[str] = set()
    for index, raw in enumerate(envelope.events):
        try:
            event = EVENT_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            rejected.append(Rejection(index, validation_reason(exc, "event"), raw))
            continue
        when = event_time_ms(received_at_ms, envelope.sent_at, event.ts)
        reason = time_error(when, received_at_ms, lateness_s)
        if reason is None and event.id in seen_ids:
            reason = DUPLICATE_ID
        if reason:
            rejected.append(Rejection(index, reason, raw))
            continue
        seen_ids.add(event.id)
        accepted.append(EnrichedEvent(event_time_ms=when, **event.model_dump()))
    return accepted, rejected


def enrich(envelope: Envelope, events: list[EnrichedEvent], sender: Sender, salt: bytes,
           locator: geo.Locator | None = None) -> EnrichedBatch:
    """Attach identity, device and location; the raw IP and User-Agent stop here."""
    return EnrichedBatch(**batch_fields(envelope, sender, salt, locator),
                         events=sorted(events, key=lambda event: (event.event_time_ms, event.id)))


def batch_fields(envelope: Envelope, sender: Sender, salt: bytes, locator: geo.Locator | None) -> dict[str, Any]:
    """An enriched batch's fields but its events: the one place identity, device and place are derived, for the
    model path above and the tracker's fast path (``ingest.fastpath``, whose envelope reads like the model)."""
    fingerprint = identity.fingerprint(salt, envelope.account, sender.ip, sender.user_agent, envelope.player)
    agent = useragent.classify(sender.user_agent)
    place = locator.locate(sender.ip) if locator else geo.locate(sender.ip)
    context = envelope.context
    return dict(
        account=envelope.account, player=envelope.player, session=envelope.session,
        session_key=identity.session_key(envelope.account, fingerprint, envelope.session),
        fingerprint=fingerprint, video=envelope.video, live=envelope.live, tz=context.tz or "",
        user=context.user or "", domain=context.domain, duration_s=context.duration,
        country=place.country, continent=place.continent, subdivision=place.subdivision,
        device_type=agent.device_type, os=agent.os, browser=agent.browser, is_bot=agent.is_bot,
        received_at_ms=sender.received_at_ms,
    )


def salt_for(secret: str, rotate: bool, received_at_ms: int) -> bytes:
    return _salt_of_day(secret, rotate, received_at_ms // DAY_MS)


@functools.lru_cache(maxsize=4)
def _salt_of_day(secret: str, rotate: bool, day: int) -> bytes:
    """Once per UTC day, not per request (a date and a string each time were 1.5 % of a busy tracker)."""
    return identity.daily_salt(secret, rotate, EPOCH + dt.timedelta(days=day))
