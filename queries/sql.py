"""SQL over the minute pre-aggregations. Identifiers come from the catalog; values are bound parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from queries.catalog import BOOLEAN_DIMENSIONS, METRICS, METRICS_TABLE, UNIQUES_TABLE, Component
from queries.params import Buckets, Question

DAY_MS = 86_400_000
# The per-video rollups (per minute, per UTC day), and the value columns they share with the minute tables.
VIDEO_MINUTE = {METRICS_TABLE: "video_minute_metrics", UNIQUES_TABLE: "video_minute_uniques"}
DAY_ROLLUPS = {
    METRICS_TABLE: ("video_day_metrics", ("video_impression", "video_view", "watched_ms", "ad_start", "alive_ss_ad_start",
                                          "rebuffer_ms", "first_frames", "ttff", "fatal_sessions", "viewers")),
    UNIQUES_TABLE: ("video_day_uniques", ("sessions", "fingerprints", "exits_before_start")),
}

_CALENDAR_START = {
    "hour": "toUnixTimestamp(toStartOfHour(minute, {tz:String}))",
    "day": "toUnixTimestamp(toStartOfDay(minute, {tz:String}))",
    "week": "toUnixTimestamp(toDateTime(toStartOfWeek(minute, 1, {tz:String}), {tz:String}))",
    "month": "toUnixTimestamp(toDateTime(toStartOfMonth(minute, {tz:String}), {tz:String}))",
    "year": "toUnixTimestamp(toDateTime(toStartOfYear(minute, {tz:String}), {tz:String}))",
    "all": "{start_s:Int64}",
}


@dataclass
class Statement:
    sql: str
    components: list[Component]
    parameters: dict[str, Any] = field(default_factory=dict)


def component_groups(metrics: tuple[str, ...]) -> dict[tuple[str, bool], list[Component]]:
    """The distinct components the metrics need, by (table, max of minutes): one statement each."""
    groups: dict[tuple[str, bool], list[Component]] = {}
    for name in metrics:
        for component in METRICS[name].components:
            group = groups.setdefault((component.table, component.max_of_minutes), [])
            if component not in group:
                group.append(component)
    return groups


def timeseries(question: Question, buckets: Buckets, components: list[Component]) -> Statement:
    """Rows (bucket start in seconds, *dimensions, *component values)."""
    where, parameters = _where(question)
    parameters.update(_bucket_parameters(buckets))
    table, by_minute = _minute_table(question, components[0].table), components[0].max_of_minutes
    dims = list(question.dimensions)
    bucket = f"{_bucket_start(buckets)} AS bucket"
    values = [f"{c.sql} AS v{i}" for i, c in enumerate(components)]
    if not by_minute:
        return Statement(f"SELECT {', '.join([bucket, *dims, *values])} FROM {table} WHERE {where} "
                         f"GROUP BY {', '.join(['bucket', *dims])}", components, parameters)
    inner = f"SELECT {', '.join(['minute', *dims, *values])} FROM {table} WHERE {where} GROUP BY {', '.join(['minute', *dims])}"
    maxima = [f"max(v{i})" for i in range(len(components))]
    return Statement(f"SELECT {', '.join([bucket, *dims, *maxima])} FROM ({inner}) GROUP BY {', '.join(['bucket', *dims])}",
                     components, parameters)


def totals(question: Question, components: list[Component]) -> Statement:
    """Rows (*dimensions, *component values) over the whole range: uniques are distinct over the range.

    A question that groups and filters by video only (or not at all) reads its whole UTC
    days from the per-video day rollups and the partial days at its ends from the
    per-video minute rollups, so its cost is bounded by videos x days, not by traffic."""
    where, parameters = _where(question)
    dims = list(question.dimensions)
    values = ", ".join(f"{c.sql} AS v{i}" for i, c in enumerate(components))
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    table = components[0].table
    source = f"{_minute_table(question, table)} WHERE {where}"
    days = _whole_days(question)
    if days and table in DAY_ROLLUPS and _by_video_only(question):
        source = f"({_day_split(question, table, parameters, *days)})"
    return Statement(f"SELECT {', '.join([*dims, values])} FROM {source}{group}", components, parameters)


def _minute_table(question: Question, table: str) -> str:
    """The per-video minute rollup when the question needs no other dimension: one row per video and minute."""
    return VIDEO_MINUTE[table] if table in VIDEO_MINUTE and _by_video_only(question) else table


def _by_video_only(question: Question) -> bool:
    return set(question.dimensions) <= {"video"} and all(f.dimension == "video" for f in question.filters)


def _whole_days(question: Question) -> tuple[int, int] | None:
    first = -(-question.start_ms // DAY_MS) * DAY_MS
    last = question.end_ms // DAY_MS * DAY_MS
    return (first, last) if last > first else None


def _day_split(question: Question, table: str, parameters: dict[str, Any], first_ms: int, last_ms: int) -> str:
    """Partial first day and partial last day from the minute table, whole days from the rollup."""
    rollup, columns = DAY_ROLLUPS[table]
    table = _minute_table(question, table)
    parameters.update(day_first=first_ms // 1000, day_last=last_ms // 1000)
    filters = " AND ".join(["account = {account:String}", *_value_filters(question, parameters)])
    selected = ", ".join(["video", *columns])
    return " UNION ALL ".join([
        f"SELECT {selected} FROM {table} WHERE {filters} AND minute >= {{start:DateTime('UTC')}} "
        "AND minute < {day_first:DateTime('UTC')}",
        f"SELECT {selected} FROM {rollup} WHERE {filters} AND day >= toDate({{day_first:DateTime('UTC')}}) "
        "AND day < toDate({day_last:DateTime('UTC')})",
        f"SELECT {selected} FROM {table} WHERE {filters} AND minute >= {{day_last:DateTime('UTC')}} "
        "AND minute < {end:DateTime('UTC')}",
    ])


def _bucket_start(buckets: Buckets) -> str:
    if buckets.unit:
        return _CALENDAR_START[buckets.unit]
    return "{start_s:Int64} + intDiv(toInt64(toUInt32(minute)) - {start_s:Int64}, {step_s:Int64}) * {step_s:Int64}"


def _bucket_parameters(buckets: Buckets) -> dict[str, Any]:
    return {"start_s": buckets.starts_ms[0] // 1000, "step_s": (buckets.step_ms or 60_000) // 1000, "tz": buckets.tz}


def _where(question: Question) -> tuple[str, dict[str, Any]]:
    parameters: dict[str, Any] = {"account": question.account, "start": question.start_ms // 1000,
                                  "end": question.end_ms // 1000}
    clauses = ["account = {account:String}", "minute >= {start:DateTime('UTC')}", "minute < {end:DateTime('UTC')}",
               *_value_filters(question, parameters)]
    return " AND ".join(clauses), parameters


def _value_filters(question: Question, parameters: dict[str, Any]) -> list[str]:
    clauses = []
    for index, condition in enumerate(question.filters):
        if condition.dimension in BOOLEAN_DIMENSIONS:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(Bool)}}")
            parameters[f"w{index}"] = [value == "true" for value in condition.values]
        else:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(String)}}")
            parameters[f"w{index}"] = list(condition.values)
    return clauses
