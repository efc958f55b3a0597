"""One process's parts, built from one settings object, started and stopped in order, behind one HTTP app.

Every HTTP process serves /healthz (alive), /readyz (its parts can do their job:
database and broker answer and the API's keys are loaded, or, for a tracker, it
knows its accounts and can accept into Kafka or its spool) and /metrics
(Prometheus), beside whatever parts it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aggregations.accounts import ApiKey, active_keys, active_origins, hash_key, quota_usage
from aggregations.clickhouse import ClickHouse, connect
from aggregations.live import LiveWindow
from aggregations.livetail import LiveTail
from aggregations.metrics import WorkerMetrics
from aggregations.schema import migrate
from aggregations.worker import Worker
from ingest.directory import Directory, DirectoryMetrics
from ingest.http import OrjsonResponse
from ingest.metrics import TrackerMetrics
from ingest.producer import EventProducer
from ingest.settings import Settings
from ingest.spool import Spool
from ingest.topics import broker_reachable, ensure_topics
from ingest.tracker import Tracker
from queries.api import QueryContext, QueryMetrics, bad_request, query_router
from queries.auth import Guard
from queries.contract import install as install_contract
from queries.dashboard import dashboard_router
from queries.export import export_router
from queries.live import LiveHub, LiveMetrics
from queries.live_api import live_router
from queries.livepeer import livepeer_router
from queries.mcp import KeyRequired, build_server, in_process_client
from queries.retention import retention_router
from queries.usage import usage_router
from vidpulse.devaccount import provision_dev_account

Check = Callable[[], Awaitable[bool]]


class Process:
    """The parts named in ``roles`` (of "tracker", "worker", "api"); build inside a running event loop.
    ``dev_account``: on a database without accounts, create the development account and print its keys."""

    def __init__(self, settings: Settings, roles: frozenset[str], bootstrap: str, dev_account: bool = False) -> None:
        self.settings, self.roles, self.bootstrap = settings, roles, bootstrap
        self.registry = CollectorRegistry()
        self.checks: dict[str, Check] = {}
        self.db: ClickHouse | None = None
        self.worker_db = self.worker_control_db = self.producer = self.worker = None
        self.directories: list[Directory] = []
        self._services = contextlib.AsyncExitStack()  # what runs for as long as the process: the MCP sessions
        self._mcp: object | None = None
        if roles & {"worker", "api"}:
            migrate(settings.clickhouse_url, settings.clickhouse_database)
            self.db = connect(settings.clickhouse_url, settings.clickhouse_database, settings.query_limits)
            self.checks["clickhouse"] = self.db.ping
            if dev_account and settings.dev_account:
                provision_dev_account(self.db, settings.dev_account, settings.http_port)
        if "tracker" in roles:
            self.accounts: Directory[tuple[str, ...]] = Directory(
                "accounts", self._loader(active_origins), settings.accounts_refresh_s, settings.accounts_snapshot, tuple)
            # without a load (database down since start) no quota is enforced: beacons are never refused for it
            self.quotas: Directory[tuple[int, int]] = Directory("quotas", self._loader(quota_usage),
                                                                settings.accounts_refresh_s)
            self.directories += [self.accounts, self.quotas]
            self.tracker_metrics = TrackerMetrics(self.registry)
            self.producer = EventProducer(bootstrap, (settings.events_topic, settings.dead_letter_topic),
                                          settings.topic_partitions, Spool(settings.spool_folder, settings.spool_max_bytes),
                                          settings.spool_after_s, self.tracker_metrics, settings.topic_replication)
            self.checks["accepting"] = _now(lambda: self.producer is not None and self.producer.accepting()
                                            and self.accounts.loaded)
            self.checks["kafka"] = _now(lambda: self.producer is not None and self.producer.connected)
        elif "worker" in roles:
            self.checks["kafka"] = functools.partial(broker_reachable, bootstrap)
        if "worker" in roles:
            # its own client: queries never wait behind the worker's inserts (chdb shares the engine)
            self.worker_db = connect(settings.clickhouse_url, settings.clickhouse_database)
            # and a second one on a server, so building the next batch never waits behind the last one's rows
            # (chdb's engine is this process's: the same client)
            self.worker_control_db = self.worker_db if settings.clickhouse_url.startswith("chdb") \
                else connect(settings.clickhouse_url, settings.clickhouse_database)
            self.worker = Worker(settings, bootstrap, self.worker_db, WorkerMetrics(self.registry),
                                 self.worker_control_db)
        if "api" in roles:
            self.keys: Directory[ApiKey] = Directory("keys", self._loader(active_keys), settings.accounts_refresh_s)
            self.directories.append(self.keys)
            self.checks["keys"] = _now(lambda: self.keys.loaded)
            # live figures follow the events topic; without a broker they answer 501
            tail = LiveTail(bootstrap, settings.events_topic, LiveWindow(settings.session_timeout_s * 1000)) \
                if bootstrap else None
            assert self.db is not None
            self.live = LiveHub(self.db, tail, LiveMetrics(self.registry))
        if self.directories:
            DirectoryMetrics(self.directories, self.registry)

    def _loader(self, read: Callable[[ClickHouse], Mapping[str, object]]) -> Callable[[], Awaitable[Mapping]]:
        """Reads through this process's client; a lone tracker opens one on first use (and again after a
        failed start), so it starts and accepts while the database is down."""
        async def load() -> Mapping:
            if self.db is None:
                self.db = await asyncio.to_thread(connect, self.settings.clickhouse_url, self.settings.clickhouse_database)
            return await asyncio.to_thread(read, self.db)
        return load

    async def start(self) -> None:
        for directory in self.directories:
            await directory.start()
        if "worker" in self.roles:
            await ensure_topics(self.bootstrap, [self.settings.events_topic, self.settings.dead_letter_topic],
                                self.settings.topic_partitions, self.settings.topic_replication)
        if self.producer:
            await self.producer.start()
        if self.worker:
            await self.worker.start()
        if "api" in self.roles and self.live.tail:
            await self.live.tail.start()
        if self._mcp is not None:
            await self._services.enter_async_context(self._mcp.session_manager.run())  # type: ignore[attr-defined]

    def closing(self) -> None:
        """The server begins to shut down: live streams end now (clients reconnect to another process)."""
        if "api" in self.roles:
            self.live.close()

    async def stop(self) -> None:
        """Live streams first, then the worker (it flushes to ClickHouse), then the producer, then the database."""
        await self._services.aclose()
        if "api" in self.roles:
            await self.live.stop()
            if self.live.tail:
                await self.live.tail.stop()
        if self.worker:
            await self.worker.stop()
        if self.producer:
            await self.producer.stop()
        for directory in self.directories:
            await directory.stop()
        for db in {id(db): db for db in (self.worker_db, self.worker_control_db, self.db) if db}.values():
            db.close()

    def http_app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPIOffline(title="vidpulse", version="1", lifespan=lifespan, default_response_class=OrjsonResponse,
                             description="Player analytics: beacons in, Brightcove-style analytics out.")
        app.add_exception_handler(RequestValidationError, bad_request)
        app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/readyz", self._readyz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/metrics", self._metrics, methods=["GET"], include_in_schema=False)
        if self.producer:
            self.tracker = Tracker(self.settings, self.producer, self.tracker_metrics, self.accounts, self.quotas)
            app.router.routes.extend(self.tracker.routes())
        if "api" in self.roles and self.db is not None:
            guard = Guard(self.keys, self.settings.rate_limit_key, self.settings.trusted_networks)
            context = QueryContext(self.db, QueryMetrics(self.registry), guard)
            for router in (query_router, retention_router, export_router, usage_router):
                app.include_router(router(context))
            app.include_router(live_router(context, self.live))
            app.include_router(livepeer_router(context, self.live))
            app.include_router(dashboard_router())
            self._mount_mcp(app)
        install_contract(app)
        return app

    def asgi_app(self) -> ASGIApp:
        """``http_app()``, with beacons (POST and OPTIONS /v1/track) handed straight to the tracker's route.

        FastAPI's layers (error, telemetry, body-limit, exception and exit-stack middleware, then routing)
        took a fifth of a busy tracker's event loop; the tracker answers every outcome itself, and an
        exception it does not handle still becomes uvicorn's 500 (and the access log's line). Every other
        method and path, /v1/track's documentation included, stays with the app."""
        app = self.http_app()
        if self.producer is None:
            return app
        beacons = self.tracker

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/v1/track" and scope["method"] in ("POST", "OPTIONS"):
                await beacons(scope, receive, send)
            else:
                await app(scope, receive, send)
        return dispatch

    def _mount_mcp(self, app: FastAPI) -> None:
        """/mcp: MCP over streamable HTTP; each tool asks this app's REST API with the request's key. Stateless
        JSON answers; no DNS-rebinding check, since every request must carry a key (no cookie or ambient
        authority a rebound page could borrow)."""
        server = build_server(in_process_client(app))
        server.streamable_http_app(stateless_http=True, json_response=True,
                                   transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        endpoint = KeyRequired(StreamableHTTPASGIApp(server.session_manager),
                               lambda key: bool(key) and self.keys.get(hash_key(key)) is not None)
        app.router.routes.append(Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"]))
        self._mcp = server

    async def _readyz(self) -> Response:
        """Ready when every part can do its job. A tracker can while Kafka is down, into its spool:
        then "kafka" is false but "accepting" true, and the spool's depth says how much waits."""
        results = {name: await check() for name, check in self.checks.items()}
        essential = {name: ok for name, ok in results.items() if not (name == "kafka" and "accepting" in results)}
        ready = all(essential.values())
        body: dict[str, object] = {"ready": ready, "checks": results}
        if self.producer:
            body["spool"] = {"depth": self.producer.spool_depth(), "bytes": self.producer.spool_bytes()}
        return OrjsonResponse(body, status_code=200 if ready else 503)

    async def _metrics(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _now(value: Callable[[], bool]) -> Check:
    async def check() -> bool:
        return value()
    return check


async def _healthz() -> dict[str, str]:
    return {"status": "ok"}
