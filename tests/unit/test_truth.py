"""The ground truth on hand-made sessions whose every number was worked out by hand.

Minute starts M0..M5 are whole UTC minutes. The sessions:

A  US, fingerprint a (8.8.8.8, UA_X, p1), video v1, user u-1: plays, its ``stop`` at M0+55s cuts
   the stretch that would otherwise have run into M1.                          minutes {M0}
B  GB, video v1, user u-2: one heartbeat at M0+51s, then silent past the timeout, then one more
   at M4+30s and silent again (abandoned).                                  minutes {M0, M1, M4, M5}
C  JP, video v1: impression only, never active.                            minutes {}
D  US, fingerprint a again (same IP, UA, player as A), video v2, user u-1: stop, then a replay
   after the stop (inactive in between).                                    minutes {M2, M3}
E  US, 8.8.8.8 and UA_X like A but player p2 (another fingerprint), video v1: view + heartbeat,
   then times out.                                                          minutes {M1, M2}
F  no registry country (ZZ), video v2: view and fatal error, then silent.  minutes {M4, M5}
"""

from __future__ import annotations

import pytest

from ingest import truth
from ingest.truth import SentBatch

M0 = 1_700_000_040_000  # a whole UTC minute
assert M0 % 60_000 == 0
S = 1000


def M(n: int) -> int:
    return M0 + n * 60_000


UA_X = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
UA_Y = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"


def ev(i: int, kind: str, ts: int, **fields) -> dict:
    return {"id": str(i), "type": kind, "ts": ts, **fields}


def batch(session: str, video: str, ip: str, ua: str, events: list[dict], player: str = "p1",
          user: str | None = None) -> SentBatch:
    context = {"user": user} if user else {}
    envelope = {"v": 1, "account": "1234", "player": player, "session": session, "video": video,
                "live": False, "context": context, "events": events}
    return SentBatch(envelope, ip, ua)


A_TAIL = [ev(6, "heartbeat", M0 + 50 * S, watched_ms=10_000), ev(7, "stop", M0 + 55 * S, watched_ms=4321)]
BATCHES = [
    batch("session-A", "v1", "8.8.8.8", UA_X, user="u-1", events=[
        ev(1, "impression", M0 + 5 * S), ev(2, "view", M0 + 10 * S), ev(3, "first_frame", M0 + 11 * S, startup_ms=1000),
        ev(4, "heartbeat", M0 + 21 * S, watched_ms=10_000), ev(5, "ad_start", M0 + 25 * S, server_side=True)]),
    batch("session-A", "v1", "8.8.8.8", UA_X, user="u-1", events=A_TAIL),
    batch("session-A", "v1", "8.8.8.8", UA_X, user="u-1", events=A_TAIL),  # a retry of the same batch
    batch("session-B", "v1", "81.2.69.142", UA_Y, user="u-2", events=[
        ev(1, "impression", M0 + 30 * S), ev(2, "view", M0 + 40 * S), ev(3, "first_frame", M0 + 41 * S, startup_ms=900),
        ev(4, "heartbeat", M0 + 51 * S, watched_ms=10_000)]),
    batch("session-B", "v1", "81.2.69.142", UA_Y, user="u-2", events=[
        ev(5, "heartbeat", M(4) + 30 * S, watched_ms=10_000)]),
    batch("session-C", "v1", "1.0.16.1", UA_Y, events=[ev(1, "impression", M0 + 20 * S)]),
    batch("session-D", "v2", "8.8.8.8", UA_X, user="u-1", events=[
        ev(1, "impression", M(2)), ev(2, "view", M(2) + 1 * S), ev(3, "ad_start", M(2) + 2 * S),
        ev(4, "first_frame", M(2) + 3 * S, startup_ms=2000), ev(5, "stop", M(2) + 6 * S, watched_ms=3000),
        ev(6, "view", M(2) + 50 * S), ev(7, "heartbeat", M(3), watched_ms=10_000),
        ev(8, "stop", M(3) + 5 * S, watched_ms=5000)]),
    batch("session-E", "v1", "8.8.8.8", UA_X, player="p2", events=[
        ev(1, "view", M(1) + 30 * S), ev(2, "heartbeat", M(1) + 40 * S, watched_ms=10_000)]),
    batch("session-F", "v2", "100.64.0.1", UA_Y, events=[
        ev(1, "view", M(4) + 10 * S), ev(2, "error", M(4) + 12 * S, code="MEDIA_ERR_NETWORK", fatal=True)]),
]


