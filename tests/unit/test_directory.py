"""The in-memory directory behind the tracker's accounts and the API's keys: refresh, outage, snapshot."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ingest.directory import Directory


class Store:
    def __init__(self, entries: dict[str, tuple[str, ...]]) -> None:
        self.entries, self.down, self.loads = entries, False, 0

    async def load(self) -> dict[str, tuple[str, ...]]:
        self.loads += 1
        if self.down:
            raise ConnectionError("store down")
        return dict(self.entries)


def start_and_stop(directory: Directory) -> None:
    async def run() -> None:
        await directory.start()
        await directory.stop()
    asyncio.run(run())


def test_a_refresh_sees_changes_and_an_outage_keeps_what_was_known(tmp_path: Path):
    store = Store({"a": ()})
    directory = Directory("accounts", store.load, refresh_s=0.01, snapshot=tmp_path / "accounts.json", decode=tuple)

    async def scenario() -> list[object]:
        await directory.start()
        seen: list[object] = [directory.get("a"), directory.get("b")]
        store.entries["b"] = ("https://b.example",)
        await asyncio.sleep(0.1)
        seen.append(directory.get("b"))
        store.down = True
        await asyncio.sleep(0.05)
        seen.append(directory.get("b"))
        await directory.stop()
        return seen

    assert asyncio.run(scenario()) == [(), None, ("https://b.example",), ("https://b.example",)]
    assert store.loads > 3


def test_a_restart_while_the_store_is_down_starts_from_the_snapshot(tmp_path: Path):
    snapshot = tmp_path / "accounts.json"
    store = Store({"a": ("https://a.example",)})
    first = Directory("accounts", store.load, snapshot=snapshot, decode=tuple)
    asyncio.run(first.refresh())
    store.down = True
    second = Directory("accounts", store.load, snapshot=snapshot, decode=tuple)

    start_and_stop(second)
    assert second.loaded and second.get("a") == ("https://a.example",)


def test_without_store_or_snapshot_nothing_is_loaded(tmp_path: Path):
    store = Store({})
    store.down = True
    directory = Directory("accounts", store.load, snapshot=tmp_path / "none.json", decode=tuple)

    start_and_stop(directory)
    assert not directory.loaded and directory.get("a") is None
    assert Directory.fixed("keys", {"h": 1}).get("h") == 1


def test_a_snapshot_that_cannot_be_written_or_read_stops_nothing(tmp_path: Path):
    (tmp_path / "accounts.json").mkdir()  # a folder where the file should be: every write fails
    store = Store({"a": ()})
    directory = Directory("accounts", store.load, refresh_s=0.01, snapshot=tmp_path / "accounts.json", decode=tuple)

    async def scenario() -> object:
        await directory.start()
        store.entries["b"] = ()
        await asyncio.sleep(0.1)
        await directory.stop()
        return directory.get("b")

    assert asyncio.run(scenario()) == ()
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    store.down = True
    restarted = Directory("accounts", store.load, snapshot=corrupt, decode=tuple)
    asyncio.run(restarted.refresh())
    restarted._read_snapshot()
    assert not restarted.loaded


def test_a_snapshot_load_reports_the_snapshots_age(tmp_path: Path):
    import os
    import time

    snapshot = tmp_path / "accounts.json"
    snapshot.write_text('{"a": []}')
    os.utime(snapshot, (time.time() - 600, time.time() - 600))
    store = Store({})
    store.down = True
    directory = Directory("accounts", store.load, snapshot=snapshot, decode=tuple)

    start_and_stop(directory)
    assert directory.get("a") == ()
    assert directory.loaded_at is not None and 590 < time.monotonic() - directory.loaded_at < 700
