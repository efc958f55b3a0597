"""The query API: /v1/timeseries and /v1/events in the shapes of Brightcove's Live Analytics API."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Histogram
from starlette.responses import Response

from aggregations.accounts import ApiKey
from aggregations.clickhouse import ClickHouse, ClickHouseError
from ingest.http import OrjsonResponse
from queries import answers
from queries.auth import AuthError, Caller, CallerOf, Guard, check_scope, cors, preflight
from queries.catalog import GROUPABLE, METRICS
from queries.params import QueryError, parse_buckets, parse_page, parse_question

log = logging.getLogger(__name__)
# No pattern here: FastAPI would check it before the key, and the key is checked first (a malformed id
# matches no key's account: 401 without a key, 403 with one).
AccountId = Annotated[str, Path(description="the account's id")]
# A list comes comma-separated (the document's form) or as the parameter repeated (what clients generated from
# the document send for an array, e.g. openapi-python-client's): both are the same list.
Dimensions = Annotated[list[str] | None, Query(description=f"comma-separated, of: {', '.join(GROUPABLE)}")]
Metrics = Annotated[list[str] | None, Query(alias="metrics", description=f"comma-separated, of: {', '.join(METRICS)}")]
Where = Annotated[str | None, Query(description="d1==v1,v2;d2==v3 (';' is AND, ',' is IN)")]
From = Annotated[str | None, Query(alias="from", description="epoch ms or ISO 8601; default now - 32 days")]
To = Annotated[str | None, Query(description="epoch ms or ISO 8601; default now; its minute is included")]


class QueryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram("vidpulse_api_query_latency_seconds", "Query latency by endpoint and status.",
                                 ["endpoint", "status"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


@dataclass(frozen=True)
class QueryContext:
    """What every query route shares: the database, the latency histogram and the key check."""

    db: ClickHouse
    metrics: QueryMetrics
    guard: Guard


def _joined(values: list[str] | None) -> str | None:
    return ",".join(values) if values is not None else None


def query_router(context: QueryContext) -> APIRouter:
    router = APIRouter(tags=["analytics"], default_response_class=OrjsonResponse)
    db = context.db

    @router.get("/v1/timeseries/accounts/{account_id}", summary="Metric values per time bucket")
    async def timeseries(account_id: AccountId, caller: CallerOf, dimensions: Dimensions = None,
                         metrics_: Metrics = None, where: Where = None,
                         start: From = None, to: To = None, bucket_duration: str | None = None,
                         bucket_limit: str | None = None,
                         time_step: Annotated[str | None, Query(description="hour|day|week|month|year|all")] = None,
                         tz: Annotated[str | None, Query(description="IANA zone for time_step; default UTC")] = None,
                         ) -> Any:
        async def run(key: ApiKey) -> Any:
            question = parse_question(account_id, _joined(dimensions), _joined(metrics_), where, start, to)
            check_scope(key, question)
            buckets = parse_buckets(question, bucket_duration, bucket_limit, time_step, tz)
            return await answers.timeseries(db, question, buckets)
        return await answer_with(context, "timeseries", account_id, caller, run)

    @router.get("/v1/events/accounts/{account_id}", summary="Metric totals over the range")
    async def events(account_id: AccountId, caller: CallerOf, dimensions: Dimensions = None,
                     metrics_: Metrics = None, where: Where = None,
                     start: From = None, to: To = None,
                     sort: Annotated[str | None, Query(description="a requested metric, '-' for descending")] = None,
                     limit: Annotated[str | None, Query(description="1..10000, default 100")] = None,
                     offset: Annotated[str | None, Query(description="default 0")] = None) -> Any:
        async def run(key: ApiKey) -> Any:
            question = parse_question(account_id, _joined(dimensions), _joined(metrics_), where, start, to)
            check_scope(key, question)
            page = parse_page(sort, limit, offset, question.metrics)
            return await answers.totals(db, question, *page)
        return await answer_with(context, "events", account_id, caller, run)

    @router.get("/v1/whoami", summary="The presented key's account and scope")
    async def whoami(caller: CallerOf) -> Any:
        """What a client (the dashboard) needs to know before asking: whose key this is and what it may read."""
        async def run(key: ApiKey) -> Any:
            scope = {"videos": list(key.videos), "metrics": list(key.metrics), "origins": list(key.origins)}
            return {"account": key.account, "kind": key.kind, "key_id": key.key_id,
                    **(scope if key.public else {})}
        return await answer_with(context, "whoami", context.guard.account_of(caller), caller, run)

    @router.options("/v1/whoami", include_in_schema=False)
    @router.options("/v1/timeseries/accounts/{account_id}", include_in_schema=False)
    @router.options("/v1/events/accounts/{account_id}", include_in_schema=False)
    async def cors_preflight(caller: CallerOf) -> Response:
        return preflight(caller.origin)

    return router


async def answer_with(context: QueryContext, endpoint: str, account: str, caller: Caller,
                      run: Callable[[ApiKey], Awaitable[Any]]) -> Response:
    """The one mapping from failures to responses: no key a 401, a key without access a 403, a bad
    question a 400, a database outage a 503. The key is checked before anything else runs. ``run``
    returns the answer as data (sent as JSON) or as a ready Response (a file)."""
    started = time.perf_counter()
    key = None
    try:
        key = context.guard.admit(caller, account, endpoint)
        answer = await run(key)
        response = answer if isinstance(answer, Response) else OrjsonResponse(answer)
    except AuthError as exc:
        key = None
        response = OrjsonResponse({"error": exc.error}, status_code=exc.status, headers=exc.headers)
    except QueryError as exc:
        content: dict[str, Any] = {"error": exc.error}
        if exc.valid is not None:
            content["valid"] = exc.valid
        response = OrjsonResponse(content, status_code=400)
    except answers.AnswerTooLarge as exc:
        response = OrjsonResponse({"error": exc.error}, status_code=422)
    except ClickHouseError as exc:
        response = _database_error(exc)
    context.metrics.latency.labels(endpoint, str(response.status_code)).observe(time.perf_counter() - started)
    return cors(response, caller.origin, key)


_LIMITS = {158: "rows returned", 159: "time", 160: "rows per second", 241: "memory", 307: "bytes read",
           396: "rows read"}


def _database_error(exc: ClickHouseError) -> OrjsonResponse:
    """Says what the caller can do, never how the inside is wired: the database's own message (its
    address, the client library's exception) goes to the log only."""
    if exc.over_limit:
        limit = _LIMITS.get(exc.code or 0, "cost")
        return OrjsonResponse({"error": f"the query exceeds this deployment's cost limits ({limit}): narrow the range, "
                                        "filter with where, or group by fewer dimensions"}, status_code=422)
    log.warning("a query failed in the analytics database: %s", exc)
    return OrjsonResponse({"error": "the analytics database did not answer; retry in a few seconds"}, status_code=503,
                          headers={"Retry-After": "5"})


async def bad_request(_: Request, exc: Exception) -> Response:
    """FastAPI's own validation errors (a video id over 128 characters, say) are 400s with the reason, like ours."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"field": ".".join(map(str, e.get("loc", ()))), "error": e.get("msg", "")} for e in errors]
    first = detail[0] if detail else {"field": "request", "error": str(exc)}
    return OrjsonResponse({"error": f"{first['field']}: {first['error']}", "detail": detail}, status_code=400)
