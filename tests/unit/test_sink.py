"""The sink's contract with a recording writer: ack after write, dedup, same batch on replay."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from aggregations import sessions
from aggregations.clickhouse import ClickHouseError
from aggregations.metrics import WorkerMetrics
from aggregations.rows import BatchRange, SinkRows, utc
from aggregations.sink import EventSink, SinkConfig
from ingest.models import EnrichedBatch, EnrichedEvent

M = 60_000
BASE = 1_700_000_000_000 - 1_700_000_000_000 % M


def batch(session_key: int, *events: tuple[str, str, int], is_bot: bool = False, video: str = "v") -> EnrichedBatch:
    return EnrichedBatch(
        account="a", player="p", session=f"s{session_key:08d}", session_key=session_key, fingerprint=session_key * 7,
        video=video, live=False, tz="", user="", domain="", duration_s=None, country="ZZ", continent="",
        subdivision="", device_type="desktop", os="", browser="", is_bot=is_bot, received_at_ms=BASE,
        events=[EnrichedEvent(id=i, type=t, ts=when, event_time_ms=when, watched_ms=1000) for i, t, when in events])


class RecordingWriter:
    """Keeps what a ClickHouse would keep: raw blocks deduplicated by token, session-minutes as a set."""

    def __init__(self, fail_writes: int = 0) -> None:
        self.admitted: set[tuple] = set()
        self.exits: set[tuple] = set()
        self.batches: dict[tuple[int, int], int] = {}
        self.blocks: dict[str, list[tuple]] = {}
        self.session_minutes: set[tuple] = set()
        self.fail_writes = fail_writes

    async def recent_sessions(self, partitions, since_ms, oldest_event_ms):
        found: dict = {}
        for row in self.raw_rows():
            when, received = row[6], row[8]  # milliseconds: DateTime64(3) ticks
            if row[-3] in partitions and when >= oldest_event_ms and since_ms <= max(when, received) and not row[23]:
                entry = found.setdefault(row[2], [row[0], row[2], row[3], tuple(row[9:21]), [], row[-3]])
                entry[4].append((row[4], row[5], when, row[-2]))
        return [tuple(entry) for entry in found.values()]

    async def dimension_values(self, keys):
        found: dict = {}
        for account, day, dimension, value in self.admitted:
            if (account, day, dimension) in keys:
                found.setdefault((account, day, dimension), set()).add(value)
        return found

    async def admit_dimension_values(self, rows):
        self.admitted |= set(rows)

    async def record_batch(self, batch: BatchRange) -> None:
        self.batches[(batch.partition, batch.first_offset)] = batch.last_offset

    async def recorded_batches(self, group, topic, partition, from_offset):
        return {first: last for (part, first), last in self.batches.items() if part == partition and first >= from_offset}

    async def session_history(self, partition, before_offset, keys):
        history: dict[int, list] = {}
        wanted = {key for _, key in keys}
        for row in self.raw_rows():
            key, event_id, kind, part, offset = row[2], row[4], row[5], row[-3], row[-2]
            if key in wanted and not (part == partition and offset >= before_offset):
                history.setdefault(key, []).append((event_id, kind, row[6]))
        return history

    async def write(self, rows: SinkRows, batch: BatchRange | None) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("database down")
        if batch is not None:
            self.blocks.setdefault(batch.token, list(rows.raw))
        self.session_minutes |= {(r[1], r[-3]) for r in rows.session_minutes if not r[-1]}
        self.exits |= {(r[1], r[-3]) for r in rows.session_minutes if r[-1]}

    def raw_rows(self) -> list[tuple]:
        return [row for block in self.blocks.values() for row in block]

    def event_ids(self) -> list[str]:
        return sorted(row[4] for row in self.raw_rows())


class SettlingSink(EventSink):
    """Each call returns once the batches it flushed are written: these tests look at the rows right after.
    The writes running beside the agent have tests of their own (test_writes_overlap_...)."""

    async def add(self, *args, **kwargs):
        await super().add(*args, **kwargs)
        await self.settled()

    async def flush_due(self):
        await super().flush_due()
        await self.settled()


class Harness:
    def __init__(self, writer: RecordingWriter, max_events: int = 1000, grace_ms: int = 0, cap: int = 100) -> None:
        self.acked: list[int] = []
        self.now_ms = BASE + 100 * M
        config = SinkConfig("g", "t", session_timeout_ms=M, close_grace_ms=grace_ms, flush_interval_s=3600,
                            flush_max_events=max_events, dimension_cap_per_day=cap)

        async def ack(handle):
            self.acked.append(handle)

        self.sink = SettlingSink(writer, config, WorkerMetrics(CollectorRegistry()), ack=ack,
                                 caught_up=lambda partition, offset: True, clock_ms=lambda: self.now_ms)


def run(coro):
    return asyncio.run(coro)


def test_acks_only_after_the_write():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=2)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE)), handle=0)
        assert harness.acked == [] and writer.blocks == {}
        await harness.sink.add(0, 1, batch(1, ("2", "heartbeat", BASE + 10_000)), handle=1)

    run(scenario())
    assert harness.acked == [0, 1]
    assert writer.event_ids() == ["1", "2"]


def test_failed_write_is_retried_not_skipped(monkeypatch):
    monkeypatch.setattr("aggregations.sink.RETRY_BACKOFF_S", (0,))
    writer = RecordingWriter(fail_writes=3)
    harness = Harness(writer, max_events=1)
    run(harness.sink.add(0, 0, batch(1, ("1", "view", BASE)), handle=0))
    assert harness.acked == [0]
    assert writer.event_ids() == ["1"]


def test_retried_events_are_counted_once():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)

    async def scenario():
        for offset in range(3):  # the same beacon batch published three times
            await harness.sink.add(0, offset, batch(1, ("1", "view", BASE), ("2", "heartbeat", BASE + 1)), offset)

    run(scenario())
    assert writer.event_ids() == ["1", "2"]
    assert harness.acked == [0, 1, 2]


def test_retry_after_restart_is_caught_from_history():
    writer = RecordingWriter()
    run(Harness(writer, max_events=1).sink.add(0, 0, batch(1, ("1", "view", BASE)), 0))
    # a new worker (empty memory) sees the client's retry of the same events
    run(Harness(writer, max_events=1).sink.add(0, 1, batch(1, ("1", "view", BASE)), 1))
    assert writer.event_ids() == ["1"]


def test_replay_after_crash_cuts_the_same_batch_and_writes_it_once():
    writer = RecordingWriter()
    first = Harness(writer, max_events=3)
    messages = [batch(k, (f"{k}", "view", BASE + k)) for k in range(1, 6)]

    async def crashed_run():
        for offset, message in enumerate(messages[:3]):
            await first.sink.add(0, offset, message, offset)

    run(crashed_run())
    assert writer.batches == {(0, 0): 2}
    # Crash after the write but before the commit: the replay restarts at offset 0 with
    # a smaller size limit, yet must cut [0, 2] again so the token matches.
    replay = Harness(writer, max_events=1)

    async def replayed_run():
        for offset, message in enumerate(messages):
            await replay.sink.add(0, offset, message, offset)
        await replay.sink.flush_all()

    run(replayed_run())
    assert writer.event_ids() == ["1", "2", "3", "4", "5"]
    assert replay.acked == [0, 1, 2, 3, 4]
    assert sorted(writer.blocks) == ["g/t/0/0-2", "g/t/0/3-3", "g/t/0/4-4"]


def test_replay_chains_through_every_batch_cut_before():
    writer = RecordingWriter()
    messages = [batch(k, (f"{k}", "view", BASE + k)) for k in range(1, 8)]

    async def run_with(limit, count):
        harness = Harness(writer, max_events=limit)
        for offset, message in enumerate(messages[:count]):
            await harness.sink.add(0, offset, message, offset)
        await harness.sink.flush_all()

    run(run_with(2, 5))  # cuts [0-1] [2-3] [4-4], then dies before committing anything
    run(run_with(3, 7))  # replays from 0 with another limit: must cut [0-1] [2-3] [4-4] again
    assert sorted(writer.blocks) == ["g/t/0/0-1", "g/t/0/2-3", "g/t/0/4-4", "g/t/0/5-6"]
    assert writer.event_ids() == [str(k) for k in range(1, 8)]


def test_bots_are_kept_raw_but_not_concurrent():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)
    run(harness.sink.add(0, 0, batch(9, ("1", "view", BASE), is_bot=True), 0))
    assert writer.event_ids() == ["1"]
    assert writer.session_minutes == set()


def test_a_bot_rebuilt_after_a_restart_still_counts_nowhere():
    writer = RecordingWriter()
    run(Harness(writer, max_events=1).sink.add(0, 0, batch(9, ("1", "view", BASE), ("2", "stop", BASE + 1), is_bot=True), 0))
    fresh = Harness(writer, max_events=1)

    async def scenario():
        await fresh.sink.add(0, 1, batch(9, ("3", "view", BASE + 2 * M), is_bot=True), 1)
        await fresh.sink.flush_due()

    run(scenario())
    assert writer.event_ids() == ["1", "2", "3"]
    assert writer.session_minutes == set() and writer.exits == set()


def test_sessions_left_open_by_a_previous_owner_are_closed_after_reassignment():
    writer = RecordingWriter()
    first = Harness(writer, max_events=1)
    first.now_ms = BASE + 30_000  # still open when this worker stops
    run(first.sink.add(0, 0, batch(1, ("1", "view", BASE + 30_000)), 0))
    assert {int(m.timestamp() * 1000) for m, _ in writer.session_minutes} == {BASE}
    second = Harness(writer, max_events=1)
    second.now_ms = BASE + 5 * M

    async def scenario():
        await second.sink.reload({0})
        await second.sink.flush_due()
        assert {int(m.timestamp() * 1000) for m, _ in writer.session_minutes} == {BASE}  # the replay may end it
        second.now_ms += M
        await second.sink.flush_due()

    run(scenario())
    assert {int(m.timestamp() * 1000) for m, _ in writer.session_minutes} == {BASE, BASE + M}


def test_a_reloaded_session_waits_for_the_replay_of_what_its_previous_owner_never_wrote():
    """A worker killed with a batch unwritten: its stop is replayed to the next owner after the reload. Closed
    by the timer at once, the session got a full timeout stretch into the next minute (ccu one too high there,
    seen in the fault suite); the replayed stop ends it inside its first minute."""
    writer = RecordingWriter()
    first = Harness(writer, max_events=1)
    first.now_ms = BASE + 30_000
    run(first.sink.add(0, 0, batch(1, ("1", "view", BASE + 30_000)), 0))  # written; the stop at offset 1 is not
    second = Harness(writer, max_events=1)
    second.now_ms = BASE + 5 * M  # an old session by event time: only the takeover keeps it open

    async def scenario():
        await second.sink.reload({0})
        await second.sink.flush_due()  # the timer ticks before the replay is read
        second.now_ms += 2_000
        await second.sink.add(0, 1, batch(1, ("2", "stop", BASE + 40_000)), 1)
        second.now_ms += 2 * M
        await second.sink.flush_due()

    run(scenario())
    assert {int(m.timestamp() * 1000) for m, _ in writer.session_minutes} == {BASE}


def test_silent_session_is_closed_by_the_timer():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE + 30_000)), 0)
        harness.now_ms += M - 1  # silent by event time, not yet by arrival: it stays open
        await harness.sink.flush_due()
        assert len(writer.session_minutes) == 1
        harness.now_ms += 1
        await harness.sink.flush_due()

    run(scenario())
    minutes = sorted(minute for minute, _ in writer.session_minutes)
    assert [int(m.timestamp() * 1000) for m in minutes] == [BASE, BASE + M]


def test_late_beacons_of_one_session_are_not_closed_between_batches():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1, grace_ms=10_000)

    async def scenario():
        # an hour-old session delivered in two batches a moment apart; the stop is in the second
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE + 30_000)), 0)
        await harness.sink.flush_due()
        harness.now_ms += 50
        await harness.sink.add(0, 1, batch(1, ("2", "stop", BASE + 40_000)), 1)
        harness.now_ms += 20_000
        await harness.sink.flush_due()

    run(scenario())
    minutes = {int(minute.timestamp() * 1000) for minute, _ in writer.session_minutes}
    assert minutes == {BASE}  # the stop ended it inside its first minute: no timeout stretch into the next


def test_a_late_sender_gets_the_timeout_between_its_batches():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1, grace_ms=5_000)

    async def scenario():
        # a loaded sender: the second batch of an hour-old session comes 30 s after the first, well past the grace
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE + 30_000)), 0)
        harness.now_ms += 30_000
        await harness.sink.flush_due()
        await harness.sink.add(0, 1, batch(1, ("2", "stop", BASE + 40_000)), 1)
        harness.now_ms += M + 5_000
        await harness.sink.flush_due()

    run(scenario())
    minutes = {int(minute.timestamp() * 1000) for minute, _ in writer.session_minutes}
    assert minutes == {BASE}


def test_a_partition_with_an_unflushed_batch_closes_nothing_until_it_flushes():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=2)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE + 30_000)), 0)
        await harness.sink.add(0, 1, batch(2, ("1", "view", BASE + 30_000)), 1)  # flushes both
        harness.now_ms += 2 * M
        await harness.sink.add(0, 2, batch(1, ("2", "stop", BASE + 40_000)), 2)  # pending, not yet due
        await harness.sink.flush_due()
        assert {key for _, key in writer.session_minutes} == {1, 2} and len(writer.session_minutes) == 2

    run(scenario())


def test_silent_sessions_close_behind_another_partitions_and_up_to_the_first_still_heard():
    """A partition's flush walks the cache in order of arrival: another partition's silent session is passed
    over, not a stop; the walk ends at the first session heard from within the timeout, and every session
    behind it arrived later and stays open."""
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)  # every add flushes its partition
    sink = harness.sink

    async def scenario():
        await sink.add(1, 0, batch(10, ("1", "view", BASE + 30_000)), "p1")  # partition 1, heard first
        for offset, key, wait_ms in ((0, 1, 1_000), (1, 2, 1_000), (2, 3, 30_000)):
            harness.now_ms += wait_ms
            await sink.add(0, offset, batch(key, ("1", "view", BASE + 30_000)), key)
        harness.now_ms += M - 30_000  # 10, 1 and 2 silent for a minute or more; 3 for 30 s
        await sink.add(0, 3, batch(4, ("1", "view", BASE + 30_000)), 4)  # partition 0's flush closes its own
        assert set(sink._sessions) == {10, 3, 4}

    run(scenario())
    minutes = {(int(m.timestamp() * 1000), key) for m, key in writer.session_minutes}
    assert {(BASE + M, 1), (BASE + M, 2)} <= minutes  # their timeout stretches, written at the close
    assert not {(BASE + M, 3), (BASE + M, 10)} & minutes


def test_a_session_that_ends_before_its_first_frame_is_an_exit_at_its_view():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE + M + 5_000), ("2", "stop", BASE + 2 * M)), 0)
        await harness.sink.add(0, 1, batch(2, ("1", "view", BASE + 5_000), ("2", "first_frame", BASE + 6_000),
                                           ("3", "stop", BASE + 9_000)), 1)
        await harness.sink.add(0, 2, batch(3, ("1", "view", BASE + 3 * M)), 2)  # times out unstarted
        harness.now_ms += M
        await harness.sink.flush_due()

    run(scenario())
    assert {(int(m.timestamp() * 1000), key) for m, key in writer.exits} == {(BASE + M, 1), (BASE + 3 * M, 3)}


def test_unreadable_message_is_acknowledged_and_written_nowhere():
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)

    async def scenario():
        await harness.sink.add(0, 0, None, 0)
        await harness.sink.add(0, 1, batch(1, ("1", "view", BASE)), 1)

    run(scenario())
    assert harness.acked == [0, 1]
    assert writer.event_ids() == ["1"]


def test_a_rewound_consumer_replaces_the_pending_batch():
    writer = RecordingWriter()
    harness = Harness(writer)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE)), 0)
        await harness.sink.add(0, 1, batch(2, ("2", "view", BASE)), 1)
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE)), 10)  # delivered again after a seek
        await harness.sink.add(0, 1, batch(2, ("2", "view", BASE)), 11)
        await harness.sink.flush_all()

    run(scenario())
    assert harness.acked == [10, 11]
    assert sorted(writer.blocks) == ["g/t/0/0-1"]
    assert writer.event_ids() == ["1", "2"]


def test_new_values_beyond_the_daily_cap_fold_into_other_and_replay_folds_the_same():
    writer = RecordingWriter()
    messages = [batch(k, (f"{k}", "view", BASE + k), video=f"junk-{k}") for k in range(1, 6)]

    async def run_all(harness):
        for offset, message in enumerate(messages):
            await harness.sink.add(0, offset, message, offset)
        await harness.sink.flush_all()

    run(run_all(Harness(writer, max_events=2, cap=3)))
    videos = [row[9] for row in sorted(writer.raw_rows(), key=lambda r: r[4])]
    assert videos == ["junk-1", "junk-2", "junk-3", "(other)", "(other)"]
    folded = {row[4]: row[-1] for row in writer.raw_rows()}
    assert folded["4"] == {"video": "junk-4"} and folded["1"] == {}
    writer.blocks.clear()  # a replay from scratch with a fresh worker decides the same way
    run(run_all(Harness(writer, max_events=2, cap=3)))
    assert [row[9] for row in sorted(writer.raw_rows(), key=lambda r: r[4])] == videos


@pytest.mark.parametrize("revoked", [{0}, {0, 1}])
def test_revoked_partitions_drop_their_pending_batch(revoked):
    writer = RecordingWriter()
    harness = Harness(writer)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE)), 0)
        await harness.sink.forget(revoked)
        await harness.sink.flush_all()

    run(scenario())
    assert harness.acked == [] and writer.blocks == {}


def test_a_replay_after_reassignment_writes_the_replayed_events_again_not_as_duplicates():
    """The reload on assignment reads events_raw, which may hold a block whose views' parts were lost to the
    crash. The replay of that block must carry its events again (same block, same token), so every table
    that lacks it gets it; dropped as retried duplicates, they were lost."""
    class Capturing(RecordingWriter):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[tuple[str, list[str]]] = []

        async def write(self, rows: SinkRows, batch: BatchRange | None) -> None:
            if batch is not None:
                self.writes.append((batch.token, [row[4] for row in rows.raw]))
            await super().write(rows, batch)

    writer = Capturing()
    first = Harness(writer, max_events=1)
    first.now_ms = BASE + 30_000
    run(first.sink.add(0, 0, batch(1, ("1", "view", BASE), ("2", "heartbeat", BASE + 10_000)), 0))
    run(first.sink.add(0, 1, batch(2, ("1", "view", BASE + 1000)), 1))
    second = Harness(writer, max_events=1)
    second.now_ms = BASE + 40_000

    async def scenario():
        await second.sink.reload({0})  # both sessions, with all their stored events
        await second.sink.add(0, 1, batch(2, ("1", "view", BASE + 1000)), 1)  # the replay starts at offset 1
        await second.sink.add(0, 2, batch(1, ("2", "heartbeat", BASE + 10_000), ("3", "stop", BASE + 20_000)), 2)

    run(scenario())
    assert writer.writes[2][1] == ["1"]  # offset 1 again, in full
    assert writer.writes[2][0] == writer.writes[1][0]  # the same block token
    assert writer.writes[3][1] == ["3"]  # session 1's event 2 (offset 0, before the replay) is a retry


def test_a_reload_that_answers_after_the_replay_began_is_settled_against_it():
    """The reload runs beside the consumer: a worker that reads its first replayed batch before the reload's
    answer comes must still treat what the replay delivers again as new. Left unsettled, a reloaded session
    held those events as seen, dropped them as retries and never wrote their session-minutes (the fault
    suite's worker kills, once the worker decoded fast enough to win that race)."""
    class Capturing(RecordingWriter):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[list[str]] = []

        async def write(self, rows: SinkRows, batch: BatchRange | None) -> None:
            if batch is not None:
                self.writes.append([row[4] for row in rows.raw])
            await super().write(rows, batch)

    writer = Capturing()
    first = Harness(writer, max_events=1)
    first.now_ms = BASE + 30_000
    run(first.sink.add(0, 0, batch(1, ("1", "view", BASE)), 0))
    run(first.sink.add(0, 1, batch(2, ("1", "view", BASE + 1000)), 1))
    run(first.sink.add(0, 2, batch(3, ("1", "view", BASE + 2000), ("2", "heartbeat", BASE + 62_000)), 2))
    second = Harness(writer, max_events=1)
    second.now_ms = BASE + 70_000

    async def scenario():
        await second.sink.add(0, 1, batch(2, ("1", "view", BASE + 1000)), 1)  # the replay starts at offset 1
        await second.sink.reload({0})  # answers only now, with session 3's events of offset 2
        await second.sink.add(0, 2, batch(3, ("1", "view", BASE + 2000), ("2", "heartbeat", BASE + 62_000)), 2)

    run(scenario())
    # both replayed batches in full: the previous owner's session-minutes of them may never have been written
    assert writer.writes[3:] == [["1"], ["1", "2"]]


def test_the_sink_says_it_waits_on_the_database_while_a_call_fails_or_runs_long(monkeypatch):
    """What the stall detector reads: a partition held back by the database is not a stalled consumer."""
    monkeypatch.setattr("aggregations.sink.RETRY_BACKOFF_S", (0.05,))
    monkeypatch.setattr("aggregations.sink.SLOW_CALL_S", 0.2)
    harness = Harness(RecordingWriter(), max_events=1)
    seen = []

    async def observe_during(call):
        task = asyncio.ensure_future(harness.sink._retrying(call))
        await asyncio.sleep(0.1)
        seen.append(harness.sink.waiting_on_database)
        await asyncio.sleep(0.3)
        seen.append(harness.sink.waiting_on_database)
        await task
        seen.append(harness.sink.waiting_on_database)

    failures = iter([True, True, True, True, True, True, True, True, True, True, False])

    async def failing():
        if next(failures):
            raise ClickHouseError("refused")

    async def slow():
        await asyncio.sleep(0.5)

    run(observe_during(failing))
    run(observe_during(slow))
    assert seen == [True, True, False, False, True, False]  # failing at once; slow only past SLOW_CALL_S


def test_a_replaying_partitions_sessions_ahead_of_its_watermark_leave_the_walk_until_the_rest_is_silent(monkeypatch):
    """Replaying a backlog, a partition closes by its event-time watermark, and the sessions of the backlog's
    last minutes are ahead of it: silent by arrival, not by event time. The walk puts such a session behind
    the ones heard from since, so the next walks stop before it instead of visiting it again (each visit of
    every such session, twice a second, slowed a long catch-up threefold); it closes once it is reached."""
    writer = RecordingWriter()
    harness = Harness(writer, max_events=1)  # every add flushes its partition, walking the cache
    sink = harness.sink
    sink._caught_up = lambda partition, offset: False  # replaying: closes by the watermark
    visited: list[int] = []
    close = sessions.close

    def counting_close(state, now_ms, timeout_ms, grace_ms):
        visited.append(state.last_time_ms)
        return close(state, now_ms, timeout_ms, grace_ms)

    monkeypatch.setattr("aggregations.sink.sessions.close", counting_close)
    ahead = BASE + 10 * M + 30_000

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), 0)
        await sink.add(0, 1, batch(2, ("1", "view", ahead)), 1)  # the watermark is now its view
        harness.now_ms += M  # both silent by arrival
        await sink.add(0, 2, batch(3, ("1", "view", ahead)), 2)
        assert visited == [BASE, ahead] and list(sink._sessions) == [3, 2]  # 1 closed; 2 waits behind 3
        visited.clear()
        await sink.add(0, 3, batch(4, ("1", "view", ahead)), 3)
        assert visited == []  # the walk stopped at 3, heard from within the timeout, before reaching 2
        harness.now_ms += M  # everyone silent by arrival; the watermark moves past 2's stretch
        await sink.add(0, 4, batch(5, ("1", "view", ahead + 2 * M)), 4)

    run(scenario())
    assert 2 not in sink._sessions
    assert (utc(BASE + 11 * M), 2) in writer.session_minutes  # its stretch [ahead, ahead + timeout), written at close


