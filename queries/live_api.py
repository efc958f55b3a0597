"""``GET /v1/realtime/accounts/{id}`` and its push channel ``/v1/live/accounts/{id}`` (WebSocket and SSE).

Both sit behind the query API's key check (``Guard``), scope rules and error shapes.
Browsers cannot set headers on a WebSocket or an EventSource, so the key may also
come as the ``key`` query parameter, as a ``Sec-WebSocket-Protocol`` value offered
beside ``vidpulse``, or in the first WebSocket message (``{"key": "..."}``); the
access log never shows a query string, and uvicorn's WebSocket lines are scrubbed
of it (``vidpulse.logs``). The channel re-checks every stream's key each tick and ends
it when the key is revoked (within the key directory's refresh interval).

WebSocket refusals are sent as one ``{"error", "status"}`` message and a close
code of 4000 + the HTTP status the REST API would answer (4400, 4401, 4403, 4429,
4501, 4503); 4408 closes a client that did not read its last messages (the
subscriber's queue, 8 by default), 1012 ends streams when the server shuts down,
1011 when the live figures failed in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response, StreamingResponse

from aggregations.accounts import ApiKey
from ingest.http import OrjsonResponse
from queries.api import AccountId, QueryContext, Where, answer_with
from queries.auth import AuthError, Caller, CallerOf, check_scope, preflight
from queries.live import FIELDS, LiveHub, LiveQuestion, Subscriber, parse_live
from queries.params import QueryError

PROTOCOL = "vidpulse"
KEY_WAIT_S = 5.0       # how long a WebSocket without a key has to send it as its first message
CLOSE_TIMEOUT_S = 10.0  # a closing handshake the client does not answer is abandoned
SSE_RETRY_MS = 2000
Fields = Annotated[str | None, Query(description=f"comma-separated, of: {', '.join(FIELDS)}; default all")]
KeyParameter = Annotated[str | None, Query(alias="key", description="the API key, for clients that cannot send "
                                                                    "headers (EventSource); never logged")]


def live_router(context: QueryContext, hub: LiveHub) -> APIRouter:
    router = APIRouter(tags=["live"], default_response_class=OrjsonResponse)

    @router.get("/v1/realtime/accounts/{account_id}", summary="What is happening now")
    async def realtime(account_id: AccountId, caller: CallerOf, where: Where = None, fields: Fields = None) -> Any:
        async def run(key: ApiKey) -> Any:
            return await hub.answer(_admitted_question(key, account_id, where, fields))
        return await answer_with(context, "realtime", account_id, caller, run)

    @router.get("/v1/live/accounts/{account_id}", summary="The realtime answer pushed as server-sent events "
                "(Accept: text/event-stream), or over a WebSocket on the same path")
    async def live_events(request: Request, account_id: AccountId, caller: CallerOf, where: Where = None,
                          fields: Fields = None, key: KeyParameter = None) -> Any:
        if "text/event-stream" not in request.headers.get("accept", ""):
            return OrjsonResponse({"error": "ask with `Accept: text/event-stream` for server-sent events, or open a "
                                            "WebSocket on this path"}, status_code=406)

        async def run(api_key: ApiKey) -> Any:
            question = _admitted_question(api_key, account_id, where, fields)
            try:
                hub.check_ready()
            except AuthError as exc:
                if exc.status != 503:
                    raise
                # a browser's EventSource gives up for good on an HTTP error: say "later" in the stream instead
                return _event_stream(_retry_later(exc.error))
            return _event_stream(_server_sent(hub, question, lambda: context.guard.still_open(api_key)))
        return await answer_with(context, "live", account_id, _with_key(caller, key), run)

    @router.websocket("/v1/live/accounts/{account_id}")
    async def live_socket(websocket: WebSocket, account_id: str) -> None:
        offered = list(websocket.scope.get("subprotocols") or [])
        await websocket.accept(subprotocol=PROTOCOL if PROTOCOL in offered else None)
        key = await _socket_key(websocket, offered)
        headers = websocket.headers
        caller = Caller(_bearer(key), headers.get("origin"), headers.get("referer"),
                        websocket.client.host if websocket.client else "", headers.get("x-forwarded-for"))
        params = websocket.query_params
        try:
            api_key = context.guard.admit(caller, account_id, "live")
            question = _admitted_question(api_key, account_id, params.get("where"), params.get("fields"))
            async with hub.subscribe(question, "websocket", lambda: context.guard.still_open(api_key)) as subscriber:
                await _push(websocket, subscriber, hub)
        except AuthError as exc:
            await _refuse(websocket, exc.status, exc.error)
        except QueryError as exc:
            await _refuse(websocket, 400, exc.error)

    @router.options("/v1/realtime/accounts/{account_id}", include_in_schema=False)
    @router.options("/v1/live/accounts/{account_id}", include_in_schema=False)
    async def cors_preflight(caller: CallerOf) -> Response:
        return preflight(caller.origin)

    return router


def _admitted_question(key: ApiKey, account: str, where: str | None, fields: str | None) -> LiveQuestion:
    question = parse_live(account, where, fields)
    check_scope(key, question.as_question())
    return question


def _bearer(key: str | None) -> HTTPAuthorizationCredentials | None:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=key) if key else None


def _with_key(caller: Caller, key: str | None) -> Caller:
    """An EventSource cannot send Authorization: the ``key`` parameter stands in for it."""
    if caller.credentials is not None or not key:
        return caller
    return Caller(_bearer(key), caller.origin, caller.referer, caller.peer, caller.forwarded_for)


async def _socket_key(websocket: WebSocket, offered: list[str]) -> str:
    """From the query, a subprotocol value, the Authorization header, or else the first message."""
    authorization = websocket.headers.get("authorization", "")
    found = (websocket.query_params.get("key") or next((value for value in offered if value.startswith("vp_")), None)
             or (authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""))
    if found:
        return found
    with contextlib.suppress(TimeoutError, WebSocketDisconnect, ValueError, TypeError, AttributeError,
                             orjson.JSONDecodeError):
        first = await asyncio.wait_for(websocket.receive_text(), KEY_WAIT_S)
        return str(orjson.loads(first).get("key") or "")
    return ""


async def _push(websocket: WebSocket, subscriber: Subscriber, hub: LiveHub) -> None:
    """Sends the channel's messages until the client leaves, its key is revoked, it stops reading or the
    server shuts down; then closes with the code that says which."""
    sender = asyncio.create_task(_send_all(websocket, subscriber))
    reader = asyncio.create_task(_until_gone(websocket))
    for task in (sender, reader):
        task.add_done_callback(lambda _: subscriber.end("gone"))
    try:
        await subscriber.finished.wait()
    finally:
        sender.cancel()
        reader.cancel()
    if subscriber.ended == "closing":
        await _close(websocket, 1012, "the server is restarting: reconnect")
    elif subscriber.ended == "revoked":
        hub.metrics.dropped.labels("revoked").inc()
        await _refuse(websocket, 401, "this key was revoked")
    elif subscriber.ended == "slow":
        hub.metrics.dropped.labels("slow").inc()
        await _close(websocket, 4408, "the client did not read its messages")
    elif subscriber.ended == "failed":
        await _close(websocket, 1011, "the live figures failed here: reconnect")


async def _send_all(websocket: WebSocket, subscriber: Subscriber) -> None:
    """A client that does not read blocks its send; its queue then fills and ends it as slow."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # the client left while we sent
        while (message := await subscriber.next()) is not None:
            await websocket.send_text(message.text)


