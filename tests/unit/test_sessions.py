from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations.sessions import SessionState, advance, close, minutes_between

M = 60_000
T = 60_000  # session timeout


def test_instant_counts_its_own_minute_at_once():
    state = SessionState()
    assert advance(state, "view", 10 * M + 5_000, T) == {10 * M}


def test_impression_is_not_activity():
    state = SessionState()
    assert advance(state, "impression", 10 * M, T) == set()
    # nor does it open a stretch: the next event's minute is all there is
    assert advance(state, "view", 13 * M + 1, T) == {13 * M}


def test_stretch_emitted_when_next_event_arrives():
    state = SessionState()
    advance(state, "view", 10 * M + 50_000, T)
    # next heartbeat 30 s later crosses into minute 11: the stretch covers 10 and 11
    assert advance(state, "heartbeat", 11 * M + 20_000, T) == {10 * M, 11 * M}


def test_stretch_capped_by_timeout():
    state = SessionState()
    advance(state, "view", 10 * M + 10_000, T)
    # 5 minutes of silence: stretch is [10:10, 11:10), then the new instant at 15:10
    assert advance(state, "heartbeat", 15 * M + 10_000, T) == {10 * M, 11 * M, 15 * M}


def test_stop_ends_activity():
    state = SessionState()
    advance(state, "view", 10 * M, T)
    assert advance(state, "stop", 10 * M + 30_000, T) == {10 * M}
    assert state.closed
    assert close(state, 100 * M, T, 0) == set()
    assert advance(state, "view", 20 * M, T) == {20 * M}


def test_close_waits_for_timeout_and_grace():
    state = SessionState()
    advance(state, "heartbeat", 10 * M + 30_000, T)
    assert close(state, 11 * M + 30_000 + 9_999, T, 10_000) == set()
    assert close(state, 11 * M + 40_000, T, 10_000) == {10 * M, 11 * M}
    assert state.closed
    assert close(state, 20 * M, T, 10_000) == set()


def test_a_late_activity_gets_its_stretch_up_to_the_next_event_known():
    """The broker-kill run's session: a spooled batch (the heartbeats before a 2-minute pause) was appended
    after the session's later batch. Before, the late heartbeats added only their instants, and minute 27's
    concurrency (the stretch after 26:50) was lost for good."""
    state = SessionState()
    assert advance(state, "heartbeat", 29 * M + 58_000, T) == {29 * M}
    assert advance(state, "rebuffer", 30 * M + 4_000, T) == {29 * M, 30 * M}
    late = advance(state, "heartbeat", 26 * M + 50_000, T)
    assert late == {26 * M, 27 * M}  # [26:50, 27:50): the timeout, not the next event known (29:58)
    assert advance(state, "heartbeat", 29 * M + 30_000, T) == {29 * M}  # [29:30, 29:58)
    assert state.last_time_ms == 30 * M + 4_000 and list(state.times) == sorted(state.times)


def test_a_late_stop_or_impression_opens_no_stretch():
    state = SessionState()
    advance(state, "heartbeat", 20 * M, T)
    assert advance(state, "stop", 12 * M, T) == {12 * M}
    assert advance(state, "impression", 11 * M, T) == set()
    assert state.last_time_ms == 20 * M and not state.closed


ACTIVITY = ("view", "first_frame", "heartbeat", "quartile", "rebuffer", "ad_start", "error")


def in_time_order(events: list[tuple[str, int]]) -> set[int]:
    state, minutes = SessionState(), set()
    for kind, when in sorted(events, key=lambda event: event[1]):
        minutes |= advance(state, kind, when, T)
    return minutes | close(state, 10**12, T, 0)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTIVITY), st.integers(0, 30 * M)), min_size=1, max_size=25, unique_by=lambda e: e[1]),
       st.booleans(), st.data())
def test_batches_in_any_order_give_the_minutes_of_time_order(events, ends_with_stop, data):
    """Any arrival order of a session's batches of activity (and a last stop) counts the same minutes as time
    order: what a failover that reorders batches across trackers must not change."""
    events = sorted(events, key=lambda event: event[1])
    if ends_with_stop:
        events.append(("stop", events[-1][1] + data.draw(st.integers(1, 3 * M))))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(events)), max_size=len(events))) | {len(events)})
    batches = [events[start:end] for start, end in zip([0, *cuts[:-1]], cuts, strict=True)]
    state, minutes = SessionState(), set()
    for batch in data.draw(st.permutations(batches)):
        for kind, when in batch:
            minutes |= advance(state, kind, when, T)
    minutes |= close(state, 10**12, T, 0)
    assert minutes == in_time_order(events)


def test_minutes_between_is_half_open():
    assert minutes_between(10 * M, 11 * M) == {10 * M}
    assert minutes_between(10 * M, 11 * M + 1) == {10 * M, 11 * M}
    assert minutes_between(5, 5) == set()


def test_history_rebuild_matches_live_state():
    live = SessionState()
    events = [("1", "impression", 1 * M), ("2", "view", 2 * M), ("3", "heartbeat", 2 * M + 10_000)]
    for _, kind, when in events:
        advance(live, kind, when, T)
    rebuilt = SessionState.from_history(list(reversed(events)))
    assert (rebuilt.last_time_ms, rebuilt.last_type, rebuilt.closed) == (live.last_time_ms, live.last_type, live.closed)
    assert rebuilt.seen_ids == {"1", "2", "3"}
    assert SessionState.from_history([("9", "stop", 5 * M)]).closed


def test_exit_before_start_needs_a_view_an_end_and_no_first_frame():
    from aggregations.sessions import exit_before_start

    state = SessionState()
    advance(state, "impression", 1 * M, T)
    advance(state, "view", 2 * M + 1, T)
    assert exit_before_start(state) is None  # still open
    advance(state, "stop", 3 * M, T)
    assert exit_before_start(state) == 2 * M
    started = SessionState()
    for kind, when in (("view", M), ("first_frame", M + 1), ("stop", M + 2)):
        advance(started, kind, when, T)
    assert exit_before_start(started) is None
    rebuilt = SessionState.from_history([("1", "view", 5 * M), ("2", "stop", 6 * M)])
    assert exit_before_start(rebuilt) == 5 * M