class GatedWriter(RecordingWriter):
    """Holds the rows of the gated partitions' batches until their gate opens, then raises that partition's
    bug if it has one; notes the order batches were written in."""

    def __init__(self, gated: tuple[int, ...] = (0,)) -> None:
        super().__init__()
        self.gates = {partition: asyncio.Event() for partition in gated}
        self.bugs: dict[int, Exception] = {}
        self.written: list[tuple[int, int]] = []  # (partition, first offset)

    @property
    def gate(self) -> asyncio.Event:
        return self.gates[0]

    async def write(self, rows: SinkRows, batch: BatchRange | None) -> None:
        if batch is not None and batch.partition in self.gates:
            await self.gates[batch.partition].wait()
            if batch.partition in self.bugs:
                raise self.bugs[batch.partition]
        await super().write(rows, batch)
        if batch is not None:
            self.written.append((batch.partition, batch.first_offset))


def gated_sink(writer: GatedWriter, acked: list, max_events: int = 1, interval_s: float = 3600) -> EventSink:
    """By default every message flushes its partition; calls return without waiting for the write."""
    config = SinkConfig("g", "t", session_timeout_ms=M, close_grace_ms=0, flush_interval_s=interval_s,
                        flush_max_events=max_events)

    async def ack(handle):
        acked.append(handle)

    return EventSink(writer, config, WorkerMetrics(CollectorRegistry()), ack=ack,
                     caught_up=lambda partition, offset: True, clock_ms=lambda: BASE + 100 * M)


