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

import re
from typing import Any

import msgspec
from pydantic import ValidationError

from ingest import geo
from ingest.enrich import DUPLICATE_ID, Rejection, Sender, batch_fields, validation_reason
from ingest.models import EVENT_ADAPTER, MAX_MS, EnrichedEvent, Envelope
from ingest.timing import event_time_ms, time_error

MAX_EVENT_MS = 600_000  # ingest.models.Ms
# An id the models would keep as is: printable ASCII, no surrounding space (nothing to strip), 1 to 64 long.
_PLAIN_ID = re.compile(r"[!-~](?:[ -~]{0,62}[!-~])?")
_PERCENTS = frozenset((25, 50, 75, 100))


class Record(dict):  # type: ignore[type-arg]
    """A dict that also reads like the model it stands for (``batch.events``, ``event.id``); orjson writes it as
    the dict it is."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None



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
    percentiles = raw.get("percentiles", [])
    if type(percentiles) is not list or len(percentiles) > 1000:
        return False
    for value in percentiles:
        if type(value) is not int or not 0 <= value <= 100:
            return False
    event["watched_ms"], event["position"], event["percentiles"] = watched, position, list(percentiles)
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
    event["duration_ms"] = duration
    return True


def _ad_start(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    server_side = raw.get("server_side", False)
    if type(server_side) is not bool:
        return False
    event["server_side"] = server_side
    return True


def _error(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    code, message, fatal = raw.get("code", ""), raw.get("message", ""), raw.get("fatal", True)
    if not (_plain_text(code, 64) and _plain_text(message, 256) and type(fatal) is bool):
        return False
    event["code"], event["message"], event["fatal"] = code, message, fatal
    return True


def _nothing(raw: dict[str, Any], event: dict[str, Any]) -> bool:
    return True


_FIELDS = {"impression": _nothing, "view": _nothing, "first_frame": _first_frame, "heartbeat": _progress,
           "stop": _progress, "quartile": _quartile, "rebuffer": _rebuffer, "ad_start": _ad_start, "error": _error}


def plain_event(raw: Any) -> Record | None:
    """``EnrichedEvent``'s fields (but event_time_ms) of an event that is plainly valid; None to ask the models."""
    if type(raw) is not dict:
        return None
    kind = raw.get("type")
    fields = _FIELDS.get(kind) if type(kind) is str else None
    event_id, ts = raw.get("id"), raw.get("ts")
    if fields is None or type(event_id) is not str or _PLAIN_ID.fullmatch(event_id) is None \
            or type(ts) is not int or not 0 <= ts <= MAX_MS:
        return None
    event = Record(id=event_id, type=kind, ts=ts, event_time_ms=0, watched_ms=0, position=None, percentiles=[],
                   startup_ms=None, percent=0, duration_ms=0, server_side=False, code="", message="", fatal=False)
    return event if fields(raw, event) else None


def check_events(envelope: Envelope, received_at_ms: int, lateness_s: int) -> tuple[list[Record], list[Rejection]]:
    """``ingest.enrich.check_events`` with dicts out: the same events accepted, the same rejections and reasons."""
    accepted: list[Record] = []
    rejected: list[Rejection] = []
    seen_ids: set[str] = set()
    for index, raw in enumerate(envelope.events):
        event = plain_event(raw)
        if event is None:
            try:
                model = EVENT_ADAPTER.validate_python(raw)
            except ValidationError as exc:
                rejected.append(Rejection(index, validation_reason(exc, "event"), raw))
                continue
            event = Record(msgspec.structs.asdict(EnrichedEvent(event_time_ms=0, **model.model_dump())))
        when = event_time_ms(received_at_ms, envelope.sent_at, event["ts"])
        reason = time_error(when, received_at_ms, lateness_s)
        if reason is None and event["id"] in seen_ids:
            reason = DUPLICATE_ID
        if reason:
            rejected.append(Rejection(index, reason, raw))
            continue
        seen_ids.add(event["id"])
        event["event_time_ms"] = when
        accepted.append(event)
    return accepted, rejected


def enrich(envelope: Envelope, events: list[Record], sender: Sender, salt: bytes,
           locator: geo.Locator | None = None) -> Record:
    """``ingest.enrich.enrich`` as the dict its ``batch_dict()`` would be: what the tracker sends to Kafka."""
    return Record(**batch_fields(envelope, sender, salt, locator),
                  events=sorted(events, key=lambda event: (event["event_time_ms"], event["id"])))
