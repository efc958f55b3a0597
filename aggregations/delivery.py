"""Faust's hand-over of each fetched message to the agents, without four asyncio tasks per message (issue 12).

faust-streaming 0.15.3's fetcher (``Consumer._drain_messages``) hands every message to the agents' queues
through ``self.wait_first(callback(message), self.suspend_flow.wait())``: four tasks (the delivery, the flow's
suspension, the service's stop and its crash), an ``asyncio.wait`` and three cancellations for each message.
That was half of what Faust cost per message: an agent that only decodes went from 140,000 to 300,000 events/s
without it (bench/README.md, "7 December, evening").

While the flow runs, the delivery is awaited in place instead. What Faust's race guarded against: a delivery
blocked on a full queue when a rebalance suspends the flow is abandoned. Awaited in place, it ends once the flow
resumes, in the new generation's queue, where Faust's stream skips it as another generation's message
(``faust/streams.py``, ``message.generation_id``); the worker keeps that skip's acknowledgement away from commits
(``Worker._guard_acks``) and admits a partition's offsets only in turn (``aggregations/sequence.py``). Stopping
the consumer cancels the fetcher's task, and with it a delivery awaited in place.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mode.services import WaitResults

_EVENT_WAIT = asyncio.Event.wait.__code__


def deliver_in_place(consumer: Any) -> None:
    """Wraps ``wait_first`` of Faust's consumer instance: the fetcher's race is awaited in place while the flow
    runs; any other call, and the race while the flow is suspended, go to Faust's own."""
    faust_wait_first = consumer.wait_first
    suspended: asyncio.Event = consumer.suspend_flow

    async def wait_first(*coros: Any, timeout: float | None = None) -> WaitResults:
        if len(coros) == 2 and timeout is None and _waits_on(coros[1], suspended) and not suspended.is_set():
            coros[1].close()  # never started: closing it spares the "never awaited" warning
            return WaitResults([coros[0]], [await coros[0]], False)
        return await faust_wait_first(*coros, timeout=timeout)

    consumer.wait_first = wait_first


def _waits_on(awaitable: Any, event: asyncio.Event) -> bool:
    """Whether ``awaitable`` is ``event.wait()``, not started yet: the second half of the fetcher's race."""
    frame = getattr(awaitable, "cr_frame", None)
    return (getattr(awaitable, "cr_code", None) is _EVENT_WAIT and frame is not None
            and frame.f_locals.get("self") is event)