async def until(condition, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0)


def test_writes_overlap_across_partitions_and_keep_their_order_within_one():
    """While partition 0's rows wait on the database, partition 1's batches are built, written and acknowledged;
    partition 0's next batch waits for its last one, and its acknowledgements come after its writes, in order."""
    writer, acked = GatedWriter(), []
    sink = gated_sink(writer, acked)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        await sink.add(1, 0, batch(2, ("1", "view", BASE)), "p1-0")
        await sink.add(1, 1, batch(2, ("2", "heartbeat", BASE + 10_000)), "p1-1")
        await until(lambda: writer.written == [(1, 0), (1, 1)])
        assert acked == ["p1-0", "p1-1"]
        assert sink.oldest_pending_age_s() > 0  # partition 0's batch counts until it is written
        second = asyncio.create_task(sink.add(0, 1, batch(1, ("2", "heartbeat", BASE + 10_000)), "p0-1"))
        await asyncio.sleep(0.05)
        assert not second.done() and acked == ["p1-0", "p1-1"]  # built only once the first is written
        writer.gate.set()
        await second
        await sink.settled()

    run(scenario())
    assert writer.written == [(1, 0), (1, 1), (0, 0), (0, 1)]
    assert acked == ["p1-0", "p1-1", "p0-0", "p0-1"]
    assert writer.event_ids() == ["1", "1", "2", "2"]


