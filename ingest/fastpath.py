"""The tracker's hot path: events checked and enriched as plain dicts, no pydantic object per event.

Profiles under load put a third of the tracker's time into building, validating and
dumping one pydantic model per event. This module accepts, by hand, the events that
are plainly valid (the shapes players send: ASCII ids, integer times, fields of the
right JSON type within their bounds) and hands every other event to the contract's
own models (``ingest.models``), so **every rejection and its reason still comes from
the slow path**. What it accepts is exactly what the models accept, with the same
output: ``tests/unit/test_fastpath.py`` checks both on a corpus of valid and invalid
batches, and on generated ones.

The output dicts have the fields and order of ``EnrichedEvent``/``EnrichedBatch``'s
``batch_dict()``, so the Kafka message is the same bytes the slow path writes.
"""

from __future__ import annotations

import math
import re
from operator import itemgetter
from typing import Any

import msgspec
from pydantic import ValidationError

from ingest import geo
from ingest.enrich import DUPLICATE_ID, Rejection, Sender, batch_fields, validation_reason
from ingest.models import EVENT_ADAPTER, MAX_MS, EnrichedEvent, Envelope, known_zone, page_domain
from ingest.timing import clock_offset, time_error, window

MAX_EVENT_MS = 600_000  # ingest.models.Ms
# An id the models would keep as is: printable ASCII, no surrounding space (nothing to strip), 1 to 64 long.
_PLAIN_ID = re.compile(r"[!-~](?:[ -~]{0,62}[!-~])?")
_PERCENTS = frozenset((25, 50, 75, 100))
_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ingest.models.Ident, as the envelope bounds it
_SESSION = re.compile(r"[A-Za-z0-9_-]{8,64}")


class PlainContext(msgspec.Struct, frozen=True):
    """``Context``'s fields and its ``domain``, for a context read by hand (attributes, as the model's)."""

    tz: str | None
    user: str | None
    page: str | None
    duration: float | None
    domain: str


class PlainEnvelope(msgspec.Struct, frozen=True):
    """``Envelope``'s fields, for an envelope read by hand; a struct, since the hot path reads its attributes."""

    v: int
    account: str
    player: str
    session: str
    video: str
    live: bool
    sent_at: int | None
    context: PlainContext
    events: list[Any]


_NO_CONTEXT = PlainContext(tz=None, user=None, page=None, duration=None, domain="")  # Context()
_MISSING = object()


