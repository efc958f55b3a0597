"""JSON log lines and request ids, in-process: a Starlette app behind RequestIdMiddleware, called through httpx."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from vidpulse import logs

CLIENT_IP = "203.0.113.77"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0 secret-ua-marker"


class Captured:
    """What the configured handler wrote, parsed line by line (every line must be JSON)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[dict]:
        return iter([json.loads(line) for line in self.stream.getvalue().splitlines()])


@pytest.fixture
def lines() -> Iterator[Captured]:
    """configure() as the CLI calls it, its stderr handler pointed at a buffer; restores the root logger after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    logs.configure("INFO")
    capture(stream)
    yield Captured(stream)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def capture(stream: io.StringIO) -> None:
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, logs.JsonFormatter)
    handler.setStream(stream)


def app() -> Starlette:
    log = logging.getLogger("tests.handler")

    async def work(request: Request) -> JSONResponse:
        log.info("working on %s for %d", request.path_params["item"], 42, extra={"item": request.path_params["item"]})
        return JSONResponse({"seen": logs.current_request_id()}, status_code=202, headers={"X-Request-ID": "app-set"})

    def blocking(_: Request) -> PlainTextResponse:  # a sync endpoint runs in a thread: the id must follow
        log.info("in a thread")
        return PlainTextResponse("ok")

    async def fail(_: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    return Starlette(routes=[Route("/work/{item}", work, methods=["POST"]), Route("/blocking", blocking),
                             Route("/fail", fail)])


def call(method: str, path: str, headers: dict[str, str | bytes] | None = None, app_: object | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_ or logs.RequestIdMiddleware(app()), client=(CLIENT_IP, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return asyncio.run(go())


def by_logger(lines: list[dict], name: str) -> list[dict]:
    return [line for line in lines if line["logger"] == name]


def test_every_line_is_json_with_the_fields_and_formatted_args(lines):
    log = logging.getLogger("tests.plain")
    log.warning("%d events from %s", 3, "abc", extra={"partition": 2, "odd": object(), "huge": 2**70})
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("it failed")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7, extra={"color_message": "\x1b[1m"})
    warning, error, uvicorn = list(lines)
    assert warning["message"] == "3 events from abc"
    assert warning["level"] == "WARNING" and warning["logger"] == "tests.plain"
    assert warning["ts"].endswith("Z") and warning["ts"][:2] == "20"
    assert warning["partition"] == 2 and warning["huge"] == 2**70 and warning["odd"].startswith("<object")
    assert "request_id" not in warning
    assert error["level"] == "ERROR" and "ValueError: bad value" in error["exception"]
    assert error["exception"].startswith("Traceback")
    assert uvicorn["message"] == "Started server process [7]" and "color_message" not in uvicorn


def test_library_loggers_lose_their_own_handlers_and_go_through_ours(lines):
    logging.getLogger("aiokafka").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("mode").propagate = False
    logs.configure("INFO")
    capture(lines.stream)
    for name in ("aiokafka", "mode", "faust", "uvicorn", "uvicorn.error"):
        assert not logging.getLogger(name).handlers and logging.getLogger(name).propagate
    assert not logging.getLogger("uvicorn.access").hasHandlers()  # uvicorn then writes no access line at all
    logging.getLogger("aiokafka").info("from %s", "aiokafka")
    logging.getLogger("mode").info("from mode")
    assert [(line["logger"], line["message"]) for line in lines] == [("aiokafka", "from aiokafka"), ("mode", "from mode")]


def test_level_filters(lines):
    logs.configure("WARNING")
    capture(lines.stream)
    logging.getLogger("tests.level").info("hidden")
    logging.getLogger("tests.level").warning("shown")
    assert [line["message"] for line in lines] == ["shown"]


def test_request_id_reaches_logs_inside_the_request_and_the_response_header(lines):
    response = call("POST", "/work/v1?token=secret&ip=1.2.3.4")
    assert response.status_code == 202
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0  # 32 random hex digits
    assert response.headers.get_list("X-Request-ID") == [request_id]  # replaces the app's own header
    assert response.json() == {"seen": request_id}
    (handler_line,) = by_logger(lines, "tests.handler")
    assert handler_line["message"] == "working on v1 for 42" and handler_line["item"] == "v1"
    assert handler_line["request_id"] == request_id
    assert logs.current_request_id() is None  # reset after the request


def test_request_id_follows_into_a_sync_endpoint_thread(lines):
    response = call("GET", "/blocking", {"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    (line,) = by_logger(lines, "tests.handler")
    assert line["request_id"] == "abc-123"


def test_each_request_gets_its_own_id():
    first, second = call("GET", "/blocking"), call("GET", "/blocking")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


@pytest.mark.parametrize("given", ["abc-123", "A.b_C-9", "x" * 64, "0f8fad5b-d9cb-469f-a165-70867728950e"])
def test_a_sane_request_id_is_kept(lines, given):
    response = call("POST", "/work/x", {"X-Request-ID": given})
    assert response.headers["X-Request-ID"] == given
    assert by_logger(lines, "tests.handler")[0]["request_id"] == given
    assert by_logger(lines, "vidpulse.access")[0]["request_id"] == given


@pytest.mark.parametrize("given", ["x" * 65, "abc 123", "a\\nb", "a\"}{\"level\":\"ERROR", "<script>", "a/b", "é", "",
                                   "abc;rm"])
def test_a_malicious_or_odd_request_id_is_replaced(lines, given):
    response = call("POST", "/work/x", {"X-Request-ID": given.encode()})  # bytes: httpx sends non-ASCII as is
    replaced = response.headers["X-Request-ID"]
    assert replaced != given and len(replaced) == 32
    assert by_logger(lines, "tests.handler")[0]["request_id"] == replaced
    assert all(given not in json.dumps(line, ensure_ascii=False) for line in lines if given and line["logger"] != "httpx")


def test_access_line_has_method_path_status_duration_and_id_but_no_client_address(lines):
    response = call("POST", "/work/v7?account=1&ip=9.9.9.9", {"X-Forwarded-For": "198.51.100.4"})
    (access,) = by_logger(lines, "vidpulse.access")
    assert access["level"] == "INFO"
    assert access["method"] == "POST" and access["path"] == "/work/v7" and access["status"] == 202
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert access["request_id"] == response.headers["X-Request-ID"]
    assert access["message"].startswith("POST /work/v7 202 ")
    everything = "\n".join(json.dumps(line) for line in lines if line["logger"] != "httpx")  # httpx: the client
    for secret in (CLIENT_IP, "198.51.100.4", "9.9.9.9", "secret-ua-marker", "5555", "account=1"):
        assert secret not in everything


class Writes(io.StringIO):
    """A stream that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def ours_alone() -> logs.JsonLinesHandler:
    """The root logger with our handler only: pytest adds capture handlers of its own, which (rightly) send access
    lines the slow way, through logging."""
    root = logging.getLogger()
    (handler,) = [h for h in root.handlers if isinstance(h, logs.JsonLinesHandler)]
    root.handlers[:] = [handler]
    return handler


