"""Livepeer's viewership API (``/data/views/*``, ``/data/usage/query``) as a thin face over the query layer.

A client written for Livepeer Studio (its ``livepeer`` Python SDK, pointed here with ``server_url``) reads
vidpulse's numbers unchanged. Every answer is made by ``queries.answers`` or the live hub, the same code as
``/v1/events``, ``/v1/timeseries`` and ``/v1/realtime``; this module only renames.

The mapping: a Livepeer ``playbackId`` (and an ``assetId`` or ``streamId``) is a vidpulse video; a
``creatorId`` is the account (the key's own: another is a 403). ``viewCount`` is ``video_view`` (play
intent, as Livepeer defines a view), ``playtimeMins`` ``watch_minutes``, ``ttffMs`` the median
``ttff_p50_ms``, ``rebufferRatio``, ``errorRate`` and ``exitsBeforeStart`` the same-named vidpulse ratios.
What has no vidpulse counterpart is refused with a 400 that says so: the breakdowns ``device`` (a device
model), ``cpu``, ``browserEngine``, ``geohash`` and ``viewerId``, and a usage ``timeStep``. Errors take
Livepeer's shape, ``{"errors": [...]}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from aggregations.accounts import ApiKey
from ingest.http import OrjsonResponse
from queries import answers
from queries.api import QueryContext, answer_with
from queries.auth import AuthError, Caller, CallerOf, check_scope
from queries.live import LiveHub, LiveQuestion, matcher
from queries.params import MAX_LIMIT, Filter, QueryError, parse_buckets, parse_question

DIMENSIONS = {"playbackId": "video", "deviceType": "device_type", "os": "os", "browser": "browser",
              "continent": "continent", "country": "country", "subdivision": "subdivision", "timezone": "timezone",
              "creatorId": "account"}
UNMAPPED = {"device": "vidpulse knows the device type (deviceType), not the device model",
            "cpu": "vidpulse does not record the CPU", "browserEngine": "vidpulse records the browser, not its engine",
            "geohash": "vidpulse keeps no position finer than a subdivision",
            "viewerId": "vidpulse keeps no per-viewer dimension (fingerprints are counted, never listed)"}
# Livepeer's realtime breakdown "device" is the device type here (its only device-like dimension live).
NOW_DIMENSIONS = {"playbackId": "video", "device": "device_type", "browser": "browser", "country": "country"}
METRICS = {"video_view": "viewCount", "watch_minutes": "playtimeMins", "ttff_p50_ms": "ttffMs",
           "rebuffer_ratio": "rebufferRatio", "error_rate": "errorRate", "exit_before_start_rate": "exitsBeforeStart"}
ALL_TIME_FROM = "0"
When = Annotated[str | None, Query(alias="from", description="epoch ms or ISO 8601")]
To = Annotated[str | None, Query(description="epoch ms or ISO 8601")]
TimeStep = Annotated[str | None, Query(alias="timeStep", description="hour|day|week|month|year")]
Breakdown = Annotated[list[str] | None, Query(alias="breakdownBy[]", description="Livepeer dimension names")]
PlainBreakdown = Annotated[list[str] | None, Query(alias="breakdownBy", include_in_schema=False)]
Id = Annotated[str | None, Query()]


def livepeer_router(context: QueryContext, hub: LiveHub) -> APIRouter:
    router = APIRouter(tags=["livepeer"], default_response_class=OrjsonResponse)

    @router.get("/data/views/query", summary="Livepeer: viewership metrics of the key's account")
    async def views(caller: CallerOf, start: When = None, to: To = None, time_step: TimeStep = None,
                    playback_id: Annotated[str | None, Query(alias="playbackId")] = None,
                    asset_id: Annotated[str | None, Query(alias="assetId")] = None,
                    stream_id: Annotated[str | None, Query(alias="streamId")] = None,
                    creator_id: Annotated[str | None, Query(alias="creatorId")] = None,
                    breakdown: Breakdown = None, plain: PlainBreakdown = None) -> Response:
        async def run(key: ApiKey) -> Any:
            video = _one_video(playback_id, asset_id, stream_id)
            return await _viewership(context, key, creator_id, video, [*(breakdown or []), *(plain or [])],
                                     start, to, time_step)
        return await _livepeer(context, "livepeer", caller, run)

    @router.get("/data/views/query/creator", summary="Livepeer: viewership metrics of one asset or stream")
    async def creator_views(caller: CallerOf, start: When = None, to: To = None, time_step: TimeStep = None,
                            asset_id: Annotated[str | None, Query(alias="assetId")] = None,
                            stream_id: Annotated[str | None, Query(alias="streamId")] = None,
                            creator_id: Annotated[str | None, Query(alias="creatorId")] = None,
                            breakdown: Breakdown = None, plain: PlainBreakdown = None) -> Response:
        async def run(key: ApiKey) -> Any:
            video = _one_video(None, asset_id, stream_id)
            if video is None:
                raise QueryError("assetId or streamId is required (the video's id in vidpulse)")
            return await _viewership(context, key, creator_id, video, [*(breakdown or []), *(plain or [])],
                                     start, to, time_step)
        return await _livepeer(context, "livepeer", caller, run)

    @router.get("/data/views/query/total/{playbackId}", summary="Livepeer: all-time views and watch time of a video")
    async def total(playback_id: Annotated[str, Path(alias="playbackId")], caller: CallerOf) -> Response:
        async def run(key: ApiKey) -> Any:
            question = parse_question(key.account, "account", "video_view,watch_minutes", _where_video(playback_id),
                                      ALL_TIME_FROM, None)
            check_scope(key, question)
            rows = (await answers.totals(context.db, question, None, False, 1, 0))["data"]
            found = rows[0]["totals"] if rows else {"video_view": 0, "watch_minutes": 0.0}
            return {"playbackId": playback_id, "viewCount": found["video_view"], "playtimeMins": found["watch_minutes"]}
        return await _livepeer(context, "livepeer", caller, run)

    @router.get("/data/views/now", summary="Livepeer: viewers now (from the live window)")
    async def now(caller: CallerOf, playback_id: Annotated[str | None, Query(alias="playbackId")] = None,
                  creator_id: Annotated[str | None, Query(alias="creatorId")] = None,
                  breakdown: Breakdown = None, plain: PlainBreakdown = None) -> Response:
        async def run(key: ApiKey) -> Any:
            _check_creator(key, creator_id)
            return await _now(context, hub, key, playback_id, [*(breakdown or []), *(plain or [])])
        return await _livepeer(context, "livepeer", caller, run)

    @router.get("/data/usage/query", summary="Livepeer: usage of the key's account (delivered viewing minutes)")
    async def usage(caller: CallerOf, start: When = None, to: To = None, time_step: TimeStep = None,
                    creator_id: Annotated[str | None, Query(alias="creatorId")] = None,
                    breakdown: Breakdown = None, plain: PlainBreakdown = None) -> Response:
        async def run(key: ApiKey) -> Any:
            _check_creator(key, creator_id)
            if time_step:
                raise QueryError("timeStep is not supported on usage: vidpulse answers one total per range "
                                 "(ask /data/views/query with timeStep for minutes per step)")
            unknown = [name for name in [*(breakdown or []), *(plain or [])] if name != "creatorId"]
            if unknown:
                raise QueryError(f"usage breaks down by creatorId only, not {', '.join(unknown)}", ["creatorId"])
            question = parse_question(key.account, "account", "watch_minutes", None, start, to)
            check_scope(key, question)
            rows = (await answers.totals(context.db, question, None, False, 1, 0))["data"]
            minutes = rows[0]["totals"]["watch_minutes"] if rows else 0.0
            # vidpulse delivers no video: the viewing minutes its players reported are the delivery; it stores none
            return {"CreatorID": key.account, "DeliveryUsageMins": minutes, "TotalUsageMins": minutes}
        return await _livepeer(context, "livepeer", caller, run)

    return router


async def _livepeer(context: QueryContext, endpoint: str, caller: Caller,
                    run: Callable[[ApiKey], Awaitable[Any]]) -> Response:
    """The query API's key check and error mapping, with Livepeer's error shape."""
    response = await answer_with(context, endpoint, context.guard.account_of(caller), caller, run)
    if response.status_code >= 400:
        body = orjson.loads(response.body)
        response.body = orjson.dumps({"errors": [body.get("error", "error")], **{k: v for k, v in body.items()
                                                                                 if k != "error"}})
        response.headers["content-length"] = str(len(response.body))
    return response


async def _viewership(context: QueryContext, key: ApiKey, creator_id: str | None, video: str | None,
                      breakdown: list[str], start: str | None, to: str | None, time_step: str | None) -> list[Any]:
    _check_creator(key, creator_id)
    dimensions = _dimensions(breakdown, DIMENSIONS)
    question = parse_question(key.account, ",".join(dimensions.values()) or "account", ",".join(METRICS),
                              _where_video(video), start, to)
    check_scope(key, question)
    if time_step:
        if time_step == "all":
            raise QueryError("timeStep takes hour, day, week, month or year (leave it out for the whole range)")
        buckets = parse_buckets(question, None, None, time_step, "UTC")
        series = await answers.timeseries(context.db, question, buckets)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for metric, name in METRICS.items():
            for entry in series[metric]["data"]:
                for point in entry["points"]:
                    at = (point["timestamp"], *(entry["dimensions"].get(d) for d in question.dimensions))
                    row = rows.setdefault(at, {"timestamp": point["timestamp"],
                                               **_renamed(entry["dimensions"], dimensions)})
                    row[name] = point["value"]
        return [_complete(row) for _, row in sorted(rows.items(), key=lambda item: tuple(map(str, item[0])))
                if row.get("viewCount") or row.get("playtimeMins")]
    found = await answers.totals(context.db, question, None, False, MAX_LIMIT, 0)
    return [_complete({**_renamed(entry["dimensions"], dimensions),
                       **{METRICS[metric]: value for metric, value in entry["totals"].items()}})
            for entry in found["data"]]


async def _now(context: QueryContext, hub: LiveHub, key: ApiKey, playback_id: str | None,
               breakdown: list[str]) -> list[dict[str, Any]]:
    """Viewers now per group (the live window) with the error rate of the last 5 minutes (closed minutes)."""
    dimensions = _dimensions(breakdown, NOW_DIMENSIONS)
    filters = (Filter("video", (playback_id,)),) if playback_id else ()
    live = LiveQuestion(key.account, filters, ("viewers", "error_rate"))
    check_scope(key, live.as_question())
    by = tuple(dimensions.values())
    groups = hub.window.viewers_by(key.account, matcher(filters), hub.now_ms(), by)
    if not by:
        groups = {(): groups.get((), 0)}  # the whole account: one row, even with nobody watching
    rates = await hub.error_rates(live, by)
    answer = []
    for values, viewers in sorted(groups.items(), key=lambda item: (-item[1], tuple(map(str, item[0])))):
        row = dict(zip(dimensions, values, strict=True))
        answer.append({"viewCount": viewers, "errorRate": rates.get(values) or 0.0, **row})
    return answer


def _dimensions(breakdown: list[str], known: dict[str, str]) -> dict[str, str]:
    """Livepeer names → vidpulse dimensions, in the asked order; refuses what does not map."""
    out = {}
    for name in dict.fromkeys(breakdown):
        if name in known:
            out[name] = known[name]
        elif name in UNMAPPED:
            raise QueryError(f"breakdownBy {name} is not available: {UNMAPPED[name]}", list(known))
        else:
            raise QueryError(f"unknown breakdownBy {name!r}", list(known))
    return out


def _renamed(shown: dict[str, Any], dimensions: dict[str, str]) -> dict[str, Any]:
    return {livepeer: shown.get(vidpulse) for livepeer, vidpulse in dimensions.items()}


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """viewCount and playtimeMins are required by Livepeer's schema: 0 when a row has none."""
    row.setdefault("viewCount", 0)
    row.setdefault("playtimeMins", 0.0)
    row["viewCount"] = row["viewCount"] or 0
    row["playtimeMins"] = row["playtimeMins"] or 0.0
    return row


def _one_video(*ids: str | None) -> str | None:
    given = {value for value in ids if value}
    if len(given) > 1:
        raise QueryError("give one of playbackId, assetId or streamId (all name the video in vidpulse)")
    return next(iter(given), None)


def _where_video(video: str | None) -> str | None:
    if video is None:
        return None
    if "," in video or ";" in video:
        raise QueryError("a video id cannot contain ',' or ';' here")
    return f"video=={video}"


def _check_creator(key: ApiKey, creator_id: str | None) -> None:
    if creator_id and creator_id != key.account:
        raise AuthError(403, f"creatorId is the account in vidpulse: this key opens {key.account}, not {creator_id}")

