"""Runs a question's statements and shapes the rows into the Brightcove-style responses."""

from __future__ import annotations

from typing import Any

from aggregations.clickhouse import ClickHouse
from queries import sql
from queries.catalog import BOOLEAN_DIMENSIONS, METRICS, Component, Value, value_of
from queries.params import Buckets, Question

DimensionKey = tuple[Any, ...]
Found = dict[DimensionKey, dict[Component, float]]

# At most this many points in one timeseries answer (all metrics, all series): about 45 MB of JSON. Each series is
# bounded by MAX_POINTS before the query runs, but the number of series is known only from the data: a month
# of minutes over 9 dimensions and 20 metrics was an 815 MB answer that held the process for a minute.
MAX_ANSWER_POINTS = 1_000_000


class AnswerTooLarge(Exception):
    """A 422: the question is valid, but its answer is larger than this deployment sends."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def timeseries(db: ClickHouse, question: Question, buckets: Buckets) -> dict[str, Any]:
    """Every bucket of every series; a bucket without data is 0 (null for ratios and percentiles)."""
    per_bucket: dict[int, Found] = {start: {} for start in buckets.starts_ms}
    for components in sql.component_groups(question.metrics).values():
        statement = sql.timeseries(question, buckets, components)
        for row in await db.aquery(statement.sql, statement.parameters):
            bucket_ms = int(row[0]) * 1000
            if bucket_ms in per_bucket:
                _collect(per_bucket[bucket_ms], question, row[1:], statement.components)
    keys = {name: _keys(name, per_bucket) for name in question.metrics}
    _check_size(sum(map(len, keys.values())), len(buckets.starts_ms))
    return {name: {"data": _series(question, name, buckets, per_bucket, keys[name])} for name in question.metrics}


def _keys(name: str, per_bucket: dict[int, Found]) -> list[DimensionKey]:
    """The combinations with data in any bucket of this metric: one series each, in ascending order."""
    components = METRICS[name].components
    return sorted({key for found in per_bucket.values() for key, values in found.items()
                   if any(component in values for component in components)})


def _check_size(series: int, buckets: int) -> None:
    if series * buckets > MAX_ANSWER_POINTS:
        raise AnswerTooLarge(f"the answer would hold {series * buckets:,} points ({series:,} series of {buckets:,} "
                             f"buckets); at most {MAX_ANSWER_POINTS:,}: choose a longer bucket_duration, filter "
                             "with where, or ask fewer metrics or dimensions")


async def totals(db: ClickHouse, question: Question, sort: str | None, descending: bool,
                 limit: int, offset: int) -> dict[str, Any]:
    """Totals over the range per combination; combinations with data in any requested metric appear."""
    found: Found = {}
    for components in sql.component_groups(question.metrics).values():
        statement = sql.totals(question, components)
        for row in await db.aquery(statement.sql, statement.parameters):
            _collect(found, question, row, statement.components)
    rows = [(key, {name: value_of(METRICS[name], values) for name in question.metrics})
            for key, values in sorted(found.items())]
    if sort:
        rows.sort(key=lambda item: _sortable(item[1][sort]), reverse=descending)
    return {"data": [{"dimensions": _dimensions(question, key), "totals": values}
                     for key, values in rows[offset:offset + limit]]}


def _collect(found: Found, question: Question, row: tuple[Any, ...], components: list[Component]) -> None:
    width = len(question.dimensions)
    entry = found.setdefault(tuple(row[:width]), {})
    for component, value in zip(components, row[width:], strict=True):
        entry[component] = value


def _series(question: Question, name: str, buckets: Buckets, per_bucket: dict[int, Found],
            keys: list[DimensionKey]) -> list[dict[str, Any]]:
    metric = METRICS[name]
    return [{"dimensions": _dimensions(question, key),
             "points": [{"timestamp": start, "value": value_of(metric, per_bucket[start].get(key, {}))}
                        for start in buckets.starts_ms]} for key in keys]


def _sortable(value: Value) -> tuple[bool, float]:
    """Nulls (ratios with no data) sort below every number."""
    return (value is not None, value or 0)


def _dimensions(question: Question, key: DimensionKey) -> dict[str, Any]:
    shown: dict[str, Any] = {"account": question.account}
    for name, value in zip(question.dimensions, key, strict=True):
        shown[name] = ("true" if value else "false") if name in BOOLEAN_DIMENSIONS else value
    return shown
