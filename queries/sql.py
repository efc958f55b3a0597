"""SQL over the minute pre-aggregations. Identifiers come from the catalog; values are bound parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from queries.catalog import BOOLEAN_DIMENSIONS, METRICS, Metric
from queries.params import Buckets, Question


@dataclass
class Statement:
    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)


def metrics_by_table(metrics: tuple[str, ...]) -> dict[str, list[Metric]]:
    grouped: dict[str, list[Metric]] = {}
    for name in metrics:
        grouped.setdefault(METRICS[name].table, []).append(METRICS[name])
    return grouped


def timeseries(question: Question, buckets: Buckets, table: str, metrics: list[Metric]) -> Statement:
    """Rows (bucket index, *dimensions, *values); a unique metric's point is the max of its minutes."""
    where, parameters = _where(question)
    parameters.update(step_s=buckets.step_ms // 1000, start_s=buckets.start_ms // 1000)
    dims = list(question.dimensions)
    bucket = "intDiv(toUInt32(minute) - {start_s:UInt32}, {step_s:UInt32}) AS bucket"
    if not metrics[0].unique:
        values = ", ".join(f"{m.per_minute} AS v{i}" for i, m in enumerate(metrics))
        return Statement(f"SELECT {', '.join([bucket, *dims, values])} FROM {table} WHERE {where} "
                         f"GROUP BY {', '.join(['bucket', *dims])} ORDER BY bucket", parameters)
    inner_values = ", ".join(f"{m.per_minute} AS v{i}" for i, m in enumerate(metrics))
    inner = (f"SELECT {', '.join(['minute', *dims, inner_values])} FROM {table} WHERE {where} "
             f"GROUP BY {', '.join(['minute', *dims])}")
    outer_values = ", ".join(f"max(v{i})" for i in range(len(metrics)))
    return Statement(f"SELECT {', '.join([bucket, *dims, outer_values])} FROM ({inner}) "
                     f"GROUP BY {', '.join(['bucket', *dims])} ORDER BY bucket", parameters)


def totals(question: Question, table: str, metrics: list[Metric]) -> Statement:
    """Rows (*dimensions, *values) over the whole range; uniques are distinct over the range."""
    where, parameters = _where(question)
    dims = list(question.dimensions)
    values = ", ".join(f"{m.over_range} AS v{i}" for i, m in enumerate(metrics))
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    return Statement(f"SELECT {', '.join([*dims, values])} FROM {table} WHERE {where}{group}", parameters)


def _where(question: Question) -> tuple[str, dict[str, Any]]:
    clauses = ["account = {account:String}", "minute >= {start:DateTime('UTC')}", "minute < {end:DateTime('UTC')}"]
    parameters: dict[str, Any] = {"account": question.account, "start": question.start_ms // 1000,
                                  "end": question.end_ms // 1000}
    for index, condition in enumerate(question.filters):
        if condition.dimension == "account":
            clauses.append(f"account IN {{w{index}:Array(String)}}")
            parameters[f"w{index}"] = list(condition.values)
        elif condition.dimension in BOOLEAN_DIMENSIONS:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(Bool)}}")
            parameters[f"w{index}"] = [value == "true" for value in condition.values]
        else:
            clauses.append(f"{condition.dimension} IN {{w{index}:Array(String)}}")
            parameters[f"w{index}"] = list(condition.values)
    return " AND ".join(clauses), parameters