def test_the_access_line_written_directly_is_the_line_logging_writes(lines, monkeypatch):
    monkeypatch.setattr(logs.time, "time", lambda: 1796864083.228)  # a time whose float is just below .228
    monkeypatch.setattr(logs.time, "perf_counter", lambda: 50.0)
    scope = {"method": "POST", "path": "/v1/track"}
    token = logs._request_id.set("req-1")
    try:
        extra = logging.NullHandler()
        logging.getLogger().addHandler(extra)
        assert logs._fast_handler() is None  # another handler would miss the line: through logging
        logs._log_access(scope, 202, 49.9987654)
        logging.getLogger().removeHandler(extra)
        handler = ours_alone()
        assert logs._fast_handler() is handler
        logs._log_access(scope, 202, 49.9987654)
    finally:
        logs._request_id.reset(token)
    through_logging, direct = lines.stream.getvalue().splitlines()
    assert direct == through_logging
    assert json.loads(direct)["ts"] == "2026-12-10T00:54:43.228Z" and json.loads(direct)["duration_ms"] == 1.235


def test_a_filter_or_a_level_on_the_way_sends_the_access_line_through_logging(lines):
    ours_alone()
    logs.access_log.addFilter(lambda record: False)
    try:
        assert logs._fast_handler() is None
        logs._log_access({"method": "GET", "path": "/x"}, 200, 0.0)
    finally:
        logs.access_log.filters.clear()
    logging.getLogger().setLevel("WARNING")
    assert logs._fast_handler() is None
    assert lines.stream.getvalue() == ""


