"""The one OpenAPI document of a vidpulse process, served at ``/openapi.json``: every endpoint it serves.

FastAPI describes the routes it knows (paths, parameter names, summaries); this module completes that
with what the handlers check themselves: each parameter's schema (``queries.parameters``), the Bearer
key on every query operation, every status an operation answers with its body (``queries.schemas``),
and the endpoints that are plain Starlette routes (``POST /v1/track``, ``/mcp``). An operation this
module does not know makes the document fail to build, so a new route cannot go undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from ingest.models import Envelope
from queries import schemas
from queries.answers import MAX_ANSWER_POINTS
from queries.export import XLSX
from queries.parameters import EMPTY_IS_DEFAULT, OVERRIDES, PATH_PARAMETERS, query_parameters

REF = "#/components/schemas/{model}"
BEARER = "bearer"
KEY_PARAMETER = "keyParameter"
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before the same request", "required": True,
                                "schema": {"type": "integer", "minimum": 0}}}
_STATUSES = {
    200: "the answer", 202: "accepted: the valid events are durable", 204: "no content",
    400: "a bad parameter or body: `error` names it; `valid` lists the values that would be right",
    401: "no key, or a key that is unknown or revoked",
    403: "a key that does not open this account, or a public key outside its scope (videos, metrics, origins, "
         "endpoints)",
    404: "no such resource (a path this API does not serve)",
    406: "this endpoint answers only the media type named in the error",
    413: "the body is larger than allowed, or holds more events than a batch may",
    415: "Content-Type is neither application/json nor text/plain",
    422: f"the query exceeds this deployment's cost limits, or its answer the size limit ({MAX_ANSWER_POINTS:,} points): "
         "narrow the range, filter, or group by less",
    429: "rate limited (or, for beacons, the account's monthly quota is used up): retry after Retry-After",
    501: "live figures are not available in this deployment (no broker configured)",
    503: "not available now (the analytics database, the event log or the keys): retry after Retry-After",
}
QUERY = (200, 400, 401, 403, 422, 429, 503)


@dataclass(frozen=True)
class Operation:
    """What an operation answers beyond what FastAPI knows: its statuses and its 2xx body."""

    answer: Any  # a type of queries.schemas, or a {media type: schema} mapping for a file
    statuses: tuple[int, ...] = QUERY
    problem: Any = schemas.Problem
    name: str = ""  # the answer's schema name, when the type has none of its own (a dict or a list)
    operation_id: str = ""  # what a generated client names the call (FastAPI's default spells the path out)
    account_links: tuple[str, ...] = ()  # operations whose account_id is this answer's `account` (OpenAPI links)


VIEWERSHIP = list[schemas.ViewershipRow]
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("get", "/v1/timeseries/accounts/{account_id}"): Operation(schemas.Timeseries, name="Timeseries",
                                                                 operation_id="getTimeseries"),
    ("get", "/v1/events/accounts/{account_id}"): Operation(schemas.Events, operation_id="getEvents"),
    ("get", "/v1/whoami"): Operation(schemas.Whoami, (200, 401, 403, 429, 503), operation_id="whoami",
                                     account_links=("getEvents", "getTimeseries", "getUsage", "getRealtime")),
    ("get", "/v1/retention/accounts/{account_id}/videos/{video_id}"): Operation(
        schemas.Retention, (*QUERY, 404), operation_id="getRetention"),
    ("get", "/v1/events/accounts/{account_id}/videos/{video_id}/export"): Operation(
        {XLSX: {"type": "string", "format": "binary"}, "text/csv": {"type": "string"}}, (*QUERY, 404),
        operation_id="exportVideoEvents"),
    ("get", "/v1/usage/accounts/{account_id}"): Operation(schemas.Usage, operation_id="getUsage"),
    ("get", "/v1/realtime/accounts/{account_id}"): Operation(schemas.Realtime, (*QUERY, 501), operation_id="getRealtime"),
    ("get", "/v1/live/accounts/{account_id}"): Operation(
        {"text/event-stream": {"type": "string", "description": "`event: snapshot` messages holding the realtime "
                                                                "answer; `event: error` before the stream ends"}},
        (*QUERY, 406, 501), operation_id="streamLive"),
    ("get", "/data/views/query"): Operation(VIEWERSHIP, problem=schemas.LivepeerProblem, name="Viewership",
                                            operation_id="getViewershipMetrics"),
    ("get", "/data/views/query/creator"): Operation(VIEWERSHIP, problem=schemas.LivepeerProblem, name="Viewership",
                                                    operation_id="getCreatorViewershipMetrics"),
    ("get", "/data/views/query/total/{playbackId}"): Operation(schemas.TotalViews, (*QUERY, 404),
                                                               problem=schemas.LivepeerProblem,
                                                               operation_id="getPublicViewershipMetrics"),
    ("get", "/data/views/now"): Operation(list[schemas.ViewersNow], (*QUERY, 501), problem=schemas.LivepeerProblem,
                                           name="ViewersNowList", operation_id="getRealtimeViewershipNow"),
    ("get", "/data/usage/query"): Operation(schemas.LivepeerUsage, problem=schemas.LivepeerProblem,
                                            operation_id="getUsageMetrics"),
}


class Components:
    """The document's named schemas, filled from the types as operations refer to them."""

    def __init__(self, schemas_: dict[str, Any]) -> None:
        self.schemas = schemas_

    def ref(self, name: str, kind: Any) -> dict[str, Any]:
        found = TypeAdapter(kind).json_schema(ref_template=REF)
        self.schemas.update(found.pop("$defs", {}))
        self.schemas[name] = found
        return {"$ref": REF.format(model=name)}