async def _until_gone(websocket: WebSocket) -> None:
    """Reads (and ignores) what the client sends; returns when it disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            if (await websocket.receive())["type"] == "websocket.disconnect":
                return


async def _refuse(websocket: WebSocket, status: int, error: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_text(orjson.dumps({"error": error, "status": status}).decode())
    await _close(websocket, 4000 + status, error[:120])


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
        await asyncio.wait_for(websocket.close(code, reason), CLOSE_TIMEOUT_S)


def _event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _retry_later(error: str) -> AsyncIterator[bytes]:
    yield f"retry: {SSE_RETRY_MS}\n\n".encode()
    yield b"event: error\ndata: " + orjson.dumps({"error": error, "status": 503}) + b"\n\n"


async def _server_sent(hub: LiveHub, question: LiveQuestion, still_open: Callable[[], bool]) -> AsyncIterator[bytes]:
    """``event: snapshot`` with the channel's sequence as ``id``; the latest snapshot comes first, so a client
    reconnecting with Last-Event-ID has it at once. Ends with ``event: error`` when the key is revoked."""
    async with hub.subscribe(question, "sse", still_open) as subscriber:
        yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        while (message := await subscriber.next()) is not None:
            yield b"id: %d\nevent: snapshot\ndata: %s\n\n" % (message.sequence, message.body)
        if subscriber.ended == "revoked":
            hub.metrics.dropped.labels("revoked").inc()
            yield b"event: error\ndata: " + orjson.dumps({"error": "this key was revoked", "status": 401}) + b"\n\n"
        elif subscriber.ended == "slow":
            hub.metrics.dropped.labels("slow").inc()
        elif subscriber.ended == "failed":
            yield b"event: error\ndata: " + orjson.dumps({"error": "the live figures failed here: reconnect",
                                                          "status": 500}) + b"\n\n"
