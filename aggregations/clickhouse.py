"""The one door to ClickHouse: connecting by URL, inserting, querying, mapping errors.

``chdb://<dir>`` runs the real ClickHouse engine in this process (one process
per folder); ``http(s)://user:password@host:port/database`` talks to a server.
Both are clickhouse-connect clients, so the SQL and the code are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver import options as driver_options
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.compression import get_compressor
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from aggregations import native

# vidpulse hands clickhouse-connect lists and bytes, never a DataFrame. Its insert asks whether the data is one,
# and the first asking imports pandas and pyarrow (installed with chdb): 80 MB more in every process that writes,
# and 0.35 s on a quiet machine, 1.4 s in the worker's first write under load (bench/README.md). ``pd`` set to
# None is the driver's own way of recording that pandas is absent; set before anything here resolves it.
if "pd" not in vars(driver_options):
    driver_options.pd = None
    driver_options.pd_time_test = None

# Server-side limits: a query answering an HTTP request should fail within the
# request's patience (30 s) rather than hold a worker thread indefinitely.
QUERY_TIMEOUT_S = 30
# Inserts are small (one partition's batch); 60 s covers a busy server's merges
# before the writer gives up and retries the same block.
INSERT_TIMEOUT_S = 60


# The server's codes for a query stopped by a configured limit (time, rows, bytes, memory).
LIMIT_CODES = frozenset({158, 159, 160, 241, 307, 396})


class ClickHouseError(Exception):
    """Any failure talking to ClickHouse, with the server's error code when it sent one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def over_limit(self) -> bool:
        return self.code in LIMIT_CODES


