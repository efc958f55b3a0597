"""The worker's guard against faust-streaming delivering a partition's messages out of turn (aggregations/sequence.py)."""

from __future__ import annotations

import asyncio

from aggregations.sequence import GIVE_UP_S, OffsetSequencer


class Consumer:
    """The sink's next offsets, the committed ones, and the seeks asked for."""

    def __init__(self, next_offsets: dict[int, int] | None = None, committed: dict[int, int] | None = None) -> None:
        self.next_offsets, self.committed = next_offsets or {}, committed or {}
        self.seeks: list[tuple[int, int]] = []
        self.now = 0.0
        self.starts_asked = 0

    async def seek(self, partition: int, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def start(self, partition: int) -> int | None:
        self.starts_asked += 1
        return self.committed.get(partition)

    def sequencer(self) -> OffsetSequencer:
        return OffsetSequencer(self.next_offsets.get, self.start, self.seek, clock=lambda: self.now)


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
    assert admit(sequencer, 5, 11)


def test_the_first_message_of_an_assignment_must_be_where_it_starts():
    consumer = Consumer(committed={4: 2})  # the sink has read nothing since the assignment
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 4, 4)
    assert not admit(sequencer, 4, 3)
    assert consumer.seeks == [(4, 2), (4, 2)]
    assert admit(sequencer, 4, 2)
    assert consumer.starts_asked == 1  # asked of the broker once per assignment, not per message
    sequencer.forget({4})
    assert admit(sequencer, 4, 2)
    assert consumer.starts_asked == 2


def test_nothing_known_admits_and_a_consumer_moved_back_is_left_to_the_sink():
    consumer = Consumer(next_offsets={1: 9})
    sequencer = consumer.sequencer()
    assert admit(sequencer, 0, 40)  # no position and no committed offset: where the consumer starts is the start
    assert admit(sequencer, 1, 3)  # behind: the sink drops its pending batch and takes the replay
    assert consumer.seeks == []


def test_an_offset_that_never_comes_is_given_up_after_a_while_not_forever():
    consumer = Consumer(next_offsets={2: 100})
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 2, 150)
    consumer.now = GIVE_UP_S - 1
    assert not admit(sequencer, 2, 150)
    consumer.now = GIVE_UP_S + 1
    assert admit(sequencer, 2, 150)  # retention deleted 100..149: logged as lost, the partition goes on
    assert len(consumer.seeks) == 2


def test_the_give_up_clock_restarts_when_the_expected_offset_moves():
    consumer = Consumer(next_offsets={2: 100})
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 2, 150)
    consumer.now, consumer.next_offsets[2] = GIVE_UP_S + 1, 120
    assert not admit(sequencer, 2, 150)  # progress was made: a new wait, not a give-up


def test_a_revoked_partition_forgets_its_rewind():
    consumer = Consumer(next_offsets={2: 100})
    sequencer = consumer.sequencer()
    assert not admit(sequencer, 2, 150)
    sequencer.forget({2})
    consumer.now = GIVE_UP_S + 1
    assert not admit(sequencer, 2, 150)  # its clock starts again
