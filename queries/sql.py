"""SQL over the minute pre-aggregations. Identifiers come from the catalog; values are bound parameters.

Long ranges read their whole UTC days and hours from the rollup projections of the minute tables
(migration 0010) and only the minutes at their edges from the minute rows, merging the parts'
sums and states in one aggregate, so a range's cost is bounded by days and hours x videos rather
than by traffic. Timeseries do so per bucket, for the units that lie wholly inside one bucket.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from queries.catalog import BOOLEAN_DIMENSIONS, METRICS, Component
from queries.params import MINUTE_MS, Buckets, Question

HOUR_MS, DAY_MS = 60 * MINUTE_MS, 1440 * MINUTE_MS
# The rollup levels, coarsest first: the key each projection groups by (exactly as migration 0010
# writes it, or ClickHouse does not match it) and the length of its unit. "minute" is the rows.
LEVELS = (("toStartOfDay(minute)", DAY_MS), ("toStartOfHour(minute)", HOUR_MS), ("minute", MINUTE_MS))
# The rollups keep no dimension but the video; a question grouping or filtering by another reads minutes.
ROLLUP_DIMENSIONS = frozenset({"account", "video"})
# Spans per level beyond which a question reads minutes only (many buckets not aligned to hours).
MAX_SPANS = 64
# Otherwise ClickHouse rewrites toStartOfDay(minute) >= x into minute >= x, which no projection can answer.
_SETTINGS = " SETTINGS optimize_time_filter_with_preimage = 0"
Span = tuple[int, int]

_CALENDAR_START = {
    "hour": "toUnixTimestamp(toStartOfHour({t}, {{tz:String}}))",
    "day": "toUnixTimestamp(toStartOfDay({t}, {{tz:String}}))",
    "week": "toUnixTimestamp(toDateTime(toStartOfWeek({t}, 1, {{tz:String}}), {{tz:String}}))",
    "month": "toUnixTimestamp(toDateTime(toStartOfMonth({t}, {{tz:String}}), {{tz:String}}))",
    "year": "toUnixTimestamp(toDateTime(toStartOfYear({t}, {{tz:String}}), {{tz:String}}))",
    "all": "{{start_s:Int64}}",
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
    """Rows (bucket start in seconds, *dimensions, *component values).

    Points that are the max of per-minute values need every minute: they read minutes (ClickHouse
    answers those from the per-minute projections by itself when they fit)."""
    where, parameters = _where(question)
    parameters.update(_bucket_parameters(buckets))
    table, by_minute = components[0].table, components[0].max_of_minutes
    dims = list(question.dimensions)
    values = [f"{c.sql} AS v{i}" for i, c in enumerate(components)]
    group = f"GROUP BY {', '.join(['bucket', *dims])}"
    short = buckets.step_ms is not None and buckets.step_ms < HOUR_MS  # no bucket holds a whole hour
    levels = None if by_minute or short else _rollup_levels(question, _bucket_spans(question, buckets))
    if levels:
        source = _rolled_source(question, components, levels, parameters)
        bucket = f"{_bucket_start(buckets, 't')} AS bucket"
        return Statement(f"SELECT {', '.join([bucket, *dims, *values])} FROM ({source}) {group}{_SETTINGS}",
                         components, parameters)
    bucket = f"{_bucket_start(buckets, 'minute')} AS bucket"
    if not by_minute:
        return Statement(f"SELECT {', '.join([bucket, *dims, *values])} FROM {table} WHERE {where} {group}",
                         components, parameters)
    inner = f"SELECT {', '.join(['minute', *dims, *values])} FROM {table} WHERE {where} GROUP BY {', '.join(['minute', *dims])}"
    maxima = [f"max(v{i})" for i in range(len(components))]
    return Statement(f"SELECT {', '.join([bucket, *dims, *maxima])} FROM ({inner}) {group}", components, parameters)


def totals(question: Question, components: list[Component]) -> Statement:
    """Rows (*dimensions, *component values) over the whole range: uniques are distinct over the range."""
    where, parameters = _where(question)
    dims = list(question.dimensions)
    values = ", ".join(f"{c.sql} AS v{i}" for i, c in enumerate(components))
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    levels = _rollup_levels(question, [(question.start_ms, question.end_ms)])
    if levels:
        source = _rolled_source(question, components, levels, parameters)
        return Statement(f"SELECT {', '.join([*dims, values])} FROM ({source}){group}{_SETTINGS}",
                         components, parameters)
    return Statement(f"SELECT {', '.join([*dims, values])} FROM {components[0].table} WHERE {where}{group}",
                     components, parameters)


def split(spans: list[Span]) -> dict[str, list[Span]]:
    """Each [start, end) (whole minutes, in ms) cut into whole UTC days, then whole hours, then the
    minutes left at its edges; per level, pieces that touch are joined. Levels without pieces are absent."""
    pieces: dict[str, list[Span]] = {}

    def cut(start: int, end: int, levels: tuple[tuple[str, int], ...]) -> None:
        (key, unit), rest = levels[0], levels[1:]
        first, last = -(-start // unit) * unit, end // unit * unit
        if first >= last:
            if rest:
                cut(start, end, rest)
            return
        pieces.setdefault(key, []).append((first, last))
        for edge in ((start, first), (last, end)):
            if rest and edge[0] < edge[1]:
                cut(*edge, rest)

    for start, end in spans:
        cut(start, end, LEVELS)
    return {key: _joined(found) for key, found in pieces.items()}


def _joined(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _bucket_spans(question: Question, buckets: Buckets) -> list[Span]:
    """The part of the range each bucket covers."""
    ends = [*buckets.starts_ms[1:], question.end_ms]
    clipped = [(max(start, question.start_ms), min(end, question.end_ms))
               for start, end in zip(buckets.starts_ms, ends, strict=True)]
    return [(start, end) for start, end in clipped if start < end]


def _rollup_levels(question: Question, spans: list[Span]) -> dict[str, list[Span]] | None:
    """The cut of the spans when the rollups can answer the question and hold a whole unit of it; else None."""
    if not set(question.dimensions) | {f.dimension for f in question.filters} <= ROLLUP_DIMENSIONS:
        return None
    levels = split(spans)
    if set(levels) <= {"minute"} or any(len(found) > MAX_SPANS for found in levels.values()):
        return None
    return levels


def _rolled_source(question: Question, components: list[Component], levels: dict[str, list[Span]],
                   parameters: dict[str, Any]) -> str:
    """One arm per level: the aggregate parts of its spans per (unit start ``t``, *dimensions), UNION ALL.
    Grouping by the projection's own unit spares merging states twice."""
    columns = list(dict.fromkeys((c.column, c.partial) for c in components))
    filters = _filters(question, parameters)
    arms = []
    for number, key in enumerate(key for key, _ in LEVELS if key in levels):
        spans = []
        for index, (start, end) in enumerate(levels[key]):
            parameters[f"l{number}s{index}"], parameters[f"l{number}e{index}"] = utc_text(start), utc_text(end)
            spans.append(f"({key} >= {{l{number}s{index}:DateTime('UTC')}} "
                         f"AND {key} < {{l{number}e{index}:DateTime('UTC')}})")
        selected = [f"{key} AS t", *question.dimensions, *(f"{partial} AS {column}" for column, partial in columns)]
        where = " AND ".join(["account = {account:String}", f"({' OR '.join(spans)})", *filters])
        arms.append(f"SELECT {', '.join(selected)} FROM {components[0].table} WHERE {where} "
                    f"GROUP BY {', '.join([key, *question.dimensions])}")
    return " UNION ALL ".join(arms)


