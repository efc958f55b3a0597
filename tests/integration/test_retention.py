"""The retention curve of scripted plays, against the curve this test computes from them."""

from __future__ import annotations

import pytest

from ingest.models import EnrichedBatch, EnrichedEvent
from tests.integration.test_clickhouse import BASE, M, get, load

pytestmark = pytest.mark.clickhouse


def play(key: int, user: str, fingerprint: int, events: list[dict]) -> EnrichedBatch:
    return EnrichedBatch(
        account="ret", player="p", session=f"r{key:08d}", session_key=key, fingerprint=fingerprint, video="RV",
        live=False, tz="", user=user, domain="", duration_s=200.0, country="US", continent="NA", subdivision="",
        device_type="desktop", os="", browser="", is_bot=False, received_at_ms=BASE,
        events=[EnrichedEvent(id=str(i), ts=BASE + i * 1000, event_time_ms=BASE + i * 1000, **event)
                for i, event in enumerate(events)])


def hb(points) -> dict:
    return {"type": "heartbeat", "watched_ms": 10_000, "percentiles": list(points)}


# (batch, the points this play passed, in order, replays repeated) — the test's own account of each play
PLAYS = [
    (play(1, "ann", 11, [{"type": "view"}, hb(range(0, 41)), hb(range(41, 101))]), [*range(0, 101)]),
    (play(2, "", 22, [{"type": "view"}, hb(range(0, 31)), {"type": "stop", "percentiles": []}]), [*range(0, 31)]),
    (play(3, "ann", 33, [{"type": "view"}, hb(range(0, 51)), hb(range(40, 51)), hb(range(51, 61))]),
     [*range(0, 51), *range(40, 51), *range(51, 61)]),
    (play(4, "bob", 44, [{"type": "view"}, {"type": "quartile", "percent": 25}, {"type": "quartile", "percent": 50}]),
     [*range(0, 51)]),  # quartiles only: the fallback
    (play(5, "", 55, [{"type": "view"}, hb(range(0, 21)), {"type": "quartile", "percent": 25}]),
     [*range(0, 21)]),  # reported percentiles: its quartile is not used
]


def expected_curve(plays: list[tuple[EnrichedBatch, list[int]]]) -> list[dict]:
    viewers = [0] * 101
    uniques: list[set] = [set() for _ in range(101)]
    for batch, points in plays:
        who = f"u:{batch.user}" if batch.user else f"f:{batch.fingerprint}"
        for p in points:
            viewers[p] += 1
            uniques[p].add(who)
    return [{"percentile": p, "time_s": round(p / 100 * 200.0, 3), "viewers": viewers[p],
             "unique_viewers": len(uniques[p]), "retention_percentage": round(100 * viewers[p] / viewers[0], 2),
             "replays": viewers[p] - len(uniques[p])} for p in range(101)]


def fetch(db, viewer: str = "all") -> dict:
    response = get(db, "/v1/retention/accounts/ret/videos/RV", viewer=viewer,
                   **{"from": str(BASE - M), "to": str(BASE + 10 * M)})
    assert response.status_code == 200, response.text
    return response.json()


def test_curve_points_and_insights(clickhouse):
    load(clickhouse, [batch for batch, _ in PLAYS])
    report = fetch(clickhouse)
    want = expected_curve(PLAYS)
    assert report["points"] == want
    assert report["duration_s"] == 200.0
    assert want[0]["viewers"] == 5 and want[45]["replays"] == 2  # ann twice plus ann's replay
    retention = [point["retention_percentage"] for point in want]
    insights = report["insights"]
    assert insights["average_retention"] == round(sum(retention) / 101, 2)
    assert insights["completion_rate"] == 20.0
    assert insights["fifty_percent_point"] == next(p for p, r in enumerate(retention) if r <= 50)
    drops = sorted(((round(retention[p - 1] - retention[p], 2), -p) for p in range(1, 101)), reverse=True)
    assert insights["largest_dropoffs"][0] == {"percentile": -drops[0][1], "retention_loss": drops[0][0]}
    assert insights["largest_dropoffs"][0] == {"percentile": 51, "retention_loss": 40.0}
    assert insights["replay_hotspots"][0]["percentile"] in range(40, 51)


@pytest.mark.parametrize("viewer, keys", [("registered", {1, 3, 4}), ("anonymous", {2, 5}), ("ann", {1, 3})])
def test_viewer_segments(clickhouse, viewer, keys):
    load(clickhouse, [batch for batch, _ in PLAYS])
    assert fetch(clickhouse, viewer)["points"] == expected_curve([p for p in PLAYS if p[0].session_key in keys])


def test_an_empty_range_is_all_zero(clickhouse):
    load(clickhouse, [batch for batch, _ in PLAYS])
    response = get(clickhouse, "/v1/retention/accounts/ret/videos/RV",
                   **{"from": str(BASE + 20 * M), "to": str(BASE + 25 * M)})
    report = response.json()
    assert [p["viewers"] for p in report["points"]] == [0] * 101
    assert report["insights"]["fifty_percent_point"] == 0
