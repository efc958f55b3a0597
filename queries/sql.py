"""SQL over the minute pre-aggregations. Identifiers come from the catalog; values are bound parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from queries.catalog import BOOLEAN_DIMENSIONS, METRICS, Component
from queries.params import Buckets, Question

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
    table, by_minute = components[0].table, components[0].max_of_minutes
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
    """Rows (*dimensions, *component values) over the whole range: uniques are distinct over the range."""
    where, parameters = _where(question)
    dims = list(question.dimensions)
    values = ", ".join(f"{c.sql} AS v{i}" for i, c in enumerate(components))
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    return Statement(f"SELECT {', '.join([*dims, values])} FROM {components[0].table} WHERE {where}{group}",
                     components, parameters)


def _bucket_start(buckets: Buckets) -> str:
    if buckets.unit:
        return _CALENDAR_START[buckets.unit]
    return "{start_s:Int64} + intDiv(toInt64(toUInt32(minute)) - {start_s:Int64}, {step_s:Int64}) * {step_s:Int64}"


def _bucket_parameters(buckets: Buckets) -> dict[str, Any]:
    return {"start_s": buckets.starts_ms[0] // 1000, "step_s": (buckets.step_ms or 60_000) // 1000, "tz": buckets.tz}


def _where(question: Question) -> tuple[str, dict[str, Any]]:
    clauses = ["account = {account:String}", "minute >= {start:DateTime('UTC')}", "minute < {end:DateTime('UTC')}"]
    parameters: dict[str, Any] = {"account": question.account, "start": question.start_ms // 1000,
                                  "end": question.end_ms // 1000}
    for index, condition in enumerate(question.filters):
        if condition.dimension in BOOLEAN_DIMENSIONS:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(Bool)}}")
            parameters[f"w{index}"] = [value == "true" for value in condition.values]
        else:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(String)}}")
            parameters[f"w{index}"] = list(condition.values)
    return " AND ".join(clauses), parameters
