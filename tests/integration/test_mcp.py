"""The MCP tools, driven by the MCP SDK's own client over stdio (``vidpulse mcp``) and over streamable HTTP
(``/mcp``), against a real ``vidpulse up`` holding simulated traffic: each answer equals the REST API's for the
same question, a public key reaches nothing outside its scope, and bad arguments are tool errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.integration.beacons import get
from tests.integration.conftest import PAGE, SIMULATED

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
FROM, TO = "2026-01-01", "2030-12-31"
RANGE = {"from": f"{FROM}T00:00:00Z", "to": f"{TO}T23:59:59Z"}
ENGAGEMENT = "video_view,video_impression,watch_minutes,fingerprint_count"
QOE = "error_rate,rebuffer_ratio,exit_before_start_rate,ttff_p50_ms,ttff_p95_ms"
Session = Callable[[Client], Awaitable[Any]]


def http_client(process: Any, key: str, **headers: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **headers}, timeout=60)
    return Client(streamable_http_client(f"{process.url}/mcp", http_client=http))


def stdio_client(process: Any, key: str) -> Client:
    env = {**process.env, "VIDPULSE_MCP_KEY": key, "VIDPULSE_MCP_API_URL": process.url}
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "vidpulse.cli", "mcp"], env=env))


def with_client(client: Client, session: Session) -> Any:
    async def run() -> Any:
        async with client:
            return await session(client)
    return asyncio.run(run())


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def rows_of(process: Any, endpoint: str, **params: str) -> list[dict[str, Any]]:
    return get(process, endpoint, SIMULATED, **params)["data"]


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_every_tool_answers_what_the_rest_api_answers(simulated, transport):
    make = http_client if transport == "http" else stdio_client

    async def session(client: Client) -> dict[str, Any]:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"get_analytics", "get_analytics_timeseries", "get_video_retention", "get_realtime_metrics",
                         "get_quality_metrics", "get_geographic_breakdown", "list_analytics_capabilities"}
        return {
            "content": await call(client, "get_analytics", from_date=FROM, to_date=TO, report_type="content", limit=2,
                                  page_index=2),
            "platforms": await call(client, "get_analytics", from_date=FROM, to_date=TO, report_type="platforms",
                                    entry_id="video-1"),
            "series": await call(client, "get_analytics_timeseries", from_date=FROM, to_date=TO,
                                 metrics=["video_view", "ccu"], interval="days", dimension="device"),
            "retention": await call(client, "get_video_retention", entry_id="video-1", from_date=FROM, to_date=TO,
                                    user_filter="anonymous"),
            "quality": await call(client, "get_quality_metrics", from_date=FROM, to_date=TO, dimension="browser"),
            "geo": await call(client, "get_geographic_breakdown", from_date=FROM, to_date=TO, granularity="country"),
            "capabilities": await call(client, "list_analytics_capabilities"),
            "realtime": await call(client, "get_realtime_metrics", report_type="quality"),
        }

    found = with_client(make(simulated, simulated.auth.keys[SIMULATED]), session)

    content = rows_of(simulated, "events", dimensions="video", metrics=ENGAGEMENT, sort="-video_view", limit="2",
                      offset="2", **RANGE)
    assert found["content"]["rows"] == [{"video": r["dimensions"]["video"], **r["totals"]} for r in content]
    assert found["content"]["units"]["watch_minutes"] == "minutes" and len(content) == 2

    platforms = rows_of(simulated, "events", dimensions="device_type", metrics=ENGAGEMENT, sort="-video_view",
                        limit="50", where="video==video-1", **RANGE)
    assert found["platforms"]["rows"] == [{"device_type": r["dimensions"]["device_type"], **r["totals"]}
                                          for r in platforms]

    series = get(simulated, "timeseries", SIMULATED, dimensions="device_type", metrics="video_view,ccu",
                 time_step="day", **RANGE)
    assert [(s["metric"], s["device_type"], [p["value"] for p in s["data"]]) for s in found["series"]["series"]] == \
        [(metric, entry["dimensions"]["device_type"], [p["value"] for p in entry["points"]])
         for metric in ("video_view", "ccu") for entry in series[metric]["data"]]

    retention = httpx.get(f"{simulated.url}/v1/retention/accounts/{SIMULATED}/videos/video-1",
                          params={"viewer": "anonymous", **RANGE}, auth=simulated.auth, timeout=30).json()
    assert {k: v for k, v in found["retention"].items() if k != "units"} == retention
    assert len(found["retention"]["points"]) == 101

    quality = rows_of(simulated, "events", dimensions="browser", metrics=f"video_view,{QOE}", sort="-video_view",
                      limit="100", **RANGE)
    assert found["quality"]["rows"] == [{"browser": r["dimensions"]["browser"], **r["totals"]} for r in quality]

    geo = rows_of(simulated, "events", dimensions="country", metrics="video_view,watch_minutes,fingerprint_count",
                  sort="-video_view", limit="10000", **RANGE)
    total_views = sum(r["totals"]["video_view"] for r in geo)
    assert total_views == simulated.truth["totals"]["account"]["video_view"]
    assert found["geo"]["rows"] == [{"country": r["dimensions"]["country"], **r["totals"],
                                     "percentage": round(100 * r["totals"]["video_view"] / total_views, 2)} for r in geo]

    capabilities = found["capabilities"]
    assert capabilities["account"] == SIMULATED and "content" in capabilities["report_types"]
    assert "storage" in capabilities["report_types_not_applicable"]
    assert set(found["realtime"]["quality"]) == set(QOE.split(","))
    assert found["realtime"]["quality"] == get(simulated, "realtime", SIMULATED, fields=QOE)["quality"]


def test_a_public_key_reaches_nothing_outside_its_scope(simulated):
    async def session(client: Client) -> list[tuple[str, bool, str]]:
        results = []
        for tool, arguments in (
            ("get_analytics", {"from_date": FROM, "to_date": TO}),                            # the whole account
            ("get_analytics", {"from_date": FROM, "to_date": TO, "entry_id": "video-2"}),     # another video
            ("get_video_retention", {"entry_id": "video-1"}),                                 # another endpoint
            ("get_realtime_metrics", {"entry_id": "video-1"}),                                # another metric
            ("get_analytics_timeseries", {"from_date": FROM, "to_date": TO, "entry_id": "video-1",
                                          "metrics": ["video_view"]}),                        # inside its scope
        ):
            result = await client.call_tool(tool, arguments)
            results.append((tool, result.is_error, result.content[0].text if result.content else ""))
        return results

    results = with_client(http_client(simulated, simulated.public_key, Origin=PAGE), session)
    assert [error for _, error, _ in results] == [True, True, True, True, False], results
    assert all("403" in text for _, error, text in results if error)


def test_bad_arguments_are_tool_errors_that_say_what_to_change(simulated):
    async def session(client: Client) -> list[str]:
        texts = []
        for tool, arguments in (
            ("get_analytics", {"from_date": FROM, "to_date": TO, "report_type": "bandwidth"}),
            ("get_analytics", {"from_date": FROM, "to_date": TO, "report_type": "nonsense"}),
            ("get_analytics", {"from_date": "yesterday", "to_date": TO}),
            ("get_analytics", {"from_date": FROM, "to_date": TO, "limit": 0}),
            ("get_analytics_timeseries", {"from_date": FROM, "to_date": TO, "interval": "fortnights"}),
            ("get_geographic_breakdown", {"from_date": FROM, "to_date": TO, "granularity": "city"}),
            ("get_video_retention", {}),
        ):
            result = await client.call_tool(tool, arguments)
            assert result.is_error, (tool, arguments)
            texts.append(result.content[0].text)
        return texts

    texts = with_client(http_client(simulated, simulated.auth.keys[SIMULATED]), session)
    assert "vidpulse delivers no video" in texts[0]
    assert "unknown report_type" in texts[1] and "content" in texts[1]
    assert "400" in texts[2] and "`from`" in texts[2]
    assert "at least 1" in texts[3]
    assert "interval must be one of" in texts[4]
    assert "no city" in texts[5]
    assert "entry_id" in texts[6]


def test_the_mcp_endpoint_needs_a_key(simulated):
    response = httpx.post(f"{simulated.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
