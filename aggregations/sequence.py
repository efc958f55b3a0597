"""Every offset of a partition once and in order for the sink, whatever the consumer library delivers.

faust-streaming can hand the agent a message from past the partition's position after a rebalance and then
never deliver the ones in between (faust-streaming issues #216 and #221): a batch prefetched before the
rebalance is drained after it, its read offset moves past messages its stream skipped while the flow was
suspended, and it drops any message below that read offset from then on. Seen in the fault suite: a worker
that kept its partition through a rebalance resumed two offsets on; one that took over a killed worker's
partition started two offsets past the committed one. Those batches were counted only after the next
rebalance, and then again in a differently cut batch, since the sink cuts batches by offset.

So the worker admits a message only at the offset it expects: the sink's next offset, or, before the sink
has read one since the assignment, where the assignment starts (the committed offset, or the log's start when
none was committed). A message past it is set aside unacknowledged and
the consumer is sent back to the expected offset, as many times as stale messages keep coming. Faust also
counts the offsets it jumped over as done (its "gaps", which let a commit run ahead of the sink); those from
the expected offset on are cleared at each seek.

Limit: if the expected offset is no longer in the log (retention deleted it before it was read), seeking
back cannot help; after GIVE_UP_S of trying, the message is admitted and the loss logged as an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
GIVE_UP_S = 30.0


class OffsetSequencer:
    """Decides, message by message, whether the sink may take it (see the module docstring)."""

    def __init__(self, next_offset: Callable[[int], int | None], start: Callable[[int], Awaitable[int | None]],
                 seek: Callable[[int, int], Awaitable[None]], on_rewind: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._next_offset, self._start, self._seek = next_offset, start, seek
        self._on_rewind, self._clock = on_rewind, clock
        self._rewinding: dict[int, tuple[int, float]] = {}  # partition -> (offset sought, since)
        self._starts: dict[int, int | None] = {}  # asked once per assignment

    async def admit(self, partition: int, offset: int) -> bool:
        """True: hand the message to the sink. False: it is ahead of the partition's position; the consumer
        has been sent back, and the message will come again in turn."""
        expected = self._next_offset(partition)
        if expected is None:
            if partition not in self._starts:
                self._starts[partition] = await self._start(partition)
            expected = self._starts[partition]
        if expected is None or offset <= expected:  # behind: the sink itself handles a consumer moved back
            self._rewinding.pop(partition, None)
            return True
        sought, since = self._rewinding.get(partition, (None, self._clock()))
        if sought != expected:
            since = self._clock()
            log.warning("partition %d: the consumer delivered offset %d while %d was expected; seeking back to %d "
                        "(faust-streaming's prefetch across a rebalance)", partition, offset, expected, expected)
        elif self._clock() - since > GIVE_UP_S:
            log.error("partition %d: offsets %d to %d never came after %.0f s of seeking back (deleted by retention "
                      "before they were read?); going on from %d: those messages are not counted",
                      partition, expected, offset - 1, GIVE_UP_S, offset)
            self._rewinding.pop(partition, None)
            return True
        self._rewinding[partition] = (expected, since)
        self._on_rewind()
        await self._seek(partition, expected)
        return False

    def forget(self, partitions: set[int]) -> None:
        """On revocation: a new assignment starts from its committed offsets."""
        for partition in partitions:
            self._rewinding.pop(partition, None)
            self._starts.pop(partition, None)
