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

    async def start() -> None:
        await second.start()
        await second.stop()

    asyncio.run(start())
    assert second.loaded and second.get("a") == ("https://a.example",)


def test_without_store_or_snapshot_nothing_is_loaded(tmp_path: Path):
    store = Store({})
    store.down = True
    directory = Directory("accounts", store.load, snapshot=tmp_path / "none.json", decode=tuple)

    async def start() -> None:
        await directory.start()
        await directory.stop()

    asyncio.run(start())
    assert not directory.loaded and directory.get("a") is None
    assert Directory.fixed("keys", {"h": 1}).get("h") == 1
