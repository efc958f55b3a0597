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
none was committed).

* A message past it is set aside unacknowledged and the consumer is sent back to the expected offset, as
  many times as stale messages keep coming. The seek also takes back what Faust counted as done from the
  expected offset on (its acknowledgements of the messages its stream skipped, and its "gaps"), so that
  no commit runs ahead of the sink.
* A message before it, once the sink holds the partition, is a second copy (a seek fetched it again): the
  sink already has it, pending or written, so it is dropped.
* The only way past a missing offset is the log itself: when the partition's log now starts after the
  expected offset (retention deleted it before it was read), the loss is logged as an error and the
  consumer goes on from where the log starts.
* Only the sinks' own acknowledgements count towards a commit (``Worker._guard_acks``): Faust's stream
  also acknowledges the messages it skips, which would let a commit run past messages never written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
RECHECK_S = 10.0


class OffsetSequencer:
    """Decides, message by message, whether the sink may take it (see the module docstring)."""

    def __init__(self, next_offset: Callable[[int], int | None], start: Callable[[int], Awaitable[int | None]],
                 log_start: Callable[[int], Awaitable[int | None]], seek: Callable[[int, int], Awaitable[None]],
                 on_rewind: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic) -> None:
        self._next_offset, self._start, self._log_start, self._seek = next_offset, start, log_start, seek
        self._on_rewind, self._clock = on_rewind, clock
        self._starts: dict[int, int] = {}  # asked once per assignment (an unanswered ask is asked again)
        self._checked: dict[int, tuple[int, float, int]] = {}  # partition -> (hole, when the log was asked, its start)
        self._epochs: dict[int, int] = {}  # bumped at each revocation: an answer awaited across one is stale

    async def admit(self, partition: int, offset: int) -> bool:
        """True: hand the message to the sink. False: drop it; if it was ahead of the partition's position the
        consumer has been sent back, and the message will come again in turn."""
        epoch = self._epochs.get(partition, 0)
        expected = self._next_offset(partition)
        if expected is not None and offset < expected:
            return False  # a second copy of a message the sink holds
        if expected is None:
            expected = self._starts.get(partition)
            if expected is None:
                expected = await self._start(partition)
                if self._epochs.get(partition, 0) != epoch:
                    return False  # revoked while asking: the message belongs to a finished assignment
                if expected is None:
                    return True  # nothing to hold it to: where the consumer starts is the start
                self._starts[partition] = expected
            if offset < expected:
                return True  # a replay of committed messages, which the sink cuts as it cut them before
        if offset == expected:
            self._checked.pop(partition, None)
            return True
        return await self._rewind(partition, offset, expected, epoch)

    async def _rewind(self, partition: int, offset: int, expected: int, epoch: int) -> bool:
        """``offset`` is past ``expected``: back to it, unless the log no longer holds it (asked once per hole,
        and again every RECHECK_S while the hole stays: retention may delete it meanwhile)."""
        checked = self._checked.get(partition)
        if checked is None or checked[0] != expected or self._clock() - checked[1] > RECHECK_S:
            log_start = await self._log_start(partition)
            if self._epochs.get(partition, 0) != epoch:
                return False
            if checked is None or checked[0] != expected:
                log.warning("partition %d: the consumer delivered offset %d while %d was expected; seeking back to "
                            "%d (faust-streaming's prefetch across a rebalance)", partition, offset, expected, expected)
            if log_start is not None:
                self._checked[partition] = (expected, self._clock(), log_start)
        else:
            log_start = checked[2]
        if log_start is not None and log_start > expected:
            log.error("partition %d: offsets %d to %d are no longer in the log (retention deleted them before they "
                      "were read): those messages are not counted", partition, expected, min(offset, log_start) - 1)
            if offset <= log_start:
                return True
            expected = log_start
        self._on_rewind()
        await self._seek(partition, expected)
        return False

    def forget(self, partitions: set[int]) -> None:
        """On revocation: a new assignment starts from its committed offsets."""
        for partition in partitions:
            self._checked.pop(partition, None)
            self._starts.pop(partition, None)
            self._epochs[partition] = self._epochs.get(partition, 0) + 1
