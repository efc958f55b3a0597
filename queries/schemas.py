"""The shapes of what the HTTP API answers, as types: the OpenAPI document's response schemas are made from these.

They describe; they do not serialize (the handlers build plain dicts, tested against the document by
Schemathesis's response schema check). Metric names come from the catalog, so a new metric appears here too.
"""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict  # pydantic reads typing's TypedDict only from Python 3.12

from queries.catalog import METRICS
from queries.live import BREAKDOWN_FIELDS

MetricName = Literal[tuple(METRICS)]  # type: ignore[valid-type]
Number = float | None  # a count, a sum, or a ratio or percentile (null when there is no data)


class FieldError(TypedDict):
    field: str
    error: str


class Problem(TypedDict):
    """Every refusal: what is wrong, the valid values where a list helps, and per-field reasons for a body."""

    error: str
    valid: NotRequired[list[str]]
    detail: NotRequired[list[FieldError]]


class LivepeerProblem(TypedDict):
    """Livepeer's error shape."""

    errors: list[str]
    valid: NotRequired[list[str]]
    detail: NotRequired[list[FieldError]]


class Point(TypedDict):
    timestamp: int
    value: Number


class Series(TypedDict):
    dimensions: dict[str, str]
    points: list[Point]


class MetricSeries(TypedDict):
    data: list[Series]


Timeseries = dict[MetricName, MetricSeries]


class TotalsRow(TypedDict):
    dimensions: dict[str, str]
    totals: dict[MetricName, Number]


class Events(TypedDict):
    data: list[TotalsRow]


class Whoami(TypedDict):
    account: str
    kind: Literal["secret", "public"]
    key_id: str
    videos: NotRequired[list[str]]
    metrics: NotRequired[list[str]]
    origins: NotRequired[list[str]]


class RetentionPoint(TypedDict):
    percentile: int
    time_s: float | None
    viewers: int
    unique_viewers: int
    retention_percentage: float
    replays: int


class Dropoff(TypedDict):
    percentile: int
    retention_loss: float


class Hotspot(TypedDict):
    percentile: int
    replays: int
    replay_rate: float


class Insights(TypedDict):
    average_retention: float
    completion_rate: float
    fifty_percent_point: int | None
    largest_dropoffs: list[Dropoff]
    replay_hotspots: list[Hotspot]


Retention = TypedDict("Retention", {"account": str, "video": str, "viewer": str, "from": int, "to": int,
                                    "duration_s": float | None, "points": list[RetentionPoint], "insights": Insights})


class UsageDay(TypedDict):
    day: str
    events_accepted: int
    bot_events: int
    events_rejected: int
    rejected_by_reason: dict[str, int]
    sessions: int
    views: int
    watch_minutes: float
    raw_bytes_estimate: int


class UsageTotals(TypedDict):
    events_accepted: int
    bot_events: int
    events_rejected: int
    views: int
    watch_minutes: float
    raw_bytes_estimate: int


class Quota(TypedDict):
    month: str
    monthly_events: int | None
    used: int
    remaining: int | None


Usage = TypedDict("Usage", {"account": str, "from": str, "to": str, "days": list[UsageDay], "totals": UsageTotals,
                            "quota": Quota, "notes": str})


class Current(TypedDict, total=False):
    viewers: int
    plays_per_minute: int
    watch_seconds_per_minute: float


class Trend(TypedDict, total=False):
    viewers_change_pct: float | None
    trend: Literal["increasing", "decreasing", "steady"]
    peak_viewers: int
    peak_at: str | None


# Only the sections of the asked ``fields`` are present; ``by_*`` lists hold the top groups now.
Realtime = TypedDict("Realtime", {"account": str, "timestamp": str, "current": NotRequired[Current],
                                  "trend": NotRequired[Trend], "quality": NotRequired[dict[str, Number]],
                                  **{name: NotRequired[list[dict[str, Any]]] for name in BREAKDOWN_FIELDS}})


class ViewershipRow(TypedDict):
    """Livepeer's viewership metrics; the breakdown's dimensions and ``timestamp`` (with timeStep) beside them."""

    viewCount: int
    playtimeMins: float
    ttffMs: NotRequired[int | None]
    rebufferRatio: NotRequired[float | None]
    errorRate: NotRequired[float | None]
    exitsBeforeStart: NotRequired[float | None]


class TotalViews(TypedDict):
    playbackId: str
    viewCount: int
    playtimeMins: float


class ViewersNow(TypedDict):
    viewCount: int
    errorRate: float


class LivepeerUsage(TypedDict):
    CreatorID: str
    DeliveryUsageMins: float
    TotalUsageMins: float


class RejectedEvent(TypedDict):
    index: int
    error: str


class TrackAnswer(TypedDict):
    """202: the valid events are durable; each invalid one is named with its reason."""

    accepted: int
    rejected: int
    errors: list[RejectedEvent]
