"""Which assigned partitions have stopped moving: the consumer's lag for every assigned partition, read or not,
and the partitions whose lag stays above zero while their position stays put.

Why: a worker can hold a partition and never read it (seen once in the fault suite's history: a survivor of a
worker kill was assigned a moved partition and read nothing from it until the next rebalance). Before this,
the lag gauge covered only partitions the sink had read since its assignment, so such a partition was
invisible: no lag, no alert. Nothing is lost while it sits (its offsets are not committed), but the numbers
stop being fresh. This module only observes; the worker logs and counts what it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

# A partition with messages waiting and no progress for this long is stalled. Longer than an insert may take
# (INSERT_TIMEOUT_S, 60 s), so that a slow write does not count either, even where it was not seen as slow.
STALL_AFTER_S = 90.0


@dataclass(frozen=True, slots=True)
class Position:
    """One assigned partition at one moment: where its consumer is and where the log ends."""

    next_offset: int
    highwater: int

    @property
    def lag(self) -> int:
        """Messages waiting; never negative (a highwater read before the position can trail it)."""
        return max(0, self.highwater - self.next_offset)


@dataclass(slots=True)
class _Track:
    offset: int
    since_s: float
    stalled: bool = False


class PartitionProgress:
    """Fed a snapshot of every assigned partition now and then; says which ones just stalled."""

    def __init__(self, stall_after_s: float = STALL_AFTER_S) -> None:
        self.stall_after_s = stall_after_s
        self._tracks: dict[int, _Track] = {}

    def observe(self, now_s: float, positions: dict[int, Position], waiting_on_database: bool) -> list[int]:
        """The partitions that became stalled with this snapshot (each is reported once per episode).

        ``waiting_on_database``: the sink is retrying a failed write; every partition waits for it then, and
        that is the database's outage (its own metrics and alerts), not a stall of the consumer."""
        for gone in self._tracks.keys() - positions.keys():  # revoked: a later assignment starts afresh
            del self._tracks[gone]
        newly = []
        for partition, position in positions.items():
            track = self._tracks.get(partition)
            if track is None or track.offset != position.next_offset or position.lag == 0 or waiting_on_database:
                self._tracks[partition] = _Track(position.next_offset, now_s)
                continue
            if not track.stalled and now_s - track.since_s >= self.stall_after_s:
                track.stalled = True
                newly.append(partition)
        return sorted(newly)

    def restart(self) -> None:
        """Forgets every partition's history: after a rebalance, waiting is the rebalance's, not a stall."""
        self._tracks.clear()

    def stalled(self) -> list[int]:
        """The partitions stalled now (reported, and not moved or revoked since): the gauge's value."""
        return sorted(partition for partition, track in self._tracks.items() if track.stalled)
