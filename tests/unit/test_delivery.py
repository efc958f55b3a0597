"""Faust's fetcher hands a message to the agents in place while the flow runs (aggregations/delivery.py)."""

import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import faust.transport.consumer

from aggregations.delivery import deliver_in_place
from aggregations.worker import faust_app
from ingest.settings import Settings


class Delivery:
    """A stand-in for ``callback(message)``: records how many tasks were running while it ran."""

    def __init__(self) -> None:
        self.tasks_seen: int | None = None

    async def __call__(self) -> str:
        self.tasks_seen = len(asyncio.all_tasks())
        return "delivered"


def test_faust_still_races_each_delivery_against_the_flows_suspension() -> None:
    # the call the wrapper recognises; a Faust upgrade that changes it would silently lose the fast path
    source = re.sub(r"\s+", " ", inspect.getsource(faust.transport.consumer.Consumer._drain_messages))
    assert "await self.wait_first( callback(message), self.suspend_flow.wait() )" in source


def test_a_delivery_while_the_flow_runs_is_awaited_in_place_without_tasks(tmp_path: Path) -> None:
    async def scenario() -> None:
        consumer = faust_app(Settings(data_dir=tmp_path), "127.0.0.1:1").consumer
        deliver_in_place(consumer)
        delivery = Delivery()
        suspension = consumer.suspend_flow.wait()
        winners, results, stopped = await consumer.wait_first(delivery(), suspension)
        assert (results, stopped) == (["delivered"], False)
        assert delivery.tasks_seen == 1  # only this test's own task: Faust's race makes four more
        assert suspension.cr_frame is None  # closed, not left to warn that it was never awaited

    asyncio.run(scenario())


def test_while_the_flow_is_suspended_fausts_own_race_runs(tmp_path: Path) -> None:
    async def scenario() -> None:
        consumer = faust_app(Settings(data_dir=tmp_path), "127.0.0.1:1").consumer
        deliver_in_place(consumer)
        consumer.stop_flow()  # what Faust does when a rebalance starts
        delivery = Delivery()
        await consumer.wait_first(delivery(), consumer.suspend_flow.wait())
        assert delivery.tasks_seen is None or delivery.tasks_seen > 1  # abandoned, or run in a task of its own

    asyncio.run(scenario())


def test_other_waits_go_to_faust(tmp_path: Path) -> None:
    async def scenario() -> None:
        consumer = faust_app(Settings(data_dir=tmp_path), "127.0.0.1:1").consumer
        calls: list[tuple[Any, ...]] = []
        faust_wait_first = consumer.wait_first

        async def recorded(*coros: Any, timeout: float | None = None) -> Any:
            calls.append(coros)
            return await faust_wait_first(*coros, timeout=timeout)

        consumer.wait_first = recorded
        deliver_in_place(consumer)
        other = asyncio.Event()
        other.set()
        await consumer.wait_first(Delivery()(), other.wait())  # a race on another event
        await consumer.wait_first(Delivery()(), consumer.suspend_flow.wait(), timeout=5)  # with a deadline
        await consumer.wait_first(Delivery()())  # one awaitable
        assert len(calls) == 3

    asyncio.run(scenario())
