"""The allow-lists: which dimensions and metrics exist, and how each metric's value is made.

A metric is a formula over components; a component is one aggregate over one
pre-aggregated table. In a timeseries a component is either aggregated over
the bucket's rows (sums, distinct counts over the bucket, percentiles) or
taken as the maximum of its per-minute values (the spec's uniques); in totals
every component is aggregated over the whole range. Ratios and percentiles are
therefore computed from the merged parts, never averaged.

Only names from here ever reach SQL as identifiers; every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aggregations.rows import DIMENSIONS

METRICS_TABLE = "minute_metrics"
UNIQUES_TABLE = "minute_uniques"
# "account" is accepted as a dimension meaning "the whole account": it is on every row anyway.
GROUPABLE = ("account", *DIMENSIONS)
BOOLEAN_DIMENSIONS = {"live": ("true", "false")}
ENUM_DIMENSIONS = {"viewer": ("anonymous", "registered")}
Value = int | float | None


@dataclass(frozen=True)
class Component:
    table: str
    sql: str  # an aggregate over the table's rows
    max_of_minutes: bool = False  # timeseries: the max of per-minute values instead of one aggregate per bucket
    column: str = ""  # the table's column it aggregates
    partial: str = ""  # the same aggregate as a mergeable part (what the rollup projections of migration 0010 hold)


@dataclass(frozen=True)
class Metric:
    name: str
    components: tuple[Component, ...]
    formula: Callable[[list[float]], Value]


def _sum(column: str) -> Component:
    return Component(METRICS_TABLE, f"sum({column})", column=column, partial=f"sum({column})")


def _distinct(table: str, column: str, max_of_minutes: bool = False) -> Component:
    return Component(table, f"uniqCombined64Merge({column})", max_of_minutes, column,
                     f"uniqCombined64MergeState({column})")


def _ratio(numerator: float, denominator: float) -> Value:
    return None if not denominator else numerator / denominator


def _ttff(index: int) -> Component:
    return Component(METRICS_TABLE, f"quantilesTimingMerge(0.5, 0.95, 0.99)(ttff)[{index}]", column="ttff",
                     partial="quantilesTimingMergeState(0.5, 0.95, 0.99)(ttff)")


VIEWS, WATCHED_MS, REBUFFER_MS, FIRST_FRAMES = (_sum("video_view"), _sum("watched_ms"), _sum("rebuffer_ms"),
                                                _sum("first_frames"))
_METRICS = [
    Metric("video_impression", (_sum("video_impression"),), lambda c: int(c[0])),
    Metric("video_view", (VIEWS,), lambda c: int(c[0])),
    Metric("video_seconds_viewed", (WATCHED_MS,), lambda c: round(c[0] / 1000, 3)),
    Metric("watch_minutes", (WATCHED_MS,), lambda c: round(c[0] / 60_000, 3)),
    Metric("ad_start", (_sum("ad_start"),), lambda c: int(c[0])),
    Metric("alive_ss_ad_start", (_sum("alive_ss_ad_start"),), lambda c: int(c[0])),
    Metric("ccu", (_distinct(UNIQUES_TABLE, "sessions", True),), lambda c: int(c[0])),
    Metric("fingerprint_count", (_distinct(UNIQUES_TABLE, "fingerprints", True),), lambda c: int(c[0])),
    Metric("unique_viewers", (_distinct(METRICS_TABLE, "viewers", True),), lambda c: int(c[0])),
    Metric("error_rate", (_distinct(METRICS_TABLE, "fatal_sessions"), VIEWS), lambda c: _ratio(c[0], c[1])),
    Metric("rebuffer_ratio", (REBUFFER_MS, WATCHED_MS), lambda c: _ratio(c[0], c[0] + c[1])),
    Metric("exit_before_start_rate", (_distinct(UNIQUES_TABLE, "exits_before_start"), VIEWS),
           lambda c: _ratio(c[0], c[1])),
    *(Metric(f"ttff_{name}_ms", (_ttff(index), FIRST_FRAMES), lambda c: None if not c[1] else int(c[0]))
      for index, name in ((1, "p50"), (2, "p95"), (3, "p99"))),
]
METRICS: dict[str, Metric] = {metric.name: metric for metric in _METRICS}


def value_of(metric: Metric, components: dict[Component, float]) -> Value:
    """The metric's number from its components' values; a component with no rows counts as 0."""
    return metric.formula([components.get(component, 0) or 0 for component in metric.components])