def test_a_bug_in_a_write_beside_the_agent_stops_it_at_the_next_message():
    writer, acked = GatedWriter(), []
    writer.bugs[0] = RuntimeError("a bug, not the database")
    sink = gated_sink(writer, acked)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        writer.gate.set()
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="a bug"):
            await sink.add(1, 0, batch(2, ("1", "view", BASE)), "p1-0")

    run(scenario())
    assert acked == [] and writer.written == []


def test_a_revoked_or_stopping_partition_finishes_its_write_first():
    writer, acked = GatedWriter(), []
    sink = gated_sink(writer, acked)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        forget = asyncio.create_task(sink.forget({0}))
        await asyncio.sleep(0.05)
        assert not forget.done()
        writer.gate.set()
        await forget
        assert acked == ["p0-0"]
        await sink.add(0, 5, batch(3, ("1", "view", BASE)), "p0-5")  # assigned again later
        assert await sink.flush_all() == 0  # nothing pending; the write in flight is waited for
        assert acked == ["p0-0", "p0-5"]

    run(scenario())


def test_the_timer_raises_a_failed_write_and_the_next_batch_stays_pending():
    writer, acked = GatedWriter(), []
    writer.bugs[0] = RuntimeError("a bug, not the database")
    sink = gated_sink(writer, acked, max_events=2, interval_s=0)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        await sink.flush_due()  # due at once: its write waits at the gate
        await sink.add(0, 1, batch(1, ("2", "heartbeat", BASE + 10_000)), "p0-1")
        writer.gate.set()
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="a bug"):
            await sink.flush_due()
        assert sink.oldest_pending_age_s() > 0  # offset 1 still waits to be written
        del writer.bugs[0]
        await sink.flush_due()
        await sink.settled()

    run(scenario())
    assert writer.written == [(0, 1)] and acked == ["p0-1"]  # offset 0, never written, is never acknowledged