def sessions_by_id() -> dict[str, truth.Session]:
    return {s.session: s for s in truth.build_sessions(BATCHES)}


def test_stop_truncates_the_stretch_it_ends():
    instants, stretches = truth.activity(sessions_by_id()["session-A"])
    assert instants == [M0 + 10 * S, M0 + 11 * S, M0 + 21 * S, M0 + 25 * S, M0 + 50 * S, M0 + 55 * S]
    assert stretches == [(M0 + 10 * S, M0 + 11 * S), (M0 + 11 * S, M0 + 21 * S), (M0 + 21 * S, M0 + 25 * S),
                         (M0 + 25 * S, M0 + 50 * S), (M0 + 50 * S, M0 + 55 * S)]
    assert truth.active_minutes(sessions_by_id()["session-A"]) == {M0}


def test_silence_times_out_and_a_late_event_starts_a_new_stretch():
    session = sessions_by_id()["session-B"]
    _, stretches = truth.activity(session)
    assert stretches[-2:] == [(M0 + 51 * S, M0 + 111 * S), (M(4) + 30 * S, M(4) + 90 * S)]
    assert truth.active_minutes(session) == {M0, M(1), M(4), M(5)}


def test_a_shorter_timeout_changes_the_minutes():
    assert truth.active_minutes(sessions_by_id()["session-B"], timeout_ms=5 * S) == {M0, M(4)}


def test_impression_only_is_never_active():
    assert truth.activity(sessions_by_id()["session-C"]) == ([], [])
    assert truth.active_minutes(sessions_by_id()["session-C"]) == set()


def test_after_a_stop_the_session_is_inactive_until_its_next_event():
    session = sessions_by_id()["session-D"]
    _, stretches = truth.activity(session)
    assert (M(2) + 6 * S, M(2) + 50 * S) not in stretches
    assert stretches[-2:] == [(M(2) + 50 * S, M(3)), (M(3), M(3) + 5 * S)]
    assert truth.active_minutes(session) == {M(2), M(3)}


def test_the_retried_batch_is_counted_once():
    assert len(sessions_by_id()["session-A"].events) == 7


def test_ccu_timeseries_per_minute():
    sessions = truth.build_sessions(BATCHES)
    assert truth.ccu_timeseries(sessions, M0 + 5 * S, M(5) + 29_999) == {
        M0: 2, M(1): 2, M(2): 2, M(3): 1, M(4): 2, M(5): 2}
    v1 = [s for s in sessions if s.video == "v1"]
    assert truth.ccu_timeseries(v1, M0, M(6)) == {M0: 2, M(1): 2, M(2): 1, M(3): 0, M(4): 1, M(5): 1, M(6): 0}


def test_fingerprint_series_counts_a_device_once_per_minute():
    """The hand-made sessions never share a fingerprint in one minute; a second session of A's device (same IP,
    UA and player) at M0 is one more ccu but no more fingerprints."""
    twin = batch("session-A2", "v2", "8.8.8.8", UA_X, events=[ev(1, "view", M0 + 30 * S)])
    sessions = truth.build_sessions([*BATCHES, twin])
    assert truth.ccu_timeseries(sessions, M0, M(1))[M0] == 3
    # at M1 the twin (still within its timeout) is a third device beside B and E
    assert truth.fingerprint_timeseries(sessions, M0, M(5)) == {M0: 2, M(1): 3, M(2): 2, M(3): 1, M(4): 2, M(5): 2}
    result = truth.compute_truth("1234", [*BATCHES, twin])
    assert result["timeseries"]["fingerprint_count"]["account"][0] == {"timestamp": M0, "value": 2}
    assert result["timeseries"]["fingerprint_count"]["by_video"]["v2"][0] == {"timestamp": M0, "value": 1}


