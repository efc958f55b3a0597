"""The query API in this test process, on a test database, with real accounts and secret keys in its store."""

from __future__ import annotations

import functools
from collections.abc import Callable

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry

from aggregations.accounts import active_keys as stored_keys
from aggregations.accounts import create_account, create_key, find_account
from aggregations.clickhouse import ClickHouse
from ingest.directory import Directory
from queries.api import QueryContext, QueryMetrics, bad_request, query_router
from queries.auth import Guard
from queries.export import export_router
from queries.retention import retention_router
from tests.keys import AccountKeys

ACCOUNTS = ("1234", "9999", "ret")
Router = Callable[[QueryContext], APIRouter]
ALL_ROUTERS: tuple[Router, ...] = (query_router, retention_router, export_router)


@functools.cache
def secret_keys(db: ClickHouse, accounts: tuple[str, ...] = ACCOUNTS) -> AccountKeys:
    """A secret key per account (made once per client): requests carry the key of the account they ask about."""
    keys = {}
    for account in accounts:
        if find_account(db, account) is None:
            create_account(db, account)
        keys[account] = create_key(db, account, "secret")[1]
    return AccountKeys(keys)


def api_app(db: ClickHouse, key_rate: str = "100000/second", routers: tuple[Router, ...] = ALL_ROUTERS,
            store: ClickHouse | None = None) -> FastAPI:
    """``store``: where the keys are, when ``db`` cannot read them (a client with tight cost limits)."""
    keys = Directory.fixed("keys", stored_keys(store or db))
    context = QueryContext(db, QueryMetrics(CollectorRegistry()), Guard(keys, key_rate))
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, bad_request)
    for router in routers:
        app.include_router(router(context))
    return app


def api_client(db: ClickHouse, auth: httpx.Auth | None = None, **app_options: object) -> httpx.AsyncClient:
    """A client of the API; by default it authenticates as each account's backend would."""
    auth = auth or secret_keys(app_options.get("store") or db)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app(db, **app_options)),  # type: ignore[arg-type]
                             base_url="http://test", auth=auth)