def utc_text(epoch_ms: int) -> str:
    """A DateTime('UTC') parameter as text: ClickHouse reads a short number such as 0 or 60 as a malformed
    date, not as seconds since 1970 (``from=0`` failed in the database)."""
    return dt.datetime.fromtimestamp(epoch_ms // 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _bucket_start(buckets: Buckets, t: str) -> str:
    if buckets.unit:
        return _CALENDAR_START[buckets.unit].format(t=t)
    return f"{{start_s:Int64}} + intDiv(toInt64(toUInt32({t})) - {{start_s:Int64}}, {{step_s:Int64}}) * {{step_s:Int64}}"


def _bucket_parameters(buckets: Buckets) -> dict[str, Any]:
    return {"start_s": buckets.starts_ms[0] // 1000, "step_s": (buckets.step_ms or 60_000) // 1000, "tz": buckets.tz}


def _where(question: Question) -> tuple[str, dict[str, Any]]:
    parameters: dict[str, Any] = {"account": question.account, "start": utc_text(question.start_ms),
                                  "end": utc_text(question.end_ms)}
    clauses = ["account = {account:String}", "minute >= {start:DateTime('UTC')}", "minute < {end:DateTime('UTC')}",
               *_filters(question, parameters)]
    return " AND ".join(clauses), parameters


def _filters(question: Question, parameters: dict[str, Any]) -> list[str]:
    clauses = []
    for index, condition in enumerate(question.filters):
        if condition.dimension in BOOLEAN_DIMENSIONS:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(Bool)}}")
            parameters[f"w{index}"] = [value == "true" for value in condition.values]
        else:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(String)}}")
            parameters[f"w{index}"] = list(condition.values)
    return clauses
