"""Serve ClickHouse's HTTP and native interfaces from the engine chdb-core ships (run by clickhouse.sh).

Why: no ClickHouse server package or image is reachable on these machines, but chdb-core's engine is
clickhouse-local, which can open the server's listeners itself (``SYSTEM START LISTEN``) with the
``config.xml`` of the current directory. One blocking query then keeps the process serving.

Usage: ``python serve.py RUN_DIR ENGINE_DIR HTTP_PORT USER`` with the password in
``VIDPULSE_CLICKHOUSE_PASSWORD``. It exits 0 after SIGTERM/SIGINT once the serving query is cancelled
(a clean engine shutdown), and 1 if the engine stopped serving by itself (a lock, a port taken, a
bad config: clickhouse-local reports those and returns without raising, so this is the only sign).
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import threading
import urllib.request
from typing import Any

# Imported before chdir(RUN_DIR): chdb opens an in-memory engine at import, which must not read our config.
import chdb._chdb as engine

SERVE_SQL = ("SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
             "SELECT sleepEachRow(1) FROM system.numbers "
             "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0 FORMAT Null")
# Cancels the serving query (it runs as the in-process `default` user); the engine then returns and shuts down.
CANCEL_SQL = b"KILL QUERY WHERE query LIKE 'SELECT sleepEachRow(1) FROM system.numbers%' SYNC FORMAT Null"
# The format argument becomes the server's default_format: clickhouse-connect works with TabSeparated, not CSV.
DEFAULT_FORMAT = "TabSeparated"
CANCEL_TIMEOUT_S = 20


def main(run_dir: str, engine_dir: str, http_port: int, user: str, password: str) -> int:
    """Serves until a signal (exit 0) or until the engine gives up by itself (exit 1)."""
    os.chdir(run_dir)
    finished = threading.Event()
    outcome: dict[str, Any] = {}
    requested = threading.Event()

    def serve() -> None:
        try:
            outcome["result"] = engine.query(SERVE_SQL, DEFAULT_FORMAT, path=engine_dir)
        except BaseException as exc:  # reported below, whatever it is
            outcome["error"] = exc
        finished.set()

    def on_signal(signum: int, _frame: object) -> None:
        requested.set()
        finished.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = threading.Thread(target=serve, name="clickhouse-serve", daemon=True)
    server.start()
    while not finished.wait(1.0):  # a timed wait, so the signal handler gets to run in this thread
        pass
    if not requested.is_set():
        print(f"serve.py: the engine stopped serving by itself: {_reason(outcome)}", file=sys.stderr, flush=True)
        return 1
    print("serve.py: stopping (cancelling the serving query)", file=sys.stderr, flush=True)
    _cancel(http_port, user, password)
    server.join(CANCEL_TIMEOUT_S)
    if server.is_alive():
        print("serve.py: the serving query did not stop; exiting anyway", file=sys.stderr, flush=True)
        os._exit(1)  # a normal exit would wait for the engine, which is still inside that query
    print("serve.py: stopped", file=sys.stderr, flush=True)
    return 0


def _reason(outcome: dict[str, Any]) -> str:
    """The engine's own words: clickhouse-local returns its errors in the result instead of raising them."""
    if "error" in outcome:
        return repr(outcome["error"])
    result = outcome.get("result")
    if result is not None and result.has_error():
        return result.error_message().split("Stack trace", 1)[0].strip()
    return "no error reported (another process holding the engine folder's lock, or a port taken)"


def _cancel(http_port: int, user: str, password: str) -> None:
    """KILL QUERY through our own HTTP port: a second in-process query would wait behind the serving one."""
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/", data=CANCEL_SQL)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=CANCEL_TIMEOUT_S).read()
    except OSError as exc:
        print(f"serve.py: could not cancel the serving query: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: serve.py RUN_DIR ENGINE_DIR HTTP_PORT USER (password in VIDPULSE_CLICKHOUSE_PASSWORD)")
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], os.environ["VIDPULSE_CLICKHOUSE_PASSWORD"]))