@dataclass(frozen=True, slots=True)
class NativeBlock:
    """Rows serialized once in ClickHouse's Native format, so the same bytes can go to several tables
    with the same column types (the worker writes each raw block to events_raw and to events_stream)."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    data: bytes
    rows: int
    compression: str | None = None  # the client's, as its own insert would send: lz4 over HTTP, none in process


class ClickHouse:
    """A client plus a lock: clickhouse-connect clients are not safe to share between threads.

    Inserts go as Native bytes serialized here from column-oriented values, with each table's
    column types read once (clickhouse-connect's ``insert`` asks ``DESCRIBE TABLE`` on every call and
    pivots the rows in Python)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        # The async calls wait their turn in this client's own thread, not in threads of the loop's shared pool
        # blocked on the lock: the worker's writes in flight (one per partition) would otherwise hold most of that
        # pool, and other clients' calls (the worker's reads, the API's queries) would queue behind rows.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._types: dict[tuple[str, tuple[str, ...]], tuple[ClickHouseType, ...]] = {}

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock, _mapped():
            return self._client.command(sql, parameters=parameters)

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock, _mapped():
            return self._client.query(sql, parameters=parameters, settings=settings).result_rows

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str],
               dedup_token: str | None = None) -> None:
        """One block per call; with a token, ClickHouse drops a block it already holds (and so do its views)."""
        if not rows:
            return
        self.insert_block(table, self.encode(table, columns, list(zip(*rows, strict=True))), dedup_token)

    def encode(self, table: str, names: Sequence[str], columns: Sequence[native.Column]) -> NativeBlock:
        """``columns`` (one sequence of values, or ``native.Runs``, per name) as a Native block of ``table``'s
        column types. DateTime64 columns take integer ticks as well as datetimes."""
        types = self._column_types(table, tuple(names))
        compression = self._client.write_compression
        compressor = get_compressor(compression)
        body = native.body(names, types, columns, self._client.server_tz)
        data = bytes(compressor.compress_block(body)) + bytes(compressor.flush() or b"")
        return NativeBlock(tuple(names), tuple(t.name for t in types), data, len(columns[0]) if columns else 0,
                           compression)

    def fits(self, table: str, block: NativeBlock) -> bool:
        """Whether ``table`` has the very column types ``block`` was serialized for, so its bytes can go there."""
        return tuple(t.name for t in self._column_types(table, block.names)) == block.types

    def insert_block(self, table: str, block: NativeBlock, dedup_token: str | None = None) -> None:
        """Bytes serialized once by ``encode``, sent as they are: the worker sends one raw block to two tables.
        With a token, ClickHouse drops a block it already holds (and so do its views)."""
        if not block.rows:
            return
        types = tuple(t.name for t in self._column_types(table, block.names))
        if types != block.types:
            # values such as DateTime64 ticks mean something only for the types they were serialized for
            raise ValueError(f"a block serialized for columns {block.types} cannot go to {table}'s {types}")
        settings: dict[str, Any] = {"deduplicate_blocks_in_dependent_materialized_views": 1}
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        try:
            with self._lock, _mapped():
                self._client.raw_insert(table, list(block.names), block.data, settings=settings, fmt="Native",
                                        compression=block.compression)
        except ClickHouseError:
            self._types.pop((table, block.names), None)  # a changed table is read again on the retry
            raise

    def _column_types(self, table: str, names: tuple[str, ...]) -> tuple[ClickHouseType, ...]:
        """The table's types of these columns, asked once (clickhouse-connect's own DESCRIBE TABLE)."""
        key = (table, names)
        types = self._types.get(key)
        if types is None:
            with self._lock, _mapped():
                types = tuple(self._client.create_insert_context(table, list(names)).column_types)
            self._types[key] = types
        return types

    async def aquery(self, sql: str, parameters: dict[str, Any] | None = None,
                     settings: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return await self._in_turn(self.query, sql, parameters, settings)  # type: ignore[no-any-return]

    async def ainsert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str],
                      dedup_token: str | None = None) -> None:
        await self._in_turn(self.insert, table, rows, columns, dedup_token)

    async def ainsert_block(self, table: str, block: NativeBlock, dedup_token: str | None = None) -> None:
        """``insert_block`` off the event loop, as ``ainsert``."""
        await self._in_turn(self.insert_block, table, block, dedup_token)

    async def _in_turn(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(call, *args))

    async def ping(self) -> bool:
        try:
            await self.aquery("SELECT 1")
        except ClickHouseError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._client.close()
        self._executor.shutdown(wait=False)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Turns the driver's and the engine's exceptions into ClickHouseError so callers handle one type."""
    try:
        yield
    except ClickHouseError:
        raise
    except (DriverError, OSError) as exc:
        raise ClickHouseError(_first_line(exc), getattr(exc, "code", None)) from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("clickhouse_connect", "chdb", "urllib3")):
            raise ClickHouseError(_first_line(exc), getattr(exc, "code", None)) from exc
        raise


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def connect(url: str, database: str | None, settings: dict[str, Any] | None = None) -> ClickHouse:
    """A client for ``url``; ``database`` is selected when given (it must exist then). ``settings``
    apply to every query of this client (the query API's cost limits, for instance)."""
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        path = url[len("chdb://"):].split("?", 1)[0]
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=path or None, database=database,
                                                   settings=settings)
        except Exception as exc:
            raise ClickHouseError(f"cannot open the embedded ClickHouse in {path or 'memory'} ({_first_line(exc)}); "
                                  "chdb allows one process per folder: if a vidpulse process (vidpulse up) runs on "
                                  "it, stop that first") from exc
    else:
        with _mapped():  # the client asks the server at once: a refused password is a ClickHouseError too
            client = clickhouse_connect.get_client(
                interface=parts.scheme, host=parts.hostname or "localhost", port=parts.port,
                username=unquote(parts.username or "default"), password=unquote(parts.password or ""),
                database=database or (parts.path.strip("/") or None), settings=settings,
                connect_timeout=10, send_receive_timeout=max(QUERY_TIMEOUT_S, INSERT_TIMEOUT_S),
            )
    return ClickHouse(client)