def test_one_failed_write_does_not_keep_shutdown_from_the_others():
    writer, acked = GatedWriter(gated=(0, 1)), []
    writer.bugs[0] = RuntimeError("a bug, not the database")
    sink = gated_sink(writer, acked)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        await sink.add(1, 0, batch(2, ("1", "view", BASE)), "p1-0")
        writer.gates[0].set()
        await asyncio.sleep(0.01)
        stopping = asyncio.create_task(sink.flush_all())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # partition 1's write is waited for, past partition 0's failure
        writer.gates[1].set()
        with pytest.raises(RuntimeError, match="a bug"):
            await stopping

    run(scenario())
    assert acked == ["p1-0"] and writer.written == [(1, 0)]


def test_a_cancelled_waiter_leaves_the_write_running():
    writer, acked = GatedWriter(), []
    sink = gated_sink(writer, acked)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        waiter = asyncio.create_task(sink.settled())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        writer.gate.set()
        await sink.settled()

    run(scenario())
    assert acked == ["p0-0"] and writer.written == [(0, 0)]


def test_a_session_whose_dimensions_change_writes_its_later_minutes_under_the_new_ones():
    """The session's identity is kept between batches (not interned again when a batch repeats it), yet a
    batch that changes it (a new video in the same session) is what its minutes say from then on."""
    rows_written: list[tuple] = []

    class KeepingRows(RecordingWriter):
        async def write(self, rows, batch_range):
            rows_written.extend(rows.session_minutes)
            await super().write(rows, batch_range)

    harness = Harness(KeepingRows(), max_events=1)

    async def scenario():
        await harness.sink.add(0, 0, batch(1, ("1", "view", BASE), ("2", "heartbeat", BASE + 10_000)), handle=0)
        await harness.sink.add(0, 1, batch(1, ("3", "heartbeat", BASE + M + 10_000)), handle=1)
        await harness.sink.add(0, 2, batch(1, ("4", "heartbeat", BASE + 2 * M + 10_000), video="w"), handle=2)

    run(scenario())
    videos = {(row[1], row[2]) for row in rows_written}
    # the stretch from the second batch's heartbeat is written with the batch that ends it, the third
    assert videos == {(utc(BASE), "v"), (utc(BASE + M), "v"), (utc(BASE + M), "w"), (utc(BASE + 2 * M), "w")}