def _ms(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_EVENT_MS


def _plain_text(value: Any, limit: int) -> bool:
    """A string the models keep unchanged: ASCII without control characters, nothing to strip, within ``limit``."""
    return (type(value) is str and len(value) <= limit and value.isascii() and value.isprintable()
            and value == value.strip())


def _progress(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    watched = raw.get("watched_ms", 0)
    if not _ms(watched):
        return False
    position = raw.get("position")
    if position is not None:
        if type(position) is int and -(2**53) <= position <= 2**53:
            position = float(position)
        elif type(position) is not float:
            return False
    percentiles = raw.get("percentiles", _MISSING)
    if percentiles is not _MISSING:
        if type(percentiles) is not list or len(percentiles) > 1000:
            return False
        for value in percentiles:
            if type(value) is not int or not 0 <= value <= 100:
                return False
    # in EnrichedEvent's order, each only when not its default (the message omits defaults)
    if watched:
        event["watched_ms"] = watched
    if position is not None:
        event["position"] = position
    if percentiles is not _MISSING and percentiles:
        event["percentiles"] = list(percentiles)
    return True


def _first_frame(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    startup = raw.get("startup_ms")
    if not _ms(startup):
        return False
    event["startup_ms"] = startup
    return True


def _quartile(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    percent = raw.get("percent")
    if type(percent) is not int or percent not in _PERCENTS:
        return False
    event["percent"] = percent
    return True


def _rebuffer(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    duration = raw.get("duration_ms")
    if not _ms(duration):
        return False
    if duration:
        event["duration_ms"] = duration
    return True


def _ad_start(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    server_side = raw.get("server_side", False)
    if type(server_side) is not bool:
        return False
    if server_side:
        event["server_side"] = server_side
    return True


def _error(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    code, message, fatal = raw.get("code", ""), raw.get("message", ""), raw.get("fatal", True)
    if not (_plain_text(code, 64) and _plain_text(message, 256) and type(fatal) is bool):
        return False
    if code:
        event["code"] = code
    if message:
        event["message"] = message
    if fatal:
        event["fatal"] = fatal
    return True


def _nothing(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    return True


_FIELDS = {"impression": _nothing, "view": _nothing, "first_frame": _first_frame, "heartbeat": _progress,
           "stop": _progress, "quartile": _quartile, "rebuffer": _rebuffer, "ad_start": _ad_start, "error": _error}


def plain_event(raw: Any) -> dict[str, Any] | None:
    """``EnrichedEvent``'s fields (event_time_ms still 0) of an event that is plainly valid, as its message
    writes them: in the struct's order, those at their default left out; None to ask the models."""
    if type(raw) is not dict:
        return None
    kind = raw.get("type")
    fields = _FIELDS.get(kind) if type(kind) is str else None
    event_id, ts = raw.get("id"), raw.get("ts")
    if fields is None or type(event_id) is not str or _PLAIN_ID.fullmatch(event_id) is None \
            or type(ts) is not int or not 0 <= ts <= MAX_MS:
        return None
    event = {"id": event_id, "type": kind, "ts": ts, "event_time_ms": 0}
    return event if fields(raw, event) else None


def plain_envelope(payload: Any) -> PlainEnvelope | None:
    """``Envelope``'s fields (``context`` with its ``domain``) of an envelope that is plainly valid; None to ask
    the model. The events stay raw, as in the model."""
    if type(payload) is not dict:
        return None
    get = payload.get
    account, session, player, video = get("account"), get("session"), get("player"), get("video")
    version, live, sent_at, events = get("v", 1), get("live", False), get("sent_at"), get("events")
    if not (type(account) is str and _ACCOUNT.fullmatch(account) and type(session) is str
            and _SESSION.fullmatch(session) and _plain_text(player, 64) and player and _plain_text(video, 128)
            and video and type(version) is int and version == 1 and type(live) is bool
            and (sent_at is None or (type(sent_at) is int and 0 <= sent_at <= MAX_MS))
            and type(events) is list and events):
        return None
    context = _plain_context(get("context", _MISSING))
    if context is None:
        return None
    return PlainEnvelope(v=1, account=account, player=player, session=session, video=video, live=live,
                         sent_at=sent_at, context=context, events=events)


def _plain_context(raw: Any) -> PlainContext | None:
    if raw is _MISSING:
        return _NO_CONTEXT
    if type(raw) is not dict:
        return None
    tz, user, page, duration = raw.get("tz"), raw.get("user"), raw.get("page"), raw.get("duration")
    if not ((tz is None or _plain_text(tz, 64)) and (user is None or (_plain_text(user, 128) and user))
            and (page is None or _plain_text(page, 2048))):
        return None
    if type(duration) is int and 0 <= duration <= 2**53:
        duration = float(duration)
    elif not (duration is None or (type(duration) is float and 0 <= duration < math.inf)):
        return None
    return PlainContext(tz=known_zone(tz), user=user, page=page, duration=duration, domain=page_domain(page))


def check_events(envelope: Envelope | PlainEnvelope, received_at_ms: int,
                 lateness_s: int) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """``ingest.enrich.check_events`` with dicts out: the same events accepted, the same rejections and reasons."""
    accepted: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    seen_ids: set[str] = set()
    earliest, latest = window(received_at_ms, lateness_s)
    offset = clock_offset(received_at_ms, envelope.sent_at)  # event_time_ms, one subtraction per batch
    for index, raw in enumerate(envelope.events):
        event = plain_event(raw)
        if event is None:
            try:
                model = EVENT_ADAPTER.validate_python(raw)
            except ValidationError as exc:
                rejected.append(Rejection(index, validation_reason(exc, "event"), raw))
                continue
            event = msgspec.to_builtins(EnrichedEvent(event_time_ms=0, **model.model_dump()))
        when = event["ts"] + offset
        reason = None if earliest <= when <= latest else time_error(when, received_at_ms, lateness_s)
        if reason is None and event["id"] in seen_ids:
            reason = DUPLICATE_ID
        if reason:
            rejected.append(Rejection(index, reason, raw))
            continue
        seen_ids.add(event["id"])
        event["event_time_ms"] = when
        accepted.append(event)
    return accepted, rejected


def enrich(envelope: Envelope | PlainEnvelope, events: list[dict[str, Any]], sender: Sender, salt: bytes,
           locator: geo.Locator | None = None) -> dict[str, Any]:
    """``ingest.enrich.enrich`` as the dict its ``batch_dict()`` would be: what the tracker sends to Kafka."""
    batch = batch_fields(envelope, sender, salt, locator)
    batch["events"] = sorted(events, key=_EVENT_ORDER)
    return batch


_EVENT_ORDER = itemgetter("event_time_ms", "id")  # the model path's (event_time_ms, id), without a lambda per event