def install(app: FastAPI) -> None:
    """Makes ``app.openapi()`` (what ``/openapi.json`` serves) the complete document, built once."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not built:
            built.update(document(app))
        return built

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    doc["openapi"] = "3.1.0"
    components = Components(doc.setdefault("components", {}).setdefault("schemas", {}))
    for name in ("ValidationError", "HTTPValidationError"):
        components.schemas.pop(name, None)
    doc["components"]["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "a secret key (backends) or a public key (pages)"},
        KEY_PARAMETER: {"type": "apiKey", "in": "query", "name": "key",
                        "description": "the key as a query parameter, for EventSource (which cannot send headers)"}}
    served = {getattr(route, "path", "") for route in app.routes}
    for path, methods in doc.get("paths", {}).items():
        for method, operation in methods.items():
            known = OPERATIONS.get((method, path))
            if known is None:
                raise KeyError(f"{method.upper()} {path} is served but queries/contract.py does not describe it")
            _complete(operation, path, known, components)
    if "/v1/track" in served:
        doc["paths"]["/v1/track"] = {"post": track_operation(components)}
    if "/mcp" in served:
        doc["paths"]["/mcp"] = {"post": mcp_operation(components)}
    _drop_dangling_links(doc)
    return doc


def _drop_dangling_links(doc: dict[str, Any]) -> None:
    """A process serves only its roles' routes: a link may name only an operation this document holds."""
    ids = {operation.get("operationId") for methods in doc["paths"].values() for operation in methods.values()}
    for methods in doc["paths"].values():
        for operation in methods.values():
            for response in operation.get("responses", {}).values():
                if "links" in response:
                    response["links"] = {name: link for name, link in response["links"].items()
                                         if link["operationId"] in ids}
                    if not response["links"]:
                        del response["links"]


def _complete(operation: dict[str, Any], path: str, known: Operation, components: Components) -> None:
    operation["parameters"] = [_parameter(path, parameter) for parameter in operation.get("parameters", [])
                               if parameter.get("in") != "header" and OVERRIDES.get(path, {}).get(parameter["name"], 1)]
    keys = [{BEARER: []}]
    if any(parameter["name"] == "key" for parameter in operation["parameters"]):
        keys.append({KEY_PARAMETER: []})
        operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "key"]
    operation["security"] = keys
    operation["responses"] = _responses(known, components)
    if known.operation_id:
        operation["operationId"] = known.operation_id


