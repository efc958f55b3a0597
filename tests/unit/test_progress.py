"""PartitionProgress: a partition with messages waiting and no progress for a minute is reported, once."""

from aggregations.progress import PartitionProgress, Position


def test_a_partition_that_does_not_move_with_messages_waiting_is_reported_once_after_the_limit():
    progress = PartitionProgress(stall_after_s=60)
    assert progress.observe(0, {0: Position(10, 15), 1: Position(3, 9)}, False) == []
    assert progress.observe(59, {0: Position(10, 15), 1: Position(4, 9)}, False) == []
    assert progress.observe(60, {0: Position(10, 15), 1: Position(4, 9)}, False) == [0]
    assert progress.stalled() == [0]
    assert progress.observe(200, {0: Position(10, 15), 1: Position(4, 9)}, False) == [1]  # 0: reported already
    assert progress.stalled() == [0, 1]


def test_moving_catching_up_or_waiting_on_the_database_is_not_a_stall():
    progress = PartitionProgress(stall_after_s=60)
    progress.observe(0, {0: Position(10, 15), 1: Position(7, 7), 2: Position(1, 5)}, False)
    # 0 moved, 1 has nothing waiting (its highwater grows only when it moves too), 2 waits on a failing insert
    assert progress.observe(61, {0: Position(11, 15), 1: Position(7, 7), 2: Position(1, 5)}, False) == [2]
    progress = PartitionProgress(stall_after_s=60)
    progress.observe(0, {2: Position(1, 5)}, False)
    assert progress.observe(61, {2: Position(1, 5)}, True) == []
    assert progress.observe(100, {2: Position(1, 5)}, False) == []  # the minute starts again after the outage
    assert progress.observe(121, {2: Position(1, 5)}, False) == [2]


def test_a_stalled_partition_that_moves_or_is_revoked_is_no_longer_stalled_and_can_be_reported_again():
    progress = PartitionProgress(stall_after_s=60)
    progress.observe(0, {0: Position(10, 15), 1: Position(2, 4)}, False)
    assert progress.observe(60, {0: Position(10, 15), 1: Position(2, 4)}, False) == [0, 1]
    assert progress.observe(70, {0: Position(12, 15)}, False) == []  # 0 moved, 1 revoked
    assert progress.stalled() == []
    assert progress.observe(80, {0: Position(12, 15), 1: Position(2, 4)}, False) == []  # 1 again: a new minute
    assert progress.observe(129, {0: Position(12, 15), 1: Position(2, 4)}, False) == []
    assert progress.observe(130, {0: Position(12, 15), 1: Position(2, 4)}, False) == [0]  # a minute since it moved
    assert progress.observe(140, {0: Position(12, 15), 1: Position(2, 4)}, False) == [1]
    assert progress.stalled() == [0, 1]


class HeldBackConsumer:
    """Faust's consumer as the worker reads it, holding partition 1 paused with 40 messages waiting."""

    def __init__(self, topic: str) -> None:
        import faust
        self.tps = [faust.types.TP(topic, p) for p in range(3)]
        self._committed_offset = {self.tps[0]: 100, self.tps[1]: 7}
        self.flow_active = True
        self._active_partitions, self._paused_partitions, self._buffered_partitions = {self.tps[0]}, {self.tps[1]}, set()

    def assignment(self):
        return set(self.tps[:2])

    def highwater(self, tp):
        return 100 if tp.partition == 0 else None  # partition 1 was never fetched

    async def highwaters(self, *tps):
        return {tp: (100 if tp.partition == 0 else 47) for tp in tps}

    async def position(self, tp):
        raise AssertionError("the committed offset is known")


def test_the_worker_reports_a_partition_held_and_never_fetched_with_the_consumers_state(tmp_path, caplog):
    import asyncio
    import logging

    from prometheus_client import CollectorRegistry

    from aggregations.metrics import WorkerMetrics
    from aggregations.worker import Worker
    from ingest.settings import Settings

    registry = CollectorRegistry()
    worker = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(registry))
    worker.app.consumer = HeldBackConsumer(worker.topic.get_topic_name())
    worker._progress = PartitionProgress(stall_after_s=0.0)
    with caplog.at_level(logging.WARNING, logger="aggregations.worker"):
        asyncio.run(worker._watch_progress())
        assert worker._lag() == {0: 0, 1: 40}  # 1: never fetched, so its end comes from the broker
        assert not caplog.records
        asyncio.run(worker._watch_progress())
    assert registry.get_sample_value("vidpulse_worker_stalled_partitions") == 1
    assert registry.get_sample_value("vidpulse_worker_partition_stalls_total") == 1
    [line] = [record.getMessage() for record in caplog.records]
    assert "partition 1 of" in line and "40 messages waiting" in line and "next offset 7" in line
    assert "active_partitions=False, paused_partitions=True, buffered_partitions=False" in line


class LeaderLostConsumer(HeldBackConsumer):
    """Partition 0's fetcher last heard highwater 100 before its leader died; partition 2 was revoked meanwhile."""

    def highwater(self, tp):
        if tp.partition == 2:
            raise AssertionError("Partition is not assigned")  # aiokafka's own check
        return super().highwater(tp)

    async def highwaters(self, *tps):
        return {tp: 130 for tp in tps}  # the broker's end offsets: 30 more on partition 0 since


def test_caught_up_takes_the_brokers_newer_end_and_counts_the_unknown_as_behind(tmp_path):
    """Caught up means closing sessions by the wall clock: an old highwater (a dead leader) or a revoked
    partition must never make a partition with messages waiting look caught up."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from aggregations.metrics import WorkerMetrics
    from aggregations.worker import Worker
    from ingest.settings import Settings

    worker = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(CollectorRegistry()))
    worker.app.consumer = LeaderLostConsumer(worker.topic.get_topic_name())
    assert worker._caught_up(0, 100)  # by the fetches' highwater, before the broker was asked
    assert not worker._caught_up(1, 7)  # never fetched, end not asked yet: unknown
    asyncio.run(worker._sample_offsets())
    assert not worker._caught_up(0, 100) and worker._caught_up(0, 130)
    assert not worker._caught_up(2, 500)  # revoked meanwhile: no exception, and not caught up
