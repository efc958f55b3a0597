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
