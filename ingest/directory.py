"""A name → value mapping kept in memory and refreshed from a store in the background.

The tracker's accounts (account → allowed origins) and the API's keys (hash → key)
are both read on every request and change rarely: looking them up must never wait
on the database, and a database outage must not forget them. Each successful load
can also be written to a local snapshot, so a process restarted while the store is
down still knows what it knew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

V = TypeVar("V")


class Directory(Generic[V]):
    """What the store last answered, by name; ``get`` never waits. Writes nothing to the store."""

    def __init__(self, what: str, load: Callable[[], Awaitable[Mapping[str, V]]], refresh_s: float = 5.0,
                 snapshot: Path | None = None, decode: Callable[[Any], V] | None = None) -> None:
        """``snapshot`` (with ``decode`` turning a JSON value back into a V) keeps the last load on disk."""
        self._what, self._load, self._refresh_s = what, load, refresh_s
        self._snapshot, self._decode = snapshot, decode
        self._entries: dict[str, V] | None = None
        self._task: asyncio.Task[None] | None = None
        self.loaded_at: float | None = None  # time.monotonic() of the last load that the store answered

    @classmethod
    def fixed(cls, what: str, entries: Mapping[str, V]) -> Directory[V]:
        """A directory that never changes (tests, tools)."""
        directory: Directory[V] = cls(what, _no_store)
        directory._entries = dict(entries)
        return directory

    @property
    def what(self) -> str:
        return self._what

    @property
    def loaded(self) -> bool:
        return self._entries is not None

    def __len__(self) -> int:
        return len(self._entries or {})

    def get(self, name: str) -> V | None:
        return (self._entries or {}).get(name)

    async def start(self) -> None:
        """Loads once (from the snapshot if the store does not answer), then refreshes in the background."""
        if not await self.refresh():
            self._read_snapshot()
        self._task = asyncio.create_task(self._refresh_forever(), name=f"refresh-{self._what}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> bool:
        """True when the store answered; on failure what was known stays in force."""
        try:
            loaded = dict(await self._load())
        except Exception as exc:  # noqa: BLE001 - any store failure: keep serving what we know
            log.warning("cannot load %s (%s); keeping the %s known", self._what, exc,
                        len(self._entries) if self._entries is not None else "none")
            return False
        self.loaded_at = time.monotonic()
        if loaded != self._entries:
            self._entries = loaded
            self._write_snapshot()
        return True

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    def _write_snapshot(self) -> None:
        """Best effort: a snapshot that cannot be written must not stop the refreshes."""
        if self._snapshot is None:
            return
        try:
            self._snapshot.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self._snapshot.parent, prefix=f".{self._snapshot.name}.",
                                             delete=False) as partial:
                partial.write(orjson.dumps(self._entries))
            os.replace(partial.name, self._snapshot)
        except OSError as exc:
            log.warning("cannot write the %s snapshot %s: %s", self._what, self._snapshot, exc)

    def _read_snapshot(self) -> None:
        """The snapshot's age counts as the load's age, so a process serving an old snapshot shows it."""
        if self._snapshot is None or self._decode is None or not self._snapshot.exists():
            return
        decode = self._decode
        try:
            written_s_ago = time.time() - self._snapshot.stat().st_mtime
            self._entries = {name: decode(value) for name, value in orjson.loads(self._snapshot.read_bytes()).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("cannot read the %s snapshot %s (%s): starting without it", self._what, self._snapshot, exc)
            return
        self.loaded_at = time.monotonic() - max(0.0, written_s_ago)
        log.warning("%s loaded from the snapshot %s (%d) until the store answers", self._what, self._snapshot,
                    len(self._entries))


class DirectoryMetrics(Collector):
    """Read at scrape time: how many entries each directory holds and how old its last load is (growing
    while the store is down: the process then serves what it last knew)."""

    def __init__(self, directories: Sequence[Directory[Any]], registry: CollectorRegistry) -> None:
        self._directories = directories
        registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily("vidpulse_directory_entries", "Entries known, by directory.", labels=["directory"])
        age = GaugeMetricFamily("vidpulse_directory_age_seconds", "Seconds since the store last answered a load.",
                                labels=["directory"])
        for directory in self._directories:
            entries.add_metric([directory.what], len(directory))
            if directory.loaded_at is not None:
                age.add_metric([directory.what], time.monotonic() - directory.loaded_at)
        yield entries
        yield age


async def _no_store() -> Mapping[str, Any]:
    raise RuntimeError("a fixed directory has no store")
