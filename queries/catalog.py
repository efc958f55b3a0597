"""The allow-lists: which dimensions and metrics exist and where each metric's numbers live.

Only names from here ever reach SQL as identifiers; every value is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aggregations.rows import DIMENSIONS

METRICS_TABLE = "minute_metrics"
UNIQUES_TABLE = "minute_uniques"
# "account" is accepted as a dimension meaning "the whole account": it is on every row anyway.
GROUPABLE = ("account", *DIMENSIONS)
BOOLEAN_DIMENSIONS = {"live": ("true", "false")}
ENUM_DIMENSIONS = {"viewer": ("anonymous", "registered")}


@dataclass(frozen=True)
class Metric:
    """How one metric is computed per minute, per bucket and over a whole range."""

    name: str
    table: str
    per_minute: str  # SQL over one table, grouped by minute and dimensions
    over_range: str  # SQL over one table, grouped by dimensions only
    unique: bool  # True: a bucket's point is the max of its minutes; False: the sum
    divisor: int = 1  # the stored integer divided by this is the value
    decimals: int | None = None


def _sum(column: str, **extra: int) -> Metric:
    return Metric("", METRICS_TABLE, f"sum({column})", f"sum({column})", False, **extra)


def _uniq(column: str) -> Metric:
    merge = f"uniqCombined64Merge({column})"
    return Metric("", UNIQUES_TABLE, merge, merge, True)


_DEFINITIONS = {
    "video_impression": _sum("video_impression"),
    "video_view": _sum("video_view"),
    "video_seconds_viewed": _sum("watched_ms", divisor=1000, decimals=3),
    "ad_start": _sum("ad_start"),
    "alive_ss_ad_start": _sum("alive_ss_ad_start"),
    "ccu": _uniq("sessions"),
    "fingerprint_count": _uniq("fingerprints"),
}
METRICS: dict[str, Metric] = {name: replace(metric, name=name) for name, metric in _DEFINITIONS.items()}


def value_of(metric: Metric, stored: int | float | None) -> int | float:
    """The API's number for a stored integer: sums and counts stay integers, seconds get 3 decimals."""
    raw = stored or 0
    if metric.divisor == 1:
        return int(raw)
    return round(raw / metric.divisor, metric.decimals if metric.decimals is not None else 6)