def test_the_timer_leaves_a_partition_being_written_to_its_next_tick():
    """A due batch whose partition is still writing its last one is not waited for under the lock (the agent
    would consume nothing meanwhile): the agent goes on adding, and a later tick flushes it, in order."""
    writer, acked = GatedWriter(), []
    sink = gated_sink(writer, acked, max_events=100, interval_s=0)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        await sink.flush_due()  # due at once: its write waits at the gate
        await sink.add(0, 1, batch(1, ("2", "heartbeat", BASE + 10_000)), "p0-1")
        await asyncio.wait_for(sink.flush_due(), 1)  # returns: offset 1 stays pending
        await asyncio.wait_for(sink.add(0, 2, batch(1, ("3", "heartbeat", BASE + 20_000)), "p0-2"), 1)
        assert writer.written == [] and acked == [] and sink.oldest_pending_age_s() > 0
        writer.gate.set()
        await until(lambda: acked == ["p0-0"])
        await sink.flush_due()
        await sink.settled()

    run(scenario())
    assert writer.written == [(0, 0), (0, 1)] and acked == ["p0-0", "p0-1", "p0-2"]
    assert writer.event_ids() == ["1", "2", "3"]


def test_a_partition_far_behind_fills_its_batch_instead_of_writing_every_interval(monkeypatch):
    """Catching up a backlog, the timer does not cut a partial batch (each insert costs the server a part per
    table): the batch waits to fill, for at most BACKLOG_MAX_AGE_S; caught up, the interval applies again."""
    writer, acked = RecordingWriter(), []
    highwater = {0: 100_000}
    config = SinkConfig("g", "t", session_timeout_ms=M, close_grace_ms=0, flush_interval_s=0, flush_max_events=3)

    async def ack(handle):
        acked.append(handle)

    sink = SettlingSink(writer, config, WorkerMetrics(CollectorRegistry()), ack=ack,
                        caught_up=lambda partition, offset: offset >= highwater[partition],
                        clock_ms=lambda: BASE + 100 * M)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        await sink.flush_due()
        assert acked == []  # 100,000 messages behind: left to fill
        await sink.add(0, 1, batch(1, ("2", "heartbeat", BASE + 1_000), ("3", "heartbeat", BASE + 2_000)), "p0-1")
        assert acked == ["p0-0", "p0-1"]  # full: written at once, as always
        await sink.add(0, 2, batch(1, ("4", "heartbeat", BASE + 3_000)), "p0-2")
        monkeypatch.setattr("aggregations.sink.BACKLOG_MAX_AGE_S", 0)
        await sink.flush_due()
        assert acked == ["p0-0", "p0-1", "p0-2"]  # too old to wait any longer
        monkeypatch.setattr("aggregations.sink.BACKLOG_MAX_AGE_S", 3600)
        await sink.add(0, 3, batch(1, ("5", "heartbeat", BASE + 4_000)), "p0-3")
        highwater[0] = 4 + 4_999  # fewer than BACKLOG_MESSAGES unread: the interval applies
        await sink.flush_due()
        assert acked[-1] == "p0-3"

    run(scenario())
    assert writer.event_ids() == ["1", "2", "3", "4", "5"]