def _parameter(path: str, parameter: dict[str, Any]) -> dict[str, Any]:
    name, where = parameter["name"], parameter["in"]
    if where == "path":
        override = OVERRIDES.get(path, {}).get(name)
        schema = override[0] if override else PATH_PARAMETERS[name]
        return {"name": name, "in": "path", "required": True, "schema": schema}
    schema, extra = OVERRIDES.get(path, {}).get(name) or query_parameters()[name]
    if name in EMPTY_IS_DEFAULT:
        schema = {"anyOf": [*schema.get("anyOf", [schema]), {"type": "string", "maxLength": 0}],
                  **({"description": schema["description"]} if "description" in schema else {})}
    return {"name": name, "in": where, "required": False, **extra, "schema": schema}


def _responses(known: Operation, components: Components) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    problem = components.ref(known.problem.__name__, known.problem)
    for status in known.statuses:
        if 200 <= status < 300:
            responses[str(status)] = {"description": _STATUSES[status],
                                      "content": _answer(known.answer, known.name, components)}
            if known.account_links:
                responses[str(status)]["links"] = {
                    target: {"operationId": target, "parameters": {"account_id": "$response.body#/account"},
                             "description": "the key's own account"} for target in known.account_links}
            continue
        response: dict[str, Any] = {"description": _STATUSES[status], "content": {"application/json": {"schema": problem}}}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        responses[str(status)] = response
    return responses


def _answer(answer: Any, name: str, components: Components) -> dict[str, Any]:
    if isinstance(answer, dict):
        return {media: {"schema": schema} for media, schema in answer.items()}
    return {"application/json": {"schema": components.ref(name or answer.__name__, answer)}}


def track_operation(components: Components) -> dict[str, Any]:
    """``POST /v1/track``: no key (the account is in the body); the same JSON as application/json or text/plain."""
    envelope = components.ref("Envelope", Envelope)
    components.ref("BeaconEvent", _beacon_event())
    problem = components.ref("Problem", schemas.Problem)
    retry = {"headers": _RETRY_AFTER}
    refusals = {status: {"description": _STATUSES[status], "content": {"application/json": {"schema": problem}},
                         **(retry if status in (429, 503) else {})} for status in (400, 403, 413, 415, 429, 503)}
    refusals[403]["description"] = "the account does not exist here, or does not allow the page's origin"
    return {
        "tags": ["beacons"], "summary": "Send a batch of player events (the beacon protocol)", "operationId": "track",
        "description": "Each event is validated on its own (see BeaconEvent): an invalid one is rejected in the 202 "
                       "answer with its reason while the valid ones are accepted. text/plain carries the same JSON "
                       "(what navigator.sendBeacon sends without a CORS preflight).",
        "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": envelope},
                                                      "text/plain": {"schema": envelope}}},
        "responses": {"202": {"description": _STATUSES[202],
                              "content": {"application/json": {"schema": components.ref("TrackAnswer",
                                                                                        schemas.TrackAnswer)}}},
                      **{str(status): response for status, response in refusals.items()}},
    }


def _beacon_event() -> Any:
    from ingest.models import Event
    return Event


def mcp_operation(components: Components) -> dict[str, Any]:
    """``POST /mcp``: the Model Context Protocol over streamable HTTP (JSON-RPC 2.0, stateless, JSON answers)."""
    problem = components.ref("Problem", schemas.Problem)
    message = {"type": "object", "description": "a JSON-RPC 2.0 request or notification of the Model Context Protocol"}
    answer = {"type": "object", "description": "a JSON-RPC 2.0 response"}
    return {
        "tags": ["mcp"], "summary": "MCP tools over streamable HTTP (JSON-RPC 2.0)", "operationId": "mcp",
        "description": "Send `Accept: application/json, text/event-stream`. The tools ask this API with the request's "
                       "key, so a key's scope limits them as it limits the REST endpoints.",
        "security": [{BEARER: []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": message}}},
        "responses": {"200": {"description": "the JSON-RPC response", "content": {"application/json": {"schema": answer}}},
                      "202": {"description": "a notification or response was received"},
                      "400": {"description": "not a JSON-RPC message of the protocol",
                              "content": {"application/json": {"schema": answer}}},
                      "401": {"description": _STATUSES[401], "content": {"application/json": {"schema": problem}}},
                      "406": {"description": "Accept must list application/json and text/event-stream",
                              "content": {"application/json": {"schema": answer}}},
                      "415": {"description": "Content-Type must be application/json",
                              "content": {"application/json": {"schema": answer}}}},
    }
