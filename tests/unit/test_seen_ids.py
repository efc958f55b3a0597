"""The sessionizer's compact set of event ids behaves as a set, small and large."""

from aggregations.sessions import SeenIds, SessionState


def test_seen_ids_act_as_a_set_below_and_above_the_small_size():
    seen = SeenIds()
    ids = [str(n) for n in range(SeenIds.SMALL * 2)]
    for event_id in ids + ids[:10]:  # every id twice for the first ten: retries add nothing
        seen.add(event_id)
    assert len(seen) == len(ids)
    assert all(event_id in seen for event_id in ids)
    assert "missing" not in seen and 5 not in seen
    assert seen == set(ids) and set(seen) == set(ids)


def test_a_small_session_keeps_a_tuple_and_a_rebuilt_one_drops_repeats():
    seen = SeenIds(["1", "2", "1"])
    assert isinstance(seen._ids, tuple) and len(seen) == 2  # noqa: SLF001 - the compact form is the point
    assert SessionState.from_history([("1", "view", 0), ("1", "view", 0)]).seen_ids == {"1"}


class Event:
    def __init__(self, event_id: str) -> None:
        self.id = event_id


def test_keep_new_drops_ids_seen_before_and_repeats_within_the_batch_and_keeps_the_rest_in_order():
    seen = SeenIds(["1", "2"])
    batch = [Event(event_id) for event_id in ("2", "3", "4", "3", "1", "5")]
    assert [event.id for event in seen.keep_new(batch)] == ["3", "4", "5"]
    assert seen == {"1", "2", "3", "4", "5"} and len(seen) == 5
    assert seen.keep_new(batch) == []


def test_keep_new_crosses_the_small_size_into_a_set():
    seen = SeenIds(str(n) for n in range(SeenIds.SMALL - 1))
    fresh = seen.keep_new([Event(str(n)) for n in range(SeenIds.SMALL - 3, SeenIds.SMALL + 3)])
    assert [event.id for event in fresh] == [str(n) for n in range(SeenIds.SMALL - 1, SeenIds.SMALL + 3)]
    assert isinstance(seen._ids, set) and len(seen) == SeenIds.SMALL + 3  # noqa: SLF001 - the form is the point
