"""The OpenAPI document is built from the catalog and refuses to leave a served route undescribed."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.routing import Route

from ingest.directory import Directory
from queries.api import QueryContext, QueryMetrics, query_router
from queries.auth import Guard
from queries.catalog import GROUPABLE, METRICS
from queries.contract import document
from queries.live import LiveHub, LiveMetrics
from queries.livepeer import livepeer_router
from queries.parameters import where_pattern


def app_with(*extra_routes: Route) -> FastAPI:
    context = QueryContext(None, QueryMetrics(CollectorRegistry()), Guard(Directory.fixed("keys", {}), "1/second"))
    app = FastAPI(title="vidpulse", version="1")
    app.include_router(query_router(context))
    app.include_router(livepeer_router(context, LiveHub(None, None, LiveMetrics(CollectorRegistry()))))
    app.router.routes.extend(extra_routes)
    return app


def parameter(doc: dict, path: str, name: str) -> dict:
    return next(p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name)


def test_enums_are_the_catalogs_lists():
    doc = document(app_with())
    path = "/v1/timeseries/accounts/{account_id}"
    assert parameter(doc, path, "metrics")["schema"]["items"]["enum"] == list(METRICS)
    assert parameter(doc, path, "dimensions")["schema"]["items"]["enum"] == list(GROUPABLE)
    assert doc["paths"][path]["get"]["security"] == [{"bearer": []}]
    assert set(doc["paths"][path]["get"]["responses"]) == {"200", "400", "401", "403", "422", "429", "503"}


def test_the_tracker_is_in_the_document_where_it_is_served():
    async def endpoint(_):  # pragma: no cover - never called
        return None
    assert "/v1/track" not in document(app_with())["paths"]
    track = document(app_with(Route("/v1/track", endpoint, methods=["POST"])))["paths"]["/v1/track"]["post"]
    assert set(track["requestBody"]["content"]) == {"application/json", "text/plain"}
    assert track["security"] == []


def test_whoami_links_its_account_to_the_account_operations():
    """The links are what Schemathesis's stateful phase chains; each names an operation of the document."""
    doc = document(app_with())
    links = doc["paths"]["/v1/whoami"]["get"]["responses"]["200"]["links"]
    # getUsage and getRealtime are served by other routers, absent from this reduced app: no link to them
    assert {name: link["operationId"] for name, link in links.items()} == {"getEvents": "getEvents",
                                                                         "getTimeseries": "getTimeseries"}
    assert {link["parameters"]["account_id"] for link in links.values()} == {"$response.body#/account"}


def test_an_undescribed_route_fails_the_build():
    app = app_with()

    @app.get("/v1/new")
    async def new() -> dict:  # pragma: no cover - never called
        return {}
    with pytest.raises(KeyError, match="/v1/new"):
        document(app)


@pytest.mark.parametrize("where, valid", [("video==a,b;country==US", True), ("live==true", True), (" video == a ", True),
                                          ("live==yes", False), ("video==", False), ("video==a;", False),
                                          ("nope==a", False), ("video==a,,b", False)])
def test_where_pattern_matches_what_the_parser_takes(where, valid):
    from queries.params import QueryError, parse_where
    try:
        parse_where(where)
        parsed = True
    except QueryError:
        parsed = False
    assert parsed is valid and bool(re.search(where_pattern(), where)) is valid