def test_account_totals():
    result = truth.compute_truth("1234", BATCHES)
    assert result["range"] == {"from": M0 + 5 * S, "to": M(5) + 29_999}
    assert result["totals"]["account"] == {
        "video_impression": 4, "video_view": 6, "ad_start": 2, "alive_ss_ad_start": 1,
        "video_seconds_viewed": 72.321, "ccu": 5, "fingerprint_count": 4, "unique_viewers": 2}
    assert (result["sessions"], result["batches"], result["events"]) == (6, 9, 25)


def test_totals_by_video():
    by_video = truth.compute_truth("1234", BATCHES)["totals"]["by_video"]
    assert by_video == {
        "v1": {"video_impression": 3, "video_view": 3, "ad_start": 1, "alive_ss_ad_start": 1,
               "video_seconds_viewed": 54.321, "ccu": 3, "fingerprint_count": 3, "unique_viewers": 2},
        "v2": {"video_impression": 1, "video_view": 3, "ad_start": 1, "alive_ss_ad_start": 0,
               "video_seconds_viewed": 18.0, "ccu": 2, "fingerprint_count": 2, "unique_viewers": 1},
    }


def test_totals_by_video_and_country():
    by_key = truth.compute_truth("1234", BATCHES)["totals"]["by_video_country"]
    assert sorted(by_key) == ["v1|GB", "v1|JP", "v1|US", "v2|US", "v2|ZZ"]
    assert by_key["v1|US"] == {"video_impression": 1, "video_view": 2, "ad_start": 1, "alive_ss_ad_start": 1,
                               "video_seconds_viewed": 34.321, "ccu": 2, "fingerprint_count": 2, "unique_viewers": 1}
    assert by_key["v1|JP"] == {"video_impression": 1, "video_view": 0, "ad_start": 0, "alive_ss_ad_start": 0,
                               "video_seconds_viewed": 0.0, "ccu": 0, "fingerprint_count": 0, "unique_viewers": 0}
    assert by_key["v2|ZZ"]["ccu"] == 1 and by_key["v2|ZZ"]["video_view"] == 1
    assert by_key["v2|US"]["fingerprint_count"] == 1


def test_series_in_the_truth_file_cover_every_minute():
    series = truth.compute_truth("1234", BATCHES)["timeseries"]["ccu"]
    assert [p["value"] for p in series["account"]] == [2, 2, 2, 1, 2, 2]
    assert [p["timestamp"] for p in series["account"]] == [M(n) for n in range(6)]
    assert [p["value"] for p in series["by_video"]["v2"]] == [0, 0, 1, 1, 1, 1]


def test_a_sub_range_counts_only_its_minutes():
    sessions = truth.build_sessions(BATCHES)
    assert truth.totals(sessions, M(2) + 17 * S, M(3) + 1) == {
        "video_impression": 1, "video_view": 2, "ad_start": 1, "alive_ss_ad_start": 0,
        "video_seconds_viewed": 18.0, "ccu": 2, "fingerprint_count": 2, "unique_viewers": 1}


def test_event_time_uses_sent_at_only_with_the_receive_time():
    envelope = {"sent_at": 10_000}
    assert truth.event_time_ms({}, 5000, None) == 5000
    assert truth.event_time_ms(envelope, 7000, received_at_ms=50_000) == 47_000
    with pytest.raises(ValueError):
        truth.event_time_ms(envelope, 7000, None)


def test_a_session_cannot_change_video():
    moved = batch("session-A", "v9", "8.8.8.8", UA_X, events=[ev(99, "heartbeat", M(1), watched_ms=1)])
    with pytest.raises(ValueError):
        truth.build_sessions([BATCHES[0], moved])


def test_country_lookup():
    assert [truth.country_of(ip) for ip in ("8.8.8.8", "81.2.69.142", "1.0.16.1", "100.64.0.1", "not-an-ip")] == [
        "US", "GB", "JP", "ZZ", "ZZ"]
