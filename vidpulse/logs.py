"""Structured logs: one JSON object per line on stderr, with the request id of the request being served.

``configure()`` sends every logger (ours, uvicorn's, Faust's, mode's, aiokafka's)
through one JSON formatter. ``RequestIdMiddleware`` gives each HTTP request an id
(the client's ``X-Request-ID`` when it is a sane token, else a fresh one), makes it
visible to every log line emitted while serving the request, echoes it in the
response and writes one access line per request.

The access line is ours, not uvicorn's: uvicorn's own access log carries the
client's address, which the beacon protocol forbids us to keep, so ``configure()``
silences it. Run uvicorn with ``log_config=None`` (else its dictConfig installs its
own plain-text handlers again) and ``access_log=False``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_ID_HEADER = "X-Request-ID"
# Loggers that libraries may have given handlers of their own: they all go through ours.
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "faust", "mode", "aiokafka")
UVICORN_ACCESS = "uvicorn.access"
_HEADER = REQUEST_ID_HEADER.lower().encode("ascii")

_request_id: ContextVar[str | None] = ContextVar("vidpulse_request_id", default=None)
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
# uvicorn adds an ANSI-coloured copy of some messages for its own formatter
_DROPPED_EXTRAS = frozenset({"color_message"})
_CORE_FIELDS = ("ts", "level", "logger", "message")

access_log = logging.getLogger("vidpulse.access")


def current_request_id() -> str | None:
    """The id of the HTTP request being served in this context, if any."""
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    """ts (ISO 8601, UTC, ms), level, logger, message, request_id, exception, then any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        request_id = _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in _DROPPED_EXTRAS and key not in _CORE_FIELDS:
                entry.setdefault(key, value)  # an extra named request_id or exception does not replace ours
        return _dumps(entry)


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for the root logger and every library logger; safe to call again.

    uvicorn's access logger is silenced rather than formatted: its records carry the
    client's address as an argument. uvicorn checks ``hasHandlers()`` before writing
    one, so with no handler and no propagation it does not even build them, whatever
    its ``access_log`` setting. ``RequestIdMiddleware`` writes the access lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = name != UVICORN_ACCESS
        logger.setLevel(logging.NOTSET)
    logging.getLogger(UVICORN_ACCESS).disabled = True
    # httpx logs every request URL at INFO: the MCP tools' calls of the REST API are not worth a line each
    logging.getLogger("httpx").setLevel(logging.WARNING)
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, WebSocketLineFilter) for existing in error_log.filters):
        error_log.addFilter(WebSocketLineFilter())
    logging.captureWarnings(True)


class WebSocketLineFilter(logging.Filter):
    """uvicorn logs each WebSocket handshake as ``<client address> - "WebSocket <path?query>" ...``: the address
    is not ours to keep, and the query may carry an API key (``/v1/live?key=``). Both are cut from the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and '"WebSocket %s"' in record.msg and isinstance(record.args, tuple) \
                and len(record.args) >= 2:
            record.args = ("-", str(record.args[1]).split("?", 1)[0], *record.args[2:])
        return True


class RequestIdMiddleware:
    """Pure ASGI: request id in, request id out, one access line per HTTP request.

    The id is taken from ``X-Request-ID`` when it is 1 to 64 characters of
    ``[A-Za-z0-9._-]`` (anything else could forge log lines or headers), else a
    new random 32-digit hex id (a uuid4's length, at a fifth of ``uuid4``'s cost).
    The access line has method, path (no query string: it may carry ids we were
    not meant to keep), status, duration and the id; never the client's address
    or User-Agent.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or os.urandom(16).hex()
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before starting a response

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != _HEADER]
                headers.append((_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Left set on purpose: the server logs the traceback after we return, in this request's
            # own task (ASGI servers run each request in one), and that line should carry the id too.
            _log_access(scope, status, started)
            raise
        _log_access(scope, status, started)
        _request_id.reset(token)


def _incoming_id(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == _HEADER:
            candidate = value.decode("latin-1")
            return candidate if _SANE_ID.fullmatch(candidate) else None
    return None


def _log_access(scope: dict[str, Any], status: int, started: float) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    method, path = scope.get("method", ""), scope.get("path", "")
    access_log.info("%s %s %d %.1f ms", method, path, status, duration_ms,
                    extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms})


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a wrong %-format must not lose the line
        return f"{record.msg!s} {record.args!r}"


def _dumps(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson refuses integers beyond 64 bits and some odd keys; the stdlib does not
        return json.dumps(entry, default=str, ensure_ascii=False)
