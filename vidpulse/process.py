"""One process's parts, built from one settings object, started and stopped in order, behind one HTTP app.

Every HTTP process serves /healthz (alive), /readyz (its parts can do their job:
database and broker answer, or, for a tracker, it can accept into Kafka or its
spool) and /metrics (Prometheus), beside whatever parts it runs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aggregations.clickhouse import connect
from aggregations.metrics import WorkerMetrics
from aggregations.schema import migrate
from aggregations.worker import Worker
from ingest.http import OrjsonResponse
from ingest.metrics import TrackerMetrics
from ingest.producer import EventProducer
from ingest.settings import Settings
from ingest.spool import Spool
from ingest.topics import broker_reachable, ensure_topics
from ingest.tracker import Tracker
from queries.api import QueryMetrics, query_router
from queries.export import export_router
from queries.retention import retention_router

Check = Callable[[], Awaitable[bool]]


class Process:
    """The parts named in ``roles`` (of "tracker", "worker", "api"); build inside a running event loop."""

    def __init__(self, settings: Settings, roles: frozenset[str], bootstrap: str) -> None:
        self.settings, self.roles, self.bootstrap = settings, roles, bootstrap
        self.registry = CollectorRegistry()
        self.checks: dict[str, Check] = {}
        self.db = self.worker_db = self.producer = self.worker = None
        if roles & {"worker", "api"}:
            migrate(settings.clickhouse_url, settings.clickhouse_database)
            self.db = connect(settings.clickhouse_url, settings.clickhouse_database, settings.query_limits)
            self.checks["clickhouse"] = self.db.ping
        if "tracker" in roles:
            self.tracker_metrics = TrackerMetrics(self.registry)
            self.producer = EventProducer(bootstrap, (settings.events_topic, settings.dead_letter_topic),
                                          settings.topic_partitions, Spool(settings.spool_folder, settings.spool_max_bytes),
                                          settings.spool_after_s, self.tracker_metrics)
            self.checks["accepting"] = _now(self.producer.accepting)
            self.checks["kafka"] = _now(lambda: self.producer is not None and self.producer.connected)
        elif "worker" in roles:
            self.checks["kafka"] = functools.partial(broker_reachable, bootstrap)
        if "worker" in roles:
            # its own client: queries never wait behind the worker's inserts (chdb shares the engine)
            self.worker_db = connect(settings.clickhouse_url, settings.clickhouse_database)
            self.worker = Worker(settings, bootstrap, self.worker_db, WorkerMetrics(self.registry))

    async def start(self) -> None:
        if "worker" in self.roles:
            await ensure_topics(self.bootstrap, [self.settings.events_topic, self.settings.dead_letter_topic],
                                self.settings.topic_partitions)
        if self.producer:
            await self.producer.start()
        if self.worker:
            await self.worker.start()

    async def stop(self) -> None:
        """Worker first (it flushes to ClickHouse), then the producer, then the database."""
        if self.worker:
            await self.worker.stop()
        if self.producer:
            await self.producer.stop()
        for db in (self.worker_db, self.db):
            if db:
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
        app.add_exception_handler(RequestValidationError, _bad_request)
        app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/readyz", self._readyz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/metrics", self._metrics, methods=["GET"], include_in_schema=False)
        if self.producer:
            app.router.routes.extend(Tracker(self.settings, self.producer, self.tracker_metrics).routes())
        if "api" in self.roles and self.db is not None:
            query_metrics = QueryMetrics(self.registry)
            app.include_router(query_router(self.db, query_metrics))
            app.include_router(retention_router(self.db, query_metrics))
            app.include_router(export_router(self.db, query_metrics))
        return app

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


async def _bad_request(_: Request, exc: Exception) -> Response:
    """FastAPI's own validation errors (a malformed account id, say) are 400s with the reason, like ours."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"field": ".".join(map(str, e.get("loc", ()))), "error": e.get("msg", "")} for e in errors]
    first = detail[0] if detail else {"field": "request", "error": str(exc)}
    return OrjsonResponse({"error": f"{first['field']}: {first['error']}", "detail": detail}, status_code=400)
