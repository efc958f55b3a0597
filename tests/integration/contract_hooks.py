"""Schemathesis hooks for the contract check: what the OpenAPI document says in words, taught to the generator.

A JSON Schema describes one parameter at a time; the rules between parameters are in the document's
descriptions (``from`` not after ``to``, at most 50,000 points per series, ``sort`` among the asked
metrics, one bucket choice, ``tz`` with ``time_step`` only, one video id on Livepeer's endpoints). Each
generated query is brought inside those rules here, so a refusal of it is a real contract failure. The
rules are written out again on purpose (not imported from ``queries.params``): the check must not share
the code it checks. Loaded by ``st run`` through the config file's ``hooks``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

import schemathesis

MINUTE_MS = 60_000
MAX_POINTS = 50_000
STEP_MINUTES = {"hour": 60, "day": 1440, "week": 7 * 1440, "month": 28 * 1440, "year": 365 * 1440, "all": 10**12}
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")


@schemathesis.serializer("text/plain")
def json_as_text(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """The beacon protocol's text/plain body is the same JSON (what navigator.sendBeacon sends)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode()


@schemathesis.hook
def before_call(ctx: schemathesis.HookContext, case: Any, kwargs: dict[str, Any]) -> None:
    """Every phase (the coverage phase runs no generation hooks): a positive case is brought inside the rules;
    a negative one is sent as generated."""
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    if str(getattr(mode, "value", mode)) == "positive":
        case.query = within_rules(case.operation.path, case.query or {})


def within_rules(path: str, query: dict[str, Any]) -> dict[str, Any]:
    query = {name: value for name, value in query.items() if value != ""}  # the document: empty means the default
    _one_of(query, "bucket_duration", "bucket_limit", "time_step")
    _one_of(query, "playbackId", "assetId", "streamId")
    if "tz" in query and "time_step" not in query:
        del query["tz"]
    if path.startswith("/v1/usage/"):
        _day_range(query)
    else:
        _time_range(query, series=path.startswith("/v1/timeseries/") or "timeStep" in query)
    _sort_among_metrics(query)
    if path == "/data/views/query/creator" and not (query.get("assetId") or query.get("streamId")):
        query["assetId"] = "video-1"
    return query


def _one_of(query: dict[str, Any], *names: str) -> None:
    given = [name for name in names if query.get(name) not in (None, "")]
    for name in given[1:]:
        del query[name]


def _ms(value: Any) -> int | None:
    text = str(value)
    if re.fullmatch(r"[0-9]{1,18}", text):
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _time_range(query: dict[str, Any], series: bool) -> None:
    """Both ends given (the defaults depend on the clock), in order, and few enough buckets."""
    start, end = _ms(query.get("from", "")), _ms(query.get("to", ""))
    if start is None and end is None:
        if "from" in query or "to" in query:
            return  # a value outside the schema: a negative case, left as generated
        if not series:
            return
        end = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        start = end - 32 * 24 * 60 * MINUTE_MS
    start, end = (start, start) if end is None else (end, end) if start is None else (start, end)
    if start // MINUTE_MS > end // MINUTE_MS:
        start, end = end, start
    if series and _points(query, (end // MINUTE_MS - start // MINUTE_MS) + 1) > MAX_POINTS:
        start = end
    query["from"], query["to"] = str(start), str(end)


def _points(query: dict[str, Any], span_minutes: int) -> int:
    step = query.get("time_step") or query.get("timeStep")
    if step:
        return math.ceil(span_minutes / STEP_MINUTES[str(step)]) + 2  # calendar buckets: a partial one at each end
    if query.get("bucket_limit") not in (None, ""):
        limit = int(query["bucket_limit"])
        return math.ceil(span_minutes / math.ceil(span_minutes / limit))
    match = _DURATION.match(str(query.get("bucket_duration") or "1m"))
    if not match:
        return 0
    minutes = int(match.group(1)) * {"m": 1, "h": 60, "d": 1440}[match.group(2)]
    return math.ceil(span_minutes / minutes)


def _day_range(query: dict[str, Any]) -> None:
    """Usage: both days given, in order, at most 400 days apart."""
    days = {name: _day(query.get(name)) for name in ("from", "to")}
    if None in days.values():
        if not any(days.values()) or ("from" in query and days["from"] is None) or ("to" in query and days["to"] is None):
            return
    first, last = days["from"] or days["to"], days["to"] or days["from"]
    assert first is not None and last is not None
    first, last = min(first, last), max(first, last)
    if (last - first).days >= 400:
        first = last
    query["from"], query["to"] = first.isoformat(), last.isoformat()


def _day(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _sort_among_metrics(query: dict[str, Any]) -> None:
    sort, metrics = query.get("sort"), query.get("metrics")
    if not isinstance(sort, str) or not sort or metrics is None:
        return
    names = metrics if isinstance(metrics, list) else str(metrics).split(",")
    if names and isinstance(names[0], str) and sort.lstrip("-") not in names:
        query["sort"] = ("-" if sort.startswith("-") else "") + names[0]
