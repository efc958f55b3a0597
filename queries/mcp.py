"""vidpulse for assistants: MCP tools named and parametrised after the analytics tool set assistants already know.

Every tool is a thin client of vidpulse's own REST API, called with the caller's key: over stdio
(``vidpulse mcp``) against ``VIDPULSE_MCP_API_URL`` with ``VIDPULSE_MCP_KEY``; over streamable HTTP (``/mcp``
on the API process) in-process with the ``Authorization`` header of the MCP request. So an answer is
exactly what the REST API answers, and a key's scope limits the tools exactly as it limits the API.
A refusal becomes a tool error that says what to change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from queries.catalog import METRICS

ClientFor = Callable[[Context], AbstractAsyncContextManager[httpx.AsyncClient]]
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
UNITS = {"video_impression": "count", "video_view": "count (plays)", "video_seconds_viewed": "seconds",
         "watch_minutes": "minutes", "ad_start": "count", "alive_ss_ad_start": "count",
         "ccu": "sessions (timeseries: concurrent per minute, max in bucket; totals: distinct over the range)",
         "fingerprint_count": "distinct viewers (device fingerprints)", "unique_viewers": "distinct known users",
         "error_rate": "ratio 0-1 (sessions with a fatal error / views)",
         "rebuffer_ratio": "ratio 0-1 (rebuffering / (watching + rebuffering))",
         "exit_before_start_rate": "ratio 0-1 (views that ended before a first frame)",
         "ttff_p50_ms": "milliseconds", "ttff_p95_ms": "milliseconds", "ttff_p99_ms": "milliseconds"}
ENGAGEMENT = ("video_view", "video_impression", "watch_minutes", "fingerprint_count")
QOE = ("error_rate", "rebuffer_ratio", "exit_before_start_rate", "ttff_p50_ms", "ttff_p95_ms")
# Report types of the reference tool set, mapped onto (grouping dimension, metrics); None: does not apply.
REPORT_TYPES: dict[str, tuple[str, tuple[str, ...]] | None] = {
    "content": ("video", ENGAGEMENT), "unique_users": ("account", ("unique_viewers", "fingerprint_count")),
    "user_engagement": ("viewer", ("video_view", "watch_minutes", "unique_viewers")),
    "geographic": ("continent", ENGAGEMENT), "geographic_country": ("country", ENGAGEMENT),
    "geographic_region": ("subdivision", ENGAGEMENT), "platforms": ("device_type", ENGAGEMENT),
    "operating_system": ("os", ENGAGEMENT), "browsers": ("browser", ENGAGEMENT), "sources": ("domain", ENGAGEMENT),
    "playback_context": ("player", ENGAGEMENT), "qoe_overview": ("account", QOE),
    "content_dropoff": None, "content_interactions": None, "content_contributions": None, "user_usage": None,
    "user_highlights": None, "syndication": None, "partner_usage": None, "storage": None, "bandwidth": None,
    "cdn_bandwidth": None, "percentiles": None, "realtime": None}
NOT_APPLICABLE = {
    "content_dropoff": "use get_video_retention (drop-off per percent of one video)",
    "percentiles": "use get_video_retention", "realtime": "use get_realtime_metrics",
    "content_interactions": "vidpulse records no interactions beyond playback",
    "content_contributions": "vidpulse hosts no content", "user_usage": "vidpulse hosts no content",
    "user_highlights": "vidpulse keeps no per-user report", "syndication": "use report_type=sources (page domains)",
    "partner_usage": "vidpulse delivers and stores no video", "storage": "vidpulse stores no video",
    "bandwidth": "vidpulse delivers no video", "cdn_bandwidth": "vidpulse delivers no video"}
INTERVALS = {"hours": "hour", "days": "day", "weeks": "week", "months": "month", "years": "year"}
DIMENSION_ALIASES = {"device": "device_type", "entry_id": "video", "region": "subdivision", "application": "player",
                     "geography": "country"}
GRANULARITY = {"world": "continent", "country": "country", "region": "subdivision"}
REALTIME_FIELDS = {"viewers": "viewers,plays_per_minute,watch_seconds_per_minute,viewers_change_pct,trend,"
                              "peak_viewers,peak_at,by_video",
                   "geographic": "viewers,by_country", "quality": "viewers," + ",".join(QOE)}


def build_server(client_for: ClientFor) -> MCPServer:
    """The tools; ``client_for`` gives the REST client of the caller (its key in the Authorization header)."""
    server = MCPServer("vidpulse", instructions="Player analytics of one vidpulse account (the key's). Start with "
                       "list_analytics_capabilities; dates are YYYY-MM-DD (whole UTC days) or ISO 8601.")

    async def ask(ctx: Context, path: str, params: dict[str, Any]) -> Any:
        async with client_for(ctx) as client:
            who = await _get(client, "/v1/whoami", {})
            return who, await _get(client, path.format(account=who["account"]), params)

    @server.tool()
    async def get_analytics(from_date: str, to_date: str, ctx: Context, report_type: str = "content",
                            entry_id: str | None = None, dimension: str | None = None, limit: int = 50,
                            page_index: int = 1, order_by: str | None = None) -> dict[str, Any]:
        """Totals over a date range, grouped for rankings and comparisons (the primary analytics tool).

        USE WHEN: ranking videos, comparing countries, devices, browsers or sites, or reading an account's totals.
        Args: from_date/to_date: YYYY-MM-DD (whole UTC days) or ISO 8601; report_type: content (per video),
        unique_users, user_engagement (anonymous vs registered), geographic (continent), geographic_country,
        geographic_region, platforms (device type), operating_system, browsers, sources (page domain),
        playback_context (player), qoe_overview; entry_id: a video id to filter to; dimension: group by this
        instead (device, country, os, browser, domain, entry_id, ...); limit (1-10000) and page_index (from 1);
        order_by: a metric of the report, '-' first for descending (default: -video_view when present).
        Examples: get_analytics("2026-11-01", "2026-11-30", report_type="content", limit=10);
        get_analytics("2026-11-01", "2026-11-30", report_type="geographic_country", entry_id="5555").
        """
        grouping, metrics = _report(report_type)
        grouping = _dimension(dimension) if dimension else grouping
        sort = order_by or ("-video_view" if "video_view" in metrics else None)
        if limit < 1 or page_index < 1:
            raise ToolError("limit and page_index must be at least 1")
        params = {"dimensions": grouping, "metrics": ",".join(metrics), **_range(from_date, to_date),
                  **_where(entry_id), "limit": limit, "offset": (page_index - 1) * limit, **({"sort": sort} if sort else {})}
        who, answer = await ask(ctx, "/v1/events/accounts/{account}", params)
        rows = [{**_shown(row["dimensions"], grouping), **row["totals"]} for row in answer["data"]]
        return {"account": who["account"], "report_type": report_type, "grouped_by": grouping, **_echo(params),
                "page_index": page_index, "limit": limit, "units": _units(metrics), "rows": rows}

    @server.tool()
    async def get_analytics_timeseries(from_date: str, to_date: str, ctx: Context, report_type: str = "content",
                                       metrics: list[str] | None = None, entry_id: str | None = None,
                                       interval: str = "days", dimension: str | None = None) -> dict[str, Any]:
        """Metric values per calendar interval (UTC), for charts and trends.

        USE WHEN: showing growth or decline, comparing periods, drawing a chart.
        Args: from_date/to_date: YYYY-MM-DD or ISO 8601; report_type: as in get_analytics (picks the default
        metrics); metrics: vidpulse metric names instead (list_analytics_capabilities lists them); entry_id: one
        video; interval: hours, days, weeks, months or years; dimension: one series per value of it.
        Examples: get_analytics_timeseries("2026-11-01", "2026-11-30", entry_id="5555", metrics=["video_view"]);
        get_analytics_timeseries("2026-01-01", "2026-11-30", interval="months", report_type="platforms").
        """
        grouping, default_metrics = _report(report_type)
        chosen = tuple(metrics or default_metrics)
        unknown = [name for name in chosen if name not in METRICS]
        if unknown:
            raise ToolError(f"unknown metric(s) {', '.join(unknown)}: use some of {', '.join(METRICS)}")
        if interval not in INTERVALS:
            raise ToolError(f"interval must be one of {', '.join(INTERVALS)}, not {interval!r}")
        grouping = _dimension(dimension) if dimension else (grouping if report_type != "content" or not entry_id
                                                            else "video")
        params = {"dimensions": grouping, "metrics": ",".join(chosen), **_range(from_date, to_date), **_where(entry_id),
                  "time_step": INTERVALS[interval]}
        who, answer = await ask(ctx, "/v1/timeseries/accounts/{account}", params)
        series = [{"metric": metric, **_shown(entry["dimensions"], grouping),
                   "data": [{"date": _iso(point["timestamp"]), "value": point["value"]} for point in entry["points"]]}
                  for metric in chosen for entry in answer[metric]["data"]]
        return {"account": who["account"], "report_type": report_type, "interval": interval, "grouped_by": grouping,
                **_echo(params), "units": _units(chosen), "series": series}

    @server.tool()
    async def get_video_retention(entry_id: str, ctx: Context, from_date: str | None = None,
                                  to_date: str | None = None, user_filter: str | None = None) -> dict[str, Any]:
        """Where viewers of one video drop off or replay: 101 points (each percent of the video) and insights.

        USE WHEN: finding where viewers stop watching, which parts are replayed, the completion rate.
        Args: entry_id: the video (required); from_date/to_date: YYYY-MM-DD or ISO 8601 (default: the last 32
        days); user_filter: anonymous, registered or one user id (default: all viewers).
        Example: get_video_retention("5555", user_filter="registered").
        """
        params = {**_range(from_date, to_date), "viewer": user_filter or "all"}
        _, answer = await ask(ctx, f"/v1/retention/accounts/{{account}}/videos/{_path(entry_id)}", params)
        return {**answer, "units": {"viewers": "passes (replays included)", "unique_viewers": "distinct viewers",
                                    "retention_percentage": "percent of point 0", "time_s": "seconds"}}

    @server.tool()
    async def get_realtime_metrics(ctx: Context, report_type: str = "viewers",
                                   entry_id: str | None = None) -> dict[str, Any]:
        """What is happening now (live figures, within about a second of the players' beacons).

        USE WHEN: watching a live event, "how many are watching?", "is the stream healthy right now?".
        Args: report_type: viewers (now, trend, 30-minute peak, plays per minute, top videos), geographic (top
        countries now) or quality (the last 5 minutes' error rate, rebuffering, TTFF); entry_id: one video.
        Example: get_realtime_metrics(report_type="viewers", entry_id="5555").
        """
        if report_type not in REALTIME_FIELDS:
            raise ToolError(f"report_type must be one of {', '.join(REALTIME_FIELDS)}, not {report_type!r}")
        params = {"fields": REALTIME_FIELDS[report_type], **_where(entry_id)}
        _, answer = await ask(ctx, "/v1/realtime/accounts/{account}", params)
        return {"report_type": report_type, **answer,
                "units": {"viewers": "sessions watching now", "plays_per_minute": "views in the last 60 s",
                          "watch_seconds_per_minute": "seconds watched in the last 60 s", **_units(QOE)}}

    @server.tool()
    async def get_quality_metrics(from_date: str, to_date: str, ctx: Context, metric_type: str = "overview",
                                  entry_id: str | None = None, dimension: str | None = None) -> dict[str, Any]:
        """Quality of experience over a date range: errors, rebuffering, startup time, exits before start.

        USE WHEN: playback complaints, comparing quality across devices, browsers or countries.
        Args: from_date/to_date: YYYY-MM-DD or ISO 8601; metric_type: overview (all), experience (startup and
        rebuffering), errors (error rate and exits before start); entry_id: one video; dimension: device,
        country, os, browser, ... Example: get_quality_metrics("2026-11-01", "2026-11-30", dimension="device").
        """
        chosen = {"overview": QOE, "experience": ("ttff_p50_ms", "ttff_p95_ms", "rebuffer_ratio"),
                  "errors": ("error_rate", "exit_before_start_rate")}.get(metric_type)
        if chosen is None:
            raise ToolError(f"metric_type must be overview, experience or errors, not {metric_type!r} (vidpulse "
                            "measures no bitrate or stream internals)")
        grouping = _dimension(dimension) if dimension else "account"
        params = {"dimensions": grouping, "metrics": ",".join(("video_view", *chosen)), **_range(from_date, to_date),
                  **_where(entry_id), "sort": "-video_view", "limit": 100}
        who, answer = await ask(ctx, "/v1/events/accounts/{account}", params)
        rows = [{**_shown(row["dimensions"], grouping), **row["totals"]} for row in answer["data"]]
        return {"account": who["account"], "metric_type": metric_type, "grouped_by": grouping, **_echo(params),
                "units": _units(("video_view", *chosen)), "rows": rows}

    @server.tool()
    async def get_geographic_breakdown(from_date: str, to_date: str, ctx: Context, granularity: str = "country",
                                       region_filter: str | None = None,
                                       metrics: list[str] | None = None) -> dict[str, Any]:
        """Views and viewers by place, with each place's share of the views.

        USE WHEN: "where are our viewers?", regional reach, comparing markets.
        Args: from_date/to_date: YYYY-MM-DD or ISO 8601; granularity: world (continents), country, region
        (ISO 3166-2 subdivisions; needs a city database); region_filter: a country code (e.g. US) for region,
        a continent code (e.g. EU) for country; metrics: vidpulse metric names (default views, watch minutes,
        distinct viewers). Example: get_geographic_breakdown("2026-11-01", "2026-11-30", granularity="country").
        """
        if granularity not in GRANULARITY:
            raise ToolError(f"granularity must be world, country or region, not {granularity!r} (vidpulse keeps "
                            "no city)")
        grouping = GRANULARITY[granularity]
        chosen = tuple(metrics or ("video_view", "watch_minutes", "fingerprint_count"))
        where = None
        if region_filter:
            where = f"{'continent' if granularity == 'country' else 'country'}=={region_filter}"
        params = {"dimensions": grouping, "metrics": ",".join(dict.fromkeys(("video_view", *chosen))),
                  **_range(from_date, to_date), **({"where": where} if where else {}), "sort": "-video_view",
                  "limit": 10_000}
        who, answer = await ask(ctx, "/v1/events/accounts/{account}", params)
        views = sum(row["totals"]["video_view"] for row in answer["data"]) or 0
        rows = [{grouping: row["dimensions"][grouping], **row["totals"],
                 "percentage": round(100 * row["totals"]["video_view"] / views, 2) if views else 0.0}
                for row in answer["data"]]
        return {"account": who["account"], "granularity": granularity, **_echo(params), "locations": len(rows),
                "units": {**_units(chosen), "percentage": "percent of the views"}, "top_locations": rows[:10],
                "rows": rows}

    @server.tool()
    async def list_analytics_capabilities(ctx: Context) -> dict[str, Any]:
        """What these tools can answer: report types (and those that do not apply here), metrics with units,
        dimensions, intervals. USE WHEN: before the first question, or when a tool refused an argument."""
        async with client_for(ctx) as client:
            who = await _get(client, "/v1/whoami", {})
        return {"account": who["account"], "key": who,
                "tools": ["get_analytics", "get_analytics_timeseries", "get_video_retention", "get_realtime_metrics",
                          "get_quality_metrics", "get_geographic_breakdown", "list_analytics_capabilities"],
                "report_types": {name: {"grouped_by": spec[0], "metrics": list(spec[1])}
                                 for name, spec in REPORT_TYPES.items() if spec},
                "report_types_not_applicable": NOT_APPLICABLE, "metrics": UNITS,
                "dimensions": ["video (entry_id)", "country", "continent", "subdivision (region)", "device_type (device)",
                               "os", "browser", "player (application)", "timezone", "domain", "live", "viewer"],
                "time_intervals": list(INTERVALS), "user_filters": ["all", "anonymous", "registered", "<user id>"],
                "quality_metric_types": ["overview", "experience", "errors"],
                "geographic_levels": list(GRANULARITY), "realtime_report_types": list(REALTIME_FIELDS),
                "dates": "YYYY-MM-DD (whole UTC days, to_date included) or ISO 8601"}

    return server


async def _get(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> Any:
    try:
        response = await client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ToolError(f"the vidpulse API did not answer ({type(exc).__name__}); check VIDPULSE_MCP_API_URL and "
                        "that the API runs") from exc
    if response.status_code == 200:
        return response.json()
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    reason = body.get("error") or response.text[:200]
    hint = {401: " Give a valid vidpulse API key.", 403: " The key does not open this: ask within its scope.",
            429: " Too many requests: wait and retry.", 503: " Retry in a few seconds."}.get(response.status_code, "")
    valid = f" Valid values: {', '.join(map(str, body['valid']))}." if body.get("valid") else ""
    raise ToolError(f"{response.status_code}: {reason}.{hint}{valid}")


def _report(report_type: str) -> tuple[str, tuple[str, ...]]:
    if report_type not in REPORT_TYPES:
        raise ToolError(f"unknown report_type {report_type!r}: use one of "
                        f"{', '.join(name for name, spec in REPORT_TYPES.items() if spec)}")
    spec = REPORT_TYPES[report_type]
    if spec is None:
        raise ToolError(f"report_type {report_type} does not apply to vidpulse: {NOT_APPLICABLE[report_type]}")
    return spec


def _dimension(name: str) -> str:
    return DIMENSION_ALIASES.get(name, name)


def _range(from_date: str | None, to_date: str | None) -> dict[str, str]:
    """YYYY-MM-DD is a whole UTC day (to_date included); anything else goes to the API as it is (ISO 8601)."""
    found = {}
    if from_date:
        found["from"] = f"{from_date}T00:00:00Z" if _DAY.match(from_date) else from_date
    if to_date:
        found["to"] = f"{to_date}T23:59:59Z" if _DAY.match(to_date) else to_date
    return found


def _where(entry_id: str | None) -> dict[str, str]:
    return {"where": f"video=={entry_id}"} if entry_id else {}


def _path(video: str) -> str:
    return httpx.URL("/" + video).raw_path.decode().lstrip("/") if "/" not in video else video.replace("/", "%2F")


def _shown(dimensions: dict[str, Any], grouping: str) -> dict[str, Any]:
    return {name: value for name, value in dimensions.items() if name == grouping and grouping != "account"}


def _echo(params: dict[str, Any]) -> dict[str, Any]:
    return {name: params[name] for name in ("from", "to", "where") if name in params}


def _units(metrics: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {name: UNITS[name] for name in metrics if name in UNITS}


def _iso(epoch_ms: int) -> str:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def remote_client(api_url: str, key: str) -> ClientFor:
    """``vidpulse mcp`` (stdio): every tool call asks the vidpulse API at ``api_url`` with ``key``."""
    def client_for(_: Context) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    return client_for


def in_process_client(app: Any) -> ClientFor:
    """``/mcp`` on the API process: the tool call asks this very app, with the MCP request's key and the page
    headers a public key is checked against (so its scope applies exactly as on the REST API)."""
    def client_for(ctx: Context) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        incoming = ctx.headers or {}
        headers = {name: incoming[name] for name in ("authorization", "origin", "referer") if name in incoming}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vidpulse.internal",
                                 headers=headers, timeout=60)
    return client_for


class KeyRequired:
    """In front of the MCP endpoint: a request without a known key is a 401 before any MCP session opens."""

    def __init__(self, app: Any, known: Callable[[str], bool]) -> None:
        self.app, self.known = app, known

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        authorization = headers.get("authorization", "")
        key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        if scope["type"] == "http" and not self.known(key):
            body = b'{"error":"a valid API key is required: send `Authorization: Bearer <key>`"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b'Bearer realm="vidpulse"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
