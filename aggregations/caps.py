"""A cap on distinct values per dimension, per account and UTC day, for the dimensions players choose.

Without it, a flood of junk video ids (or players, or page hosts) would blow
up the minute pre-aggregations, whose rows multiply with every distinct
value. The first ``cap`` values of a day are admitted and remembered in
ClickHouse (written before the rows that use them, so a replay decides the
same way); later new values fold into "(other)".

Several workers admit independently, so a day can exceed the cap by the
values admitted concurrently (at most one flush's worth per worker).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ingest.models import EnrichedBatch

CAPPED = ("video", "player", "domain")
OTHER = "(other)"
Key = tuple[str, dt.date, str]  # account, day, dimension
Loader = Callable[[list[Key]], Awaitable[dict[Key, set[str]]]]


class DimensionCaps:
    def __init__(self, cap: int, load: Loader, on_fold: Callable[[str], None]) -> None:
        self._cap, self._load, self._on_fold = cap, load, on_fold
        self._known: dict[Key, set[str]] = {}

    async def apply(self, batches: list[EnrichedBatch]) -> tuple[list[tuple[EnrichedBatch, dict[str, str]]],
                                                               list[tuple[str, dt.date, str, str]]]:
        """Each batch with capped values folded (and what was folded), plus the values admitted now."""
        keys = [_keys(batch) for batch in batches]
        self._forget_old_days([batch_keys[0][1] for batch_keys in keys])
        await self._load_missing({key for batch_keys in keys for key in batch_keys})
        admitted: list[tuple[str, dt.date, str, str]] = []
        result = []
        for batch, batch_keys in zip(batches, keys, strict=True):
            changes: dict[str, Any] = {}
            for key in batch_keys:
                value = getattr(batch, key[2])
                known = self._known[key]
                if value in known:
                    continue
                if len(known) < self._cap:
                    known.add(value)
                    admitted.append((*key, value))
                else:
                    changes[key[2]] = OTHER
                    self._on_fold(key[2])
            folded = {name: getattr(batch, name) for name in changes}
            result.append((msgspec.structs.replace(batch, **changes) if changes else batch, folded))
        return result, admitted

    async def _load_missing(self, keys: set[Key]) -> None:
        missing = sorted(key for key in keys if key not in self._known)
        if missing:
            loaded = await self._load(missing)
            for key in missing:
                self._known[key] = loaded.get(key, set())

    def _forget_old_days(self, days: list[dt.date]) -> None:
        """Keeps today and yesterday (late beacons); older days leave memory."""
        if not days:
            return
        newest = max(days)
        for key in [key for key in self._known if key[1] < newest - dt.timedelta(days=1)]:
            del self._known[key]


def _day(batch: EnrichedBatch) -> dt.date:
    return _utc_day(batch.received_at_ms // 86_400_000)


@functools.lru_cache(maxsize=64)
def _utc_day(days_since_epoch: int) -> dt.date:
    """A batch's day by its number: every batch of a day shares one date, not a datetime made per batch."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=days_since_epoch)


def _keys(batch: EnrichedBatch) -> list[Key]:
    day = _day(batch)
    return [(batch.account, day, name) for name in CAPPED]
