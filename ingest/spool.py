"""A local disk spool for batches Kafka did not acknowledge in time.

Every entry is one accepted request's messages, written to a temporary file,
fsynced, renamed into place and the folder fsynced, all before the tracker
answers 202: a crash the moment after the answer loses nothing. Entries are
named by arrival so that draining is oldest-first; an entry is deleted only
after Kafka acknowledged all its messages, so a crash mid-drain sends it again
(downstream deduplication by session and event id makes that harmless).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

Message = tuple[str, bytes | None, bytes]  # topic, key, value


class SpoolFull(Exception):
    """The spool holds its maximum; the client must retry later."""


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    messages: list[Message]


class Spool:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("*.tmp"):  # a crash between write and rename: never answered 202
            leftover.unlink()
        entries = self._entries()
        self._bytes = sum(path.stat().st_size for path in entries)
        self._count = len(entries)
        self._lock = threading.Lock()

    def append(self, messages: list[Message]) -> None:
        """Durable when it returns: fsynced file, fsynced folder."""
        body = orjson.dumps([[topic, _text(key), value.decode()] for topic, key, value in messages])
        with self._lock:
            if self._bytes + len(body) > self._max_bytes:
                raise SpoolFull(f"the spool holds {self._bytes} of {self._max_bytes} bytes")
            self._bytes += len(body)
            self._count += 1
        try:
            self._write(body)
        except OSError:
            with self._lock:
                self._bytes -= len(body)
                self._count -= 1
            raise

    def _write(self, body: bytes) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        temporary = self._folder / f"{name}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.rename(self._folder / f"{name}.json")
        self._sync_folder()

    def oldest(self, count: int) -> list[SpoolEntry]:
        return [SpoolEntry(path, _decode(path.read_bytes())) for path in self._entries()[:count]]

    def remove(self, entries: list[SpoolEntry]) -> None:
        for entry in entries:
            size = entry.path.stat().st_size
            entry.path.unlink()
            with self._lock:
                self._bytes -= size
                self._count -= 1
        self._sync_folder()

    def depth(self) -> int:
        return self._count

    def has_room(self) -> bool:
        return self._bytes < self._max_bytes

    @property
    def bytes(self) -> int:
        return self._bytes

    def oldest_age_s(self) -> float:
        entries = self._entries()
        if not entries:
            return 0.0
        return max(0.0, time.time() - int(entries[0].name.split("-", 1)[0]) / 1e9)

    def _entries(self) -> list[Path]:
        return sorted(self._folder.glob("*.json"))

    def _sync_folder(self) -> None:
        descriptor = os.open(self._folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _text(key: bytes | None) -> str | None:
    return key.hex() if key is not None else None


def _decode(body: bytes) -> list[Message]:
    return [(topic, bytes.fromhex(key) if key is not None else None, value.encode())
            for topic, key, value in orjson.loads(body)]
