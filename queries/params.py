"""Parsing the query string into a validated question; every mistake becomes a QueryError with a fix."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import dataclass

from queries.catalog import BOOLEAN_DIMENSIONS, ENUM_DIMENSIONS, GROUPABLE, METRICS

MINUTE_MS = 60_000
DEFAULT_RANGE_MS = 32 * 24 * 3600 * 1000
MAX_POINTS = 50_000
MAX_LIMIT = 10_000
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")
# A "+" in a URL's query string arrives as a space: "10:00:00 02:00" means "10:00:00+02:00".
_PLUS_AS_SPACE = re.compile(r" ([0-9]{2}:?[0-9]{2})$")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}


class QueryError(Exception):
    """A 400: what is wrong, and where it helps, the values that would be right."""

    def __init__(self, error: str, valid: list[str] | None = None) -> None:
        super().__init__(error)
        self.error, self.valid = error, valid


@dataclass(frozen=True)
class Filter:
    dimension: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """What every endpoint asks: grouping, metrics, filters and the half-open range [start, end)."""

    account: str
    dimensions: tuple[str, ...]
    metrics: tuple[str, ...]
    filters: tuple[Filter, ...]
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Buckets:
    start_ms: int
    step_ms: int
    count: int

    def timestamps(self) -> list[int]:
        return [self.start_ms + i * self.step_ms for i in range(self.count)]


def parse_question(account: str, dimensions: str | None, metrics: str | None, where: str | None,
                   start: str | None, end: str | None, now_ms: int | None = None) -> Question:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    end_ms = _parse_time("to", end, now)
    start_ms = _parse_time("from", start, now - DEFAULT_RANGE_MS)
    start_ms -= start_ms % MINUTE_MS
    end_ms = end_ms - end_ms % MINUTE_MS + MINUTE_MS  # the minute holding `to` is included
    if start_ms >= end_ms:
        raise QueryError("`from` is after `to`")
    return Question(account, parse_dimensions(dimensions), parse_metrics(metrics), parse_where(where),
                    start_ms, end_ms)


def parse_dimensions(text: str | None) -> tuple[str, ...]:
    names = _names("dimensions", text)
    unknown = [name for name in names if name not in GROUPABLE]
    if unknown:
        raise QueryError(f"unknown dimension(s): {', '.join(unknown)}", list(GROUPABLE))
    return tuple(dict.fromkeys(name for name in names if name != "account"))


def parse_metrics(text: str | None) -> tuple[str, ...]:
    names = _names("metrics", text)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise QueryError(f"unknown metric(s): {', '.join(unknown)}", list(METRICS))
    return tuple(dict.fromkeys(names))


def parse_where(text: str | None) -> tuple[Filter, ...]:
    """``d1==v1,v2;d2==v3``: clauses are ANDed, listed values are alternatives."""
    if not text:
        return ()
    filters = []
    for clause in text.split(";"):
        name, sep, values = clause.partition("==")
        name = name.strip()
        listed = tuple(value.strip() for value in values.split(","))
        if not sep or not name or not all(listed):
            raise QueryError(f"malformed where clause {clause!r}: expected dimension==value[,value...]")
        if name not in GROUPABLE:
            raise QueryError(f"unknown dimension in where: {name}", list(GROUPABLE))
        _check_enum(name, listed)
        filters.append(Filter(name, listed))
    return tuple(filters)


def parse_buckets(question: Question, duration: str | None, limit: str | None) -> Buckets:
    if duration and limit:
        raise QueryError("use either bucket_duration or bucket_limit, not both")
    span_minutes = (question.end_ms - question.start_ms) // MINUTE_MS
    if limit:
        if not limit.isdigit() or int(limit) < 1:
            raise QueryError(f"bucket_limit must be a whole number of at least 1, not {limit!r}")
        step_minutes = math.ceil(span_minutes / int(limit))
    else:
        step_minutes = _duration_minutes(duration or "1m")
    count = math.ceil(span_minutes / step_minutes)
    if count > MAX_POINTS:
        raise QueryError(f"the range holds {count} buckets of {step_minutes} min; at most {MAX_POINTS} points "
                         "per series: narrow from/to or use a longer bucket_duration")
    return Buckets(question.start_ms, step_minutes * MINUTE_MS, count)


def parse_page(sort: str | None, limit: str | None, offset: str | None,
               metrics: tuple[str, ...]) -> tuple[str | None, bool, int, int]:
    """(sort metric, descending, limit, offset) for /v1/events."""
    descending = bool(sort and sort.startswith("-"))
    name = sort.lstrip("-") if sort else None
    if name is not None and name not in metrics:
        raise QueryError(f"sort must name one of the requested metrics, not {name!r}", list(metrics))
    return name, descending, _bounded_int("limit", limit, 100, 1, MAX_LIMIT), _bounded_int("offset", offset, 0, 0, None)


def _duration_minutes(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise QueryError(f"bucket_duration must be <n>m, <n>h or <n>d, not {text!r}")
    return int(match.group(1)) * _UNIT_MINUTES[match.group(2)]


def _names(parameter: str, text: str | None) -> list[str]:
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    if not names:
        raise QueryError(f"`{parameter}` is required: a comma-separated list")
    return names


def _check_enum(name: str, values: tuple[str, ...]) -> None:
    allowed = BOOLEAN_DIMENSIONS.get(name) or ENUM_DIMENSIONS.get(name)
    bad = [value for value in values if allowed and value not in allowed]
    if bad:
        raise QueryError(f"{name} takes {' or '.join(allowed or ())}, not {', '.join(bad)}", list(allowed or ()))


def _parse_time(parameter: str, text: str | None, default_ms: int) -> int:
    if text is None or text == "":
        return default_ms
    if text.isdigit():
        return int(text)
    try:
        parsed = dt.datetime.fromisoformat(_PLUS_AS_SPACE.sub(r"+\1", text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise QueryError(f"`{parameter}` must be epoch milliseconds or ISO 8601, not {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def _bounded_int(parameter: str, text: str | None, default: int, low: int, high: int | None) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        limit = f" and {high}" if high is not None else ""
        raise QueryError(f"`{parameter}` must be a whole number between {low}{limit}, not {text!r}")
    return int(text)
