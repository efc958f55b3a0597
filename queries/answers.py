"""Runs a question's statements and shapes the rows into the Brightcove-style responses."""

from __future__ import annotations

from typing import Any

from aggregations.clickhouse import ClickHouse
from queries import sql
from queries.catalog import BOOLEAN_DIMENSIONS, METRICS, value_of
from queries.params import Buckets, Question

DimensionKey = tuple[Any, ...]


async def timeseries(db: ClickHouse, question: Question, buckets: Buckets) -> dict[str, Any]:
    """Every bucket of every series, with 0 where a bucket has no data (gap filling)."""
    series: dict[str, dict[DimensionKey, list[int | float]]] = {name: {} for name in question.metrics}
    for table, metrics in sql.metrics_by_table(question.metrics).items():
        statement = sql.timeseries(question, buckets, table, metrics)
        width = len(question.dimensions)
        for row in await db.aquery(statement.sql, statement.parameters):
            bucket, key, values = row[0], _key(row[1:1 + width]), row[1 + width:]
            for metric, value in zip(metrics, values, strict=True):
                points = series[metric.name].setdefault(key, [value_of(metric, 0)] * buckets.count)
                if 0 <= bucket < buckets.count:
                    points[bucket] = value_of(metric, value)
    timestamps = buckets.timestamps()
    return {name: {"data": [
        {"dimensions": _dimensions(question, key),
         "points": [{"timestamp": ts, "value": value} for ts, value in zip(timestamps, points, strict=True)]}
        for key, points in sorted(by_key.items())
    ]} for name, by_key in series.items()}


async def totals(db: ClickHouse, question: Question, sort: str | None, descending: bool,
                 limit: int, offset: int) -> dict[str, Any]:
    """Totals over the range per combination; combinations with data in any requested metric appear."""
    rows: dict[DimensionKey, dict[str, int | float]] = {}
    for table, metrics in sql.metrics_by_table(question.metrics).items():
        statement = sql.totals(question, table, metrics)
        width = len(question.dimensions)
        for row in await db.aquery(statement.sql, statement.parameters):
            entry = rows.setdefault(_key(row[:width]), {})
            for metric, value in zip(metrics, row[width:], strict=True):
                entry[metric.name] = value_of(metric, value)
    ordered = sorted(rows.items())
    if sort:
        ordered.sort(key=lambda item: item[1].get(sort, 0), reverse=descending)
    return {"data": [
        {"dimensions": _dimensions(question, key),
         "totals": {name: values.get(name, value_of(METRICS[name], 0)) for name in question.metrics}}
        for key, values in ordered[offset:offset + limit]
    ]}


def _key(values: tuple[Any, ...]) -> DimensionKey:
    return tuple(values)


def _dimensions(question: Question, key: DimensionKey) -> dict[str, Any]:
    shown: dict[str, Any] = {"account": question.account}
    for name, value in zip(question.dimensions, key, strict=True):
        shown[name] = ("true" if value else "false") if name in BOOLEAN_DIMENSIONS else value
    return shown
