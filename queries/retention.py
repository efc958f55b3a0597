"""``GET /v1/retention/accounts/{id}/videos/{video}``: the 101-point audience retention curve.

Per point p (percent of the content): ``viewers`` are the passes of all plays
at p (a replayed point counts again), ``unique_viewers`` the distinct viewers
who reached it (a known ``context.user``, else the fingerprint),
``retention_percentage`` viewers(p) / viewers(0), and ``replays`` viewers(p) −
unique_viewers(p), the measures of Kaltura's retention report. A play counts
with the ``percentiles`` its player reported; a play whose player sent none
counts with its view (point 0) and quartiles (25 covers 1-25, and so on).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from aggregations.accounts import ApiKey
from queries.api import AccountId, From, QueryContext, To, answer_with
from queries.auth import CallerOf
from queries.params import QueryError, Question, parse_question
from queries.sql import utc_text

POINTS = 101
TOP = 5
VIEWER_FILTERS = {"all": "", "anonymous": " AND user = ''", "registered": " AND user != ''"}

_CURVE = """
SELECT percentile, sum(passes) AS viewers, uniqExact(viewer) AS unique_viewers, max(duration) AS duration
FROM (
  SELECT session_key, source, percentile, sum(passes) AS passes, max(duration_s) AS duration,
         if(any(user) != '', concat('u:', any(user)), concat('f:', toString(any(fingerprint)))) AS viewer,
         max(source = 'p') OVER (PARTITION BY session_key) AS reported_percentiles
  FROM retention_passes
  WHERE account = {account:String} AND video = {video:String}
    AND minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}FILTER
  GROUP BY session_key, source, percentile
)
WHERE source = if(reported_percentiles, 'p', 'q')
GROUP BY percentile
ORDER BY percentile
"""


def retention_router(context: QueryContext) -> APIRouter:
    router = APIRouter(tags=["analytics"])
    db = context.db

    @router.get("/v1/retention/accounts/{account_id}/videos/{video_id}", summary="Audience retention, 101 points")
    async def retention(account_id: AccountId, caller: CallerOf, video_id: Annotated[str, Path(max_length=128)],
                        start: From = None, to: To = None,
                        viewer: Annotated[str, Query(description="all, anonymous, registered, or a user id")] = "all",
                        ) -> Any:
        async def run(_: ApiKey) -> Any:
            question = parse_question(account_id, "video", "video_view", None, start, to)
            rows = await db.aquery(*_statement(question, video_id, viewer))
            return _report(question, video_id, viewer, rows)
        return await answer_with(context, "retention", account_id, caller, run)

    return router


def _statement(question: Question, video: str, viewer: str) -> tuple[str, dict[str, Any]]:
    if not viewer or len(viewer) > 128:
        raise QueryError("viewer must be all, anonymous, registered or a user id of at most 128 characters")
    parameters = {"account": question.account, "video": video, "start": utc_text(question.start_ms),
                  "end": utc_text(question.end_ms), "user": viewer}
    condition = VIEWER_FILTERS.get(viewer, " AND user = {user:String}")
    return _CURVE.replace("FILTER", condition), parameters


def _report(question: Question, video: str, viewer: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    by_point = {int(p): (int(v), int(u)) for p, v, u, _ in rows}
    duration = max((float(d) for *_, d in rows), default=0.0) or None
    start = by_point.get(0, (0, 0))[0] or max((v for v, _ in by_point.values()), default=0)
    points = [_point(p, *by_point.get(p, (0, 0)), start, duration) for p in range(POINTS)]
    return {"account": question.account, "video": video, "viewer": viewer, "from": question.start_ms,
            "to": question.end_ms, "duration_s": duration, "points": points, "insights": _insights(points)}


def _point(percentile: int, viewers: int, unique: int, start: int, duration: float | None) -> dict[str, Any]:
    return {"percentile": percentile, "time_s": round(percentile / 100 * duration, 3) if duration else None,
            "viewers": viewers, "unique_viewers": unique,
            "retention_percentage": round(100 * viewers / start, 2) if start else 0.0,
            "replays": max(0, viewers - unique)}


def _insights(points: list[dict[str, Any]]) -> dict[str, Any]:
    retention = [point["retention_percentage"] for point in points]
    drops = [{"percentile": p, "retention_loss": round(retention[p - 1] - retention[p], 2)}
             for p in range(1, POINTS) if retention[p - 1] > retention[p]]
    replays = [{"percentile": point["percentile"], "replays": point["replays"],
                "replay_rate": round(point["replays"] / point["unique_viewers"], 2)}
               for point in points if point["replays"] > 0]
    return {
        "average_retention": round(sum(retention) / POINTS, 2),
        "completion_rate": retention[-1],
        "fifty_percent_point": next((p for p, value in enumerate(retention) if value <= 50), None),
        "largest_dropoffs": sorted(drops, key=lambda d: (-d["retention_loss"], d["percentile"]))[:TOP],
        "replay_hotspots": sorted(replays, key=lambda r: (-r["replay_rate"], r["percentile"]))[:TOP],
    }
