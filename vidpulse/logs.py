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

import asyncio
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


_second: tuple[int, str] = (-1, "")  # the last second formatted: a log line's time costs a lookup, not a datetime


def _iso(created: float) -> str:
    """ISO 8601 in UTC to the millisecond, as ``datetime.fromtimestamp(created, UTC).isoformat(timespec=
    "milliseconds")`` writes it: rounded to the microsecond, then cut to the millisecond."""
    global _second
    whole = int(created)
    micros = round((created - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    second, text = _second
    if whole != second:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, text)
    return f"{text}.{micros // 1000:03d}Z"


def _entry(created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    """A line's first fields, in their order: ts, level, logger, message, and the request's id when serving one."""
    entry: dict[str, Any] = {"ts": _iso(created), "level": level, "logger": logger, "message": message}
    request_id = _request_id.get()
    if request_id is not None:
        entry["request_id"] = request_id
    return entry


class JsonFormatter(logging.Formatter):
    """ts (ISO 8601, UTC, ms), level, logger, message, request_id, exception, then any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname, record.name, _message(record))
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
    handler = JsonLinesHandler(sys.stderr)
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


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler ``configure()`` installs: JSON lines, and access lines handed over already formatted.

    An access line through ``logging`` cost 11.6 µs (a record, the formatter, a lock, a write per line), 4 % of
    a beacon's CPU under load (bench/README.md). ``RequestIdMiddleware`` formats it itself when this handler is
    the only one it would reach (``_fast_handler``) and hands it over here; the lines of one turn of the event
    loop go out in one write at its end. Any other record first writes the lines waiting before it, and so does
    ``flush()`` (``logging.shutdown`` calls it at exit), so lines keep their order."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._waiting: list[str] = []
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop whose turn ends with writing them

    def add_line(self, line: str) -> None:
        """Writes ``line`` (a formatted record, no newline) at the end of this turn of the running loop, or now."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread
            loop = None
        with self.lock:  # type: ignore[union-attr]  # a record emitted by another thread may be taking the list
            self._waiting.append(line)
            if loop is not None and self._due_on is loop:
                return
            self._due_on = loop  # a loop closed with its write still due (one asyncio.run after another) is replaced
        if loop is None:
            self._write_waiting()
        else:
            loop.call_soon(self._write_waiting)

    def emit(self, record: logging.LogRecord) -> None:
        if self._waiting:
            self._write_waiting()
        super().emit(record)

    def flush(self) -> None:
        if self._waiting:
            self._write_waiting()
        super().flush()

    def _write_waiting(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._waiting, self._due_on = self._waiting, [], None
            if not lines:
                return
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: what logging's handleError would report, nowhere
                pass


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
    fields = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
    handler = _fast_handler()
    if handler is None:
        access_log.info(_ACCESS_LINE, method, path, status, duration_ms, extra=fields)
        return
    # the line JsonFormatter writes for that record
    entry = _entry(time.time(), "INFO", access_log.name, _ACCESS_LINE % (method, path, status, duration_ms))
    entry.update(fields)
    handler.add_line(_dumps(entry))


_ACCESS_LINE = "%s %s %d %.1f ms"


def _fast_handler() -> JsonLinesHandler | None:
    """The handler an access record would reach, if it is the only one and nothing on the way could filter or
    change the record; else None (tests' capture handlers, a filter added by an embedding application)."""
    if not access_log.isEnabledFor(logging.INFO) or access_log.filters:
        return None
    node: logging.Logger | None = access_log
    while node is not None and not node.handlers:
        if not node.propagate:
            return None
        node = node.parent
    if node is None or node.parent is not None or len(node.handlers) != 1:  # the first handlers must be the root's
        return None
    handler = node.handlers[0]
    if type(handler) is not JsonLinesHandler or handler.filters or handler.level > logging.INFO:
        return None
    return handler


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