def test_a_partition_whose_end_is_unknown_is_written_every_interval():
    """Unknown (not fetched yet, or revoked meanwhile), a partition is not taken for one far behind."""
    writer, acked = RecordingWriter(), []
    config = SinkConfig("g", "t", session_timeout_ms=M, close_grace_ms=0, flush_interval_s=0, flush_max_events=3)

    async def ack(handle):
        acked.append(handle)

    sink = SettlingSink(writer, config, WorkerMetrics(CollectorRegistry()), ack=ack,
                        caught_up=lambda partition, offset: False, clock_ms=lambda: BASE + 100 * M)

    async def scenario():
        await sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0")
        await sink.flush_due()

    run(scenario())
    assert acked == ["p0-0"]


def test_a_batch_s_range_is_recorded_beside_the_agent_and_before_its_rows():
    """A batch's offset range is recorded by its write task, before its rows: the agent goes on consuming while
    the database takes it (it used to wait while building). The dimension values it admits are written while it
    is built, before any batch that may carry them unfolded."""
    order: list[str] = []
    gate = asyncio.Event()

    class SlowNotes(GatedWriter):  # gated on no partition: only its record waits
        async def admit_dimension_values(self, rows):
            order.append("admit")
            await super().admit_dimension_values(rows)

        async def record_batch(self, batch: BatchRange) -> None:
            await gate.wait()
            order.append(f"record {batch.first_offset}")
            await super().record_batch(batch)

        async def write(self, rows: SinkRows, batch: BatchRange | None) -> None:
            order.append(f"rows {batch.first_offset}" if batch else "closing")
            await super().write(rows, batch)

    writer, acked = SlowNotes(gated=()), []
    sink = gated_sink(writer, acked)

    async def scenario():
        await asyncio.wait_for(sink.add(0, 0, batch(1, ("1", "view", BASE)), "p0-0"), 1)  # not held by the notes
        await asyncio.wait_for(sink.add(1, 0, batch(2, ("1", "view", BASE)), "p1-0"), 1)
        await asyncio.sleep(0.01)
        assert acked == [] and writer.blocks == {} and order == ["admit"]  # partition 1 admitted nothing new
        gate.set()
        await sink.settled()

    run(scenario())
    assert order[0] == "admit" and sorted(order[1:]) == ["record 0", "record 0", "rows 0", "rows 0"]
    assert order.index("record 0") < order.index("rows 0")
    assert writer.batches == {(0, 0): 0, (1, 0): 0} and sorted(acked) == ["p0-0", "p1-0"]
    assert {value for *_, value in writer.admitted} == {"v", "p", ""}  # the capped dimensions of partition 0
