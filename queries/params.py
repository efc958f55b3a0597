"""Parsing the query string into a validated question; every mistake becomes a QueryError with a fix."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
import zoneinfo
from dataclasses import dataclass

from queries.catalog import BOOLEAN_DIMENSIONS, ENUM_DIMENSIONS, GROUPABLE, METRICS

MINUTE_MS = 60_000
DEFAULT_RANGE_MS = 32 * 24 * 3600 * 1000
MAX_POINTS = 50_000
MAX_LIMIT = 10_000
TIME_STEPS = ("hour", "day", "week", "month", "year", "all")
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")
# A "+" in a URL's query string arrives as a space: "10:00:00 02:00" means "10:00:00+02:00".
_PLUS_AS_SPACE = re.compile(r" ([0-9]{2}:?[0-9]{2})$")
_WHOLE = re.compile(r"[0-9]{1,18}")
# ClickHouse DateTime ends on 2106-02-07; a range must end before then.
MAX_EPOCH_MS = 4_291_747_200_000  # 2106-01-01
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
    """Bucket start times; fixed steps of whole minutes from `from`, or calendar units in a time zone."""

    starts_ms: tuple[int, ...]
    step_ms: int | None = None
    unit: str | None = None
    tz: str = "UTC"

    @property
    def count(self) -> int:
        return len(self.starts_ms)

    def timestamps(self) -> list[int]:
        return list(self.starts_ms)


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


def parse_buckets(question: Question, duration: str | None, limit: str | None, time_step: str | None = None,
                  tz: str | None = None) -> Buckets:
    if sum(bool(choice) for choice in (duration, limit, time_step)) > 1:
        raise QueryError("use one of bucket_duration, bucket_limit or time_step, not several")
    if time_step:
        return calendar_buckets(question, time_step, tz or "UTC")
    if tz:
        raise QueryError("tz applies to time_step only: fixed buckets start at `from`")
    span_minutes = (question.end_ms - question.start_ms) // MINUTE_MS
    if limit:
        count_limit = _whole(limit)
        if count_limit is None or count_limit < 1:
            raise QueryError(f"bucket_limit must be a whole number of at least 1, not {limit!r}")
        step_minutes = math.ceil(span_minutes / count_limit)
    else:
        step_minutes = _duration_minutes(duration or "1m")
    count = math.ceil(span_minutes / step_minutes)
    _check_points(count, f"buckets of {step_minutes} min")
    step_ms = step_minutes * MINUTE_MS
    return Buckets(tuple(question.start_ms + i * step_ms for i in range(count)), step_ms=step_ms)


def calendar_buckets(question: Question, unit: str, tz: str) -> Buckets:
    """Livepeer-style steps aligned to calendar boundaries in ``tz``; the first bucket holds `from`."""
    if unit not in TIME_STEPS:
        raise QueryError(f"time_step must be one of {', '.join(TIME_STEPS)}, not {unit!r}", list(TIME_STEPS))
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise QueryError(f"tz must be an IANA time zone name, not {tz!r}") from exc
    if unit == "all":
        return Buckets((question.start_ms,), unit=unit, tz=tz)
    starts, current = [], _calendar_floor(_local(question.start_ms, zone), unit)
    while _epoch_ms(current) < question.end_ms:
        starts.append(_epoch_ms(current))
        current = _calendar_next(current, unit)
        _check_points(len(starts), f"{unit} buckets")
    return Buckets(tuple(starts), unit=unit, tz=tz)


def _local(epoch_ms: int, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, zone)


def _epoch_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _calendar_floor(moment: dt.datetime, unit: str) -> dt.datetime:
    floors = {"hour": dict(minute=0), "day": dict(hour=0, minute=0), "week": dict(hour=0, minute=0),
              "month": dict(day=1, hour=0, minute=0), "year": dict(month=1, day=1, hour=0, minute=0)}
    floored = moment.replace(second=0, microsecond=0, **floors[unit])
    if unit == "week":
        floored -= dt.timedelta(days=floored.weekday())  # weeks start on Monday (ISO 8601)
    return floored


def _calendar_next(moment: dt.datetime, unit: str) -> dt.datetime:
    """Wall-clock arithmetic on zone-aware times (zoneinfo recomputes the offset), so a day across a
    DST change is 23 or 25 hours long, as a calendar day is; hours are absolute."""
    if unit == "hour":
        return dt.datetime.fromtimestamp(moment.timestamp() + 3600, moment.tzinfo)
    if unit in ("day", "week"):
        return moment + dt.timedelta(days=1 if unit == "day" else 7)
    if unit == "month":
        return moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)
    return moment.replace(year=moment.year + 1)


def _check_points(count: int, what: str) -> None:
    if count > MAX_POINTS:
        raise QueryError(f"the range holds {count} {what}; at most {MAX_POINTS} points "
                         "per series: narrow from/to or use a longer bucket")


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
    epoch_ms = _whole(text)
    if epoch_ms is None:
        try:
            parsed = dt.datetime.fromisoformat(_PLUS_AS_SPACE.sub(r"+\1", text.replace("Z", "+00:00")))
        except ValueError as exc:
            raise QueryError(f"`{parameter}` must be epoch milliseconds or ISO 8601, not {text!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        epoch_ms = int(parsed.timestamp() * 1000)
    if not 0 <= epoch_ms < MAX_EPOCH_MS:
        raise QueryError(f"`{parameter}` must lie between 1970 and 2106 (what ClickHouse's DateTime holds), not {text!r}")
    return epoch_ms


def _bounded_int(parameter: str, text: str | None, default: int, low: int, high: int | None) -> int:
    if text is None or text == "":
        return default
    value = _whole(text)
    if value is None or value < low or (high is not None and value > high):
        limit = f" and {high}" if high is not None else ""
        raise QueryError(f"`{parameter}` must be a whole number between {low}{limit}, not {text!r}")
    return value


def _whole(text: str) -> int | None:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses), and few enough for ``int``."""
    return int(text) if _WHOLE.fullmatch(text) else None
