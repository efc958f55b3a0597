"""The worker's guard against faust-streaming delivering a partition's messages out of turn (aggregations/sequence.py)."""

from __future__ import annotations

import asyncio

from aggregations.sequence import RECHECK_S, OffsetSequencer


class Consumer:
    """The sink's next offsets, the committed ones, the log's starts, and the seeks asked for."""

    def __init__(self, next_offsets: dict[int, int] | None = None, committed: dict[int, int] | None = None,
                 log_starts: dict[int, int] | None = None) -> None:
        self.next_offsets, self.committed, self.log_starts = next_offsets or {}, committed or {}, log_starts or {}
        self.seeks: list[tuple[int, int]] = []
        self.asked = 0
        self.during_ask = lambda: None

    async def start(self, partition: int) -> int | None:
        self.asked += 1
        self.during_ask()
        return self.committed.get(partition)

    async def log_start(self, partition: int) -> int | None:
        self.asked += 1
        return self.log_starts.get(partition, 0)

    async def seek(self, partition: int, offset: int) -> None:
        self.seeks.append((partition, offset))

    def sequencer(self) -> OffsetSequencer:
        return OffsetSequencer(self.next_offsets.get, self.start, self.log_start, self.seek)


def admit(sequencer: OffsetSequencer, partition: int, offset: int) -> bool:
    return asyncio.run(sequencer.admit(partition, offset))


def test_messages_in_turn_are_admitted_without_a_seek():
    consumer = Consumer(next_offsets={0: 7}, committed={0: 3})
    sequencer = consumer.sequencer()
    assert admit(sequencer, 0, 7)
    assert consumer.seeks == []


def test_a_message_past_the_sinks_next_offset_is_set_aside_and_the_consumer_sent_back():
    consumer = Consumer(next_offsets={5: 11})
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 5, 13)
    assert not admit(sequencer, 5, 14)  # the rest of the stale batch: each sends it back again
    assert consumer.seeks == [(5, 11), (5, 11)]
    assert consumer.asked == 1  # the log's start asked once per hole, not per message
    assert admit(sequencer, 5, 11)


def test_a_second_copy_of_a_message_the_sink_holds_is_dropped():
    """Two seeks back can fetch the same messages twice: the sink must not see them again (it would take them for
    a consumer moved back and drop its unwritten batch)."""
    consumer = Consumer(next_offsets={5: 15})
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 5, 12)
    assert not admit(sequencer, 5, 14)
    assert consumer.seeks == []
    assert admit(sequencer, 5, 15)


def test_the_first_message_of_an_assignment_must_be_where_it_starts():
    consumer = Consumer(committed={4: 2})  # the sink has read nothing since the assignment
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 4, 4)
    assert not admit(sequencer, 4, 3)
    assert consumer.seeks == [(4, 2), (4, 2)]
    assert admit(sequencer, 4, 2)
    assert consumer.asked == 2  # the start once per assignment, the log's start once per hole
    sequencer.forget({4})
    assert admit(sequencer, 4, 2)
    assert consumer.asked == 3


def test_before_the_sink_reads_nothing_known_or_a_replay_of_committed_messages_is_admitted():
    consumer = Consumer(committed={1: 9})
    sequencer = consumer.sequencer()
    assert admit(sequencer, 0, 40)  # no start known: where the consumer starts is the start
    assert admit(sequencer, 1, 3)  # before the committed offset: the sink cuts a replay as recorded
    assert consumer.seeks == []


def test_only_the_log_itself_lets_a_missing_offset_go():
    consumer = Consumer(next_offsets={2: 100}, log_starts={2: 0})
    sequencer = consumer.sequencer()
    for _ in range(50):  # however long stale messages keep coming, never admitted past the hole
        assert not admit(sequencer, 2, 150)
    consumer.log_starts[2] = 120  # retention deleted 100..119 before they were read
    consumer.next_offsets[2] = 101  # (a new hole, so the log is asked again)
    assert not admit(sequencer, 2, 150)
    assert consumer.seeks[-1] == (2, 120)  # sent to where the log starts now, not to the deleted offset
    assert admit(sequencer, 2, 120)


def test_an_answer_awaited_across_a_revocation_is_dropped():
    consumer = Consumer(committed={3: 5})
    sequencer = consumer.sequencer()
    consumer.during_ask = lambda: sequencer.forget({3})
    assert not admit(sequencer, 3, 5)  # the message belonged to the assignment that ended
    consumer.during_ask = lambda: None
    assert admit(sequencer, 3, 5)  # the new assignment asks again


def test_a_hole_that_stays_is_checked_against_the_log_again_after_a_while():
    consumer = Consumer(next_offsets={2: 100}, log_starts={2: 0})
    now = [0.0]
    sequencer = OffsetSequencer(consumer.next_offsets.get, consumer.start, consumer.log_start, consumer.seek,
                                clock=lambda: now[0])
    assert not admit(sequencer, 2, 150)
    consumer.log_starts[2] = 130  # retention ran while the consumer was being sent back
    assert not admit(sequencer, 2, 150)
    assert consumer.asked == 1 and consumer.seeks[-1] == (2, 100)  # not asked again at once
    now[0] = RECHECK_S + 1
    assert not admit(sequencer, 2, 150)
    assert consumer.asked == 2 and consumer.seeks[-1] == (2, 130)


def test_an_unanswered_start_is_asked_again():
    consumer = Consumer()
    sequencer = consumer.sequencer()
    assert admit(sequencer, 4, 9)  # the broker could not say: admitted as it comes
    consumer.committed[4] = 3
    assert not admit(sequencer, 4, 9)  # still no message read: asked again, and held to it
    assert consumer.seeks == [(4, 3)]


class Message:
    pass


class Event:
    def __init__(self) -> None:
        self.message = Message()


class FaustConsumer:
    """Faust's consumer as far as acknowledgements go: what reached it."""

    def __init__(self) -> None:
        self.acked: list[Message] = []

    def ack(self, message: Message) -> bool:
        self.acked.append(message)
        return True


class Stream:
    def __init__(self, consumer: FaustConsumer) -> None:
        self.consumer = consumer

    async def ack(self, event: Event) -> bool:
        await asyncio.sleep(0)
        return self.consumer.ack(event.message)  # Faust: Event.ack -> Message.ack -> Consumer.ack


def test_only_the_sinks_acknowledgements_reach_faust(tmp_path):
    """Faust's stream acknowledges the messages it skips; those must not let a commit pass them."""
    from prometheus_client import CollectorRegistry

    from aggregations.metrics import WorkerMetrics
    from aggregations.worker import Worker
    from ingest.settings import Settings

    worker = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(CollectorRegistry()))
    faust_consumer = FaustConsumer()
    worker.app.consumer = faust_consumer
    worker._guard_acks()
    skipped, written = Event(), Event()
    assert faust_consumer.ack(skipped.message) is False  # the stream's own acknowledgement of a skipped message
    asyncio.run(worker._acknowledge(Stream(faust_consumer), written))
    assert faust_consumer.acked == [written.message]
