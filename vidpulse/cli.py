"""``vidpulse``: run the whole pipeline (``up``: by default its parts as processes it supervises), or each part
alone for scale-out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

import httptools
import uvicorn
import uvloop
from pydantic import ValidationError
from starlette.types import ASGIApp

from aggregations.schema import migrate
from ingest.settings import Settings
from vidpulse import admin, logs, supervisor
from vidpulse.broker import BrokerError, local_broker
from vidpulse.localserver import server_url_for
from vidpulse.process import Process

T = TypeVar("T")
ROLES_BY_COMMAND = {"up": frozenset({"tracker", "worker", "api"}), "tracker": frozenset({"tracker"}),
                    "worker": frozenset({"worker"}), "api": frozenset({"api"})}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"vidpulse: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, settings)
    except BrokerError as exc:
        print(f"vidpulse: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        applied = migrate(server_url_for(settings.clickhouse_url, settings.chdb_folder), settings.clickhouse_database)
        print(f"applied migrations: {applied or 'none (up to date)'}")
        return 0
    if args.command in ("accounts", "keys"):
        return admin.run(args, settings)
    if args.command == "mcp":
        return _mcp(settings)
    if args.command == "simulate":
        from ingest.simulator import run_simulation

        return asyncio.run(run_simulation(args))
    roles = ROLES_BY_COMMAND[args.command]
    bootstrap = settings.kafka_bootstrap
    if not bootstrap and roles & {"tracker", "worker"}:
        if args.command != "up":
            raise BrokerError("VIDPULSE_KAFKA_BOOTSTRAP is required for a lone tracker or worker")
        bootstrap = local_broker()
    if args.command == "up" and settings.chdb_folder is not None and settings.up_processes == "split":
        return supervisor.run(settings, bootstrap)
    return run_loop(_serve(settings, roles, bootstrap, dev_account=args.command == "up"))


def _mcp(settings: Settings) -> int:
    """MCP over stdio for an assistant on this machine; its tools ask a running vidpulse API with the key."""
    from queries.mcp import build_server, remote_client

    key = settings.mcp_key.get_secret_value()
    if not key:
        print("vidpulse mcp: set VIDPULSE_MCP_KEY to a vidpulse API key (and VIDPULSE_MCP_API_URL to the API, "
              f"now {settings.mcp_api_url})", file=sys.stderr)
        return 2
    asyncio.run(build_server(remote_client(settings.mcp_api_url, key)).run_stdio_async())
    return 0


def http_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """The one uvicorn configuration, shared with bench/throughput.py's bare baseline endpoint."""
    # httptools parses HTTP/1.1 in C (h11, the pure-Python default, took a quarter of the tracker's time).
    # log_config=None keeps our JSON handlers, and our middleware writes the access log (no client address).
    # No per-message deflate: a live message goes to every subscriber of its channel, and deflate would
    # compress it again for each one (its state is per connection). The messages are a few KB a second.
    return uvicorn.Config(app, host=host, port=port, http="httptools", log_level="info", proxy_headers=False,
                          timeout_graceful_shutdown=30, log_config=None, access_log=False, ws_per_message_deflate=False)


def server_flavour() -> str:
    """Which event loop and HTTP parser the processes run on (benchmarks print it beside their figures)."""
    return f"uvloop {uvloop.__version__}, httptools {httptools.__version__}"


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Runs a server process's main coroutine on uvloop (libuv: cheaper sockets, timers and callbacks than
    asyncio's own loop, which the tracker's and the worker's profiles spent a fifth of their time in)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def tune_gc() -> None:
    """Fewer cyclic garbage collections over a heap that is mostly long-lived.

    A worker holds every open session (and a tracker its directories, caches and libraries) for hours,
    and allocates a few objects per event; at CPython's default thresholds (700, 10, 10) the collector
    kept walking that heap: a third of the sessionizer's CPU per event in a microbenchmark (27 -> 18 us).
    Everything alive at start-up (modules, the app) is frozen out of the collector's walks, and a
    young collection waits for 50,000 allocations. Reference counting frees everything without cycles
    at once, as before; only cyclic garbage waits a little longer."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Runs an ASGI app as vidpulse runs its own (the benchmarks' baseline endpoint)."""
    tune_gc()
    run_loop(uvicorn.Server(http_config(app, host, port)).serve())


async def _serve(settings: Settings, roles: frozenset[str], bootstrap: str, dev_account: bool) -> int:
    process = Process(settings, roles, bootstrap, dev_account)
    app = process.asgi_app()
    # outermost, so even the 500 that Starlette writes for an unhandled error carries X-Request-ID
    config = http_config(logs.RequestIdMiddleware(app), settings.http_host, settings.http_port)
    tune_gc()
    server = _Server(config, on_exit=process.closing)
    await server.serve()
    return 1 if getattr(server.lifespan, "shutdown_failed", False) else 0


class _Server(uvicorn.Server):
    """uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, so the process would die by the
    signal (status 143) even after a clean, flushed shutdown: swallow it then and exit 0 (1 when the shutdown
    raised). After a forced exit (a second Ctrl+C: nothing flushed) the signal goes through."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn drains open connections before the app hears of the shutdown: endless streams (live
        server-sent events) are told now, or they would hold the drain for its whole timeout."""
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            if not self.force_exit:
                self._captured_signals.clear()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidpulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="tracker, worker and query API on a local ClickHouse server, each its own process "
                                   "(VIDPULSE_UP_PROCESSES=one: all in one process on chdb); starts a local broker if none")
    commands.add_parser("tracker", help="POST /v1/track only")
    commands.add_parser("worker", help="the Faust worker (with /metrics)")
    commands.add_parser("api", help="the query API only")
    commands.add_parser("migrate", help="apply ClickHouse schema migrations")
    commands.add_parser("mcp", help="MCP server over stdio for assistants (VIDPULSE_MCP_KEY, VIDPULSE_MCP_API_URL)")
    admin.add_commands(commands)
    simulate = commands.add_parser("simulate", help="drive realistic player traffic and write the ground truth")
    simulate.add_argument("--url", default="http://127.0.0.1:8081",
                          help="the tracker's base URL (default: split `vidpulse up`'s tracker; the one-process "
                               "form takes beacons on its one port, 8080), or several comma-separated (batches go to "
                               "each in turn, a retry to the next); run it with VIDPULSE_TRUSTED_PROXIES=127.0.0.1 "
                               "so it believes the simulated X-Forwarded-For addresses (countries)")
    simulate.add_argument("--account", default="1234")
    simulate.add_argument("--sessions", type=int, default=200)
    simulate.add_argument("--videos", type=int, default=5)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--concurrency", type=int, default=50)
    simulate.add_argument("--pause-ms", type=int, default=0,
                          help="pause between a session's batches (default 0: each as soon as the last got its answer); "
                               "spreads a load over time, as the fault tests need")
    simulate.add_argument("--truth", default="truth.json",
                          help="where to write the expected answers of this run alone: compare on a fresh account")
    return parser


if __name__ == "__main__":
    sys.exit(main())