def test_access_lines_of_one_loop_turn_go_out_in_one_write_before_any_later_line(lines):
    handler = ours_alone()
    stream = Writes()
    handler.setStream(stream)

    async def serve() -> None:
        for path in ("/a", "/b", "/c"):
            logs._log_access({"method": "POST", "path": path}, 202, 0.0)
        assert stream.getvalue() == ""
        await asyncio.sleep(0)
        assert stream.writes == 1 and len(stream.getvalue().splitlines()) == 3
        logs._log_access({"method": "POST", "path": "/d"}, 202, 0.0)
        logging.getLogger("tests.after").warning("after /d")
        logs._log_access({"method": "POST", "path": "/e"}, 202, 0.0)
        handler.flush()  # as logging.shutdown does at exit

    asyncio.run(serve())
    assert [line.get("path", line["message"]) for line in map(json.loads, stream.getvalue().splitlines())] == \
        ["/a", "/b", "/c", "/d", "after /d", "/e"]


def test_a_failing_app_is_logged_as_500_with_its_id(lines):
    with pytest.raises(RuntimeError):
        call("GET", "/fail", {"X-Request-ID": "failing-1"})
    (access,) = by_logger(lines, "vidpulse.access")
    assert access["status"] == 500 and access["request_id"] == "failing-1"


def test_non_http_scopes_pass_through_untouched():
    seen: list[str] = []

    async def lifespan_app(scope, receive, send):
        seen.append(scope["type"])
        assert logs.current_request_id() is None

    asyncio.run(logs.RequestIdMiddleware(lifespan_app)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_the_real_app_echoes_the_id(lines):
    """FastAPI's middleware stack with the project's wiring style: add_middleware."""
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/hello")
    async def hello() -> dict[str, str | None]:
        logging.getLogger("tests.handler").info("hello")
        return {"id": logs.current_request_id()}

    api.add_middleware(logs.RequestIdMiddleware)
    response = call("GET", "/hello?x=1", {"X-Request-ID": "fastapi-1"}, app_=api)
    assert response.json() == {"id": "fastapi-1"} and response.headers["X-Request-ID"] == "fastapi-1"
    assert by_logger(lines, "tests.handler")[0]["request_id"] == "fastapi-1"
    assert by_logger(lines, "vidpulse.access")[0]["path"] == "/hello"


def test_a_real_uvicorn_writes_no_client_address_even_with_its_access_log_on(lines):
    """uvicorn's own access line is '<client ip>:<port> - "GET /path HTTP/1.1" 200': it must never appear."""
    import uvicorn

    async def serve() -> httpx.Response:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(logs.RequestIdMiddleware(app()), host="127.0.0.1", port=port, log_config=None,
                                access_log=True, log_level="info", lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient() as client:
                return await client.post(f"http://127.0.0.1:{port}/work/real?q=1", headers={"User-Agent": USER_AGENT})
        finally:
            server.should_exit = True
            await task

    response = asyncio.run(serve())
    assert response.status_code == 202
    server_lines = [line for line in lines if line["logger"] != "httpx"]
    (access,) = by_logger(server_lines, "vidpulse.access")
    assert access["request_id"] == response.headers["X-Request-ID"] and access["path"] == "/work/real"
    assert not by_logger(server_lines, "uvicorn.access")
    everything = "\n".join(json.dumps(line) for line in server_lines)
    assert '127.0.0.1:' not in everything.replace("http://127.0.0.1:", "") and "secret-ua-marker" not in everything


def test_uvicorn_websocket_lines_lose_the_client_address_and_the_query_string():
    """A live stream's key may travel as ?key=: it must never reach a log, nor may the viewer's address."""
    from vidpulse.logs import WebSocketLineFilter

    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" %d',
                               ("203.0.113.9:51234", "/v1/live/accounts/1234?key=vp_sk_abc_secret&fields=viewers", 403),
                               None)
    assert WebSocketLineFilter().filter(record)
    assert record.getMessage() == '- - "WebSocket /v1/live/accounts/1234" 403'


def test_an_access_line_left_waiting_by_a_closed_loop_goes_out_with_the_next_loops_lines(lines):
    handler = ours_alone()
    stream = Writes()
    handler.setStream(stream)

    async def one(path: str) -> None:
        logs._log_access({"method": "GET", "path": path}, 200, 0.0)

    loop = asyncio.new_event_loop()

    def log_and_stop() -> None:
        logs._log_access({"method": "GET", "path": "/first"}, 200, 0.0)
        loop.stop()  # the loop ends with this turn: the write due at its end never runs

    loop.call_soon(log_and_stop)
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == ""
    asyncio.run(one("/second"))
    assert [json.loads(line)["path"] for line in stream.getvalue().splitlines()] == ["/first", "/second"]
