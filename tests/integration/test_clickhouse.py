"""The schema, the writer and the query API against the real ClickHouse engine (chdb), no Kafka."""

import asyncio
import time

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from aggregations.metrics import WorkerMetrics
from aggregations.rows import RAW_COLUMNS, BatchRange, SessionIdentity, SinkRows, raw_row
from aggregations.schema import load_migrations
from aggregations.sink import EventSink, SinkConfig
from aggregations.writer import ClickHouseWriter
from ingest.models import EnrichedBatch, EnrichedEvent
from tests.integration.inprocess import api_client

pytestmark = pytest.mark.clickhouse
M = 60_000
BASE = (int(time.time() * 1000) // M - 30) * M


def make_batch(key: int, video: str, country: str, events: list[tuple[str, str, int, dict]], user: str = "",
               live: bool = False) -> EnrichedBatch:
    return EnrichedBatch(
        account="1234", player="p", session=f"s{key:08d}", session_key=key, fingerprint=key % 3, video=video,
        live=live, tz="UTC", user=user, domain="example.com", duration_s=60.0, country=country, continent="",
        subdivision="", device_type="desktop", os="", browser="", is_bot=False, received_at_ms=BASE,
        events=[EnrichedEvent(id=i, type=t, ts=when, event_time_ms=when, **extra) for i, t, when, extra in events])


def load(db, batches: list[EnrichedBatch], cap: int = 10_000, first_offset: int = 0) -> None:
    """Through the real sink and writer, as the worker would, one message per batch."""
    config = SinkConfig("g", "t", session_timeout_ms=M, close_grace_ms=0, flush_interval_s=0,
                        flush_max_events=10_000, dimension_cap_per_day=cap)

    async def ack(_):
        return None

    sink = EventSink(ClickHouseWriter(db, WorkerMetrics(CollectorRegistry())), config,
                     WorkerMetrics(CollectorRegistry()), ack=ack, caught_up=lambda p, o: True,
                     clock_ms=lambda: now_ms)
    now_ms = BASE + 60 * M

    async def run():
        nonlocal now_ms
        for offset, batch in enumerate(batches, start=first_offset):
            await sink.add(0, offset, batch, offset)
        await sink.flush_all()
        now_ms += M  # the sessions have been silent for the timeout by arrival too: the timer closes them
        await sink.flush_due()

    asyncio.run(run())


def api(db):
    return api_client(db)


def get(db, path: str, **params):
    async def call():
        async with api(db) as client:
            return await client.get(path, params=params)
    return asyncio.run(call())


SCENARIO = [
    # video A, US: view at minute 0, heartbeats to minute 2, stop
    make_batch(1, "A", "US", [("1", "impression", BASE, {}), ("2", "view", BASE + 1000, {}),
                              ("3", "heartbeat", BASE + 11_000, {"watched_ms": 10_000}),
                              ("4", "ad_start", BASE + 20_000, {"server_side": True}),
                              ("5", "heartbeat", BASE + 2 * M + 5_000, {"watched_ms": 10_000}),
                              ("6", "stop", BASE + 2 * M + 9_000, {"watched_ms": 4_000})], live=True),
    # video A, GB, a registered viewer: view at minute 1, silent afterwards (times out)
    make_batch(2, "A", "GB", [("1", "view", BASE + M + 30_000, {}), ("2", "ad_start", BASE + M + 40_000, {})],
               user="u1"),
    # video B, US: impression only: no activity, not concurrent
    make_batch(3, "B", "US", [("1", "impression", BASE + 5 * M, {})]),
]


def test_migrations_are_recorded_and_idempotent(clickhouse):
    versions = [row[0] for row in clickhouse.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in load_migrations()]


def test_a_replayed_block_is_summed_once(clickhouse):
    writer = ClickHouseWriter(clickhouse, WorkerMetrics(CollectorRegistry()))
    batch = SCENARIO[0]
    rows = SinkRows(raw=[raw_row(batch, e, 0, 7) for e in batch.events],
                    session_minutes=SessionIdentity.of(batch).minute_rows({BASE}))
    block = BatchRange("g", "t", 0, 7, 7)
    for _ in range(3):
        asyncio.run(writer.write(rows, block))
    assert clickhouse.query("SELECT count() FROM events_raw") == [(6,)]
    assert clickhouse.query("SELECT sum(video_view), sum(watched_ms) FROM minute_metrics") == [(1, 24_000)]
    assert clickhouse.query("SELECT uniqCombined64Merge(sessions) FROM minute_uniques") == [(1,)]


def test_a_worker_killed_between_the_raw_part_and_the_views_loses_nothing_on_replay(clickhouse):
    """The kill lands after events_raw committed the block and before the views did: the replay (same
    block, same token) must still reach the views, once, and a further replay must change nothing."""
    writer = ClickHouseWriter(clickhouse, WorkerMetrics(CollectorRegistry()))
    batch = SCENARIO[0]
    rows = SinkRows(raw=[raw_row(batch, e, 0, 7) for e in batch.events],
                    session_minutes=SessionIdentity.of(batch).minute_rows({BASE}))
    block = BatchRange("g", "t", 0, 7, 7)
    clickhouse.insert("events_raw", rows.raw, RAW_COLUMNS, block.token)  # then SIGKILL
    assert clickhouse.query("SELECT count() FROM minute_metrics") == [(0,)]
    for _ in range(2):
        asyncio.run(writer.write(rows, block))
    assert clickhouse.query("SELECT count() FROM events_raw") == [(6,)]
    assert clickhouse.query("SELECT sum(video_view), sum(watched_ms) FROM minute_metrics") == [(1, 24_000)]
    assert clickhouse.query("SELECT sum(passes) FROM retention_passes WHERE source = 'q'") == [(1,)]


def test_a_new_owner_reloads_a_session_received_lately_whatever_its_event_times(clickhouse):
    """A replayed or late session (events half an hour old, received a minute ago) left open by a killed
    worker must be reloaded by the partition's next owner, or the stretch after its last event is never
    written; one received long ago is not reloaded."""
    writer = ClickHouseWriter(clickhouse, WorkerMetrics(CollectorRegistry()))
    now = int(time.time() * 1000)
    late = msgspec.structs.replace(SCENARIO[0], received_at_ms=now - M)
    old = make_batch(99, "v", "US", [("1", "view", BASE, {})])
    asyncio.run(writer.write(SinkRows(raw=[raw_row(batch, e, 3, offset) for offset, batch in enumerate((late, old))
                                           for e in batch.events]), None))
    found = asyncio.run(writer.recent_sessions([3], now - 15 * M, now - 15 * M - 86_400_000))
    assert [(account, key) for account, key, *_ in found] == [(late.account, late.session_key)]


def test_events_totals_per_dimension(clickhouse):
    load(clickhouse, SCENARIO)
    response = get(clickhouse, "/v1/events/accounts/1234", dimensions="video,country",
                   metrics="video_impression,video_view,video_seconds_viewed,ad_start,alive_ss_ad_start,ccu,"
                           "fingerprint_count", **{"from": str(BASE - M), "to": str(BASE + 59 * M)})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {"dimensions": {"account": "1234", "video": "A", "country": "GB"},
         "totals": {"video_impression": 0, "video_view": 1, "video_seconds_viewed": 0.0, "ad_start": 1,
                    "alive_ss_ad_start": 0, "ccu": 1, "fingerprint_count": 1}},
        {"dimensions": {"account": "1234", "video": "A", "country": "US"},
         "totals": {"video_impression": 1, "video_view": 1, "video_seconds_viewed": 24.0, "ad_start": 1,
                    "alive_ss_ad_start": 1, "ccu": 1, "fingerprint_count": 1}},
        {"dimensions": {"account": "1234", "video": "B", "country": "US"},
         "totals": {"video_impression": 1, "video_view": 0, "video_seconds_viewed": 0.0, "ad_start": 0,
                    "alive_ss_ad_start": 0, "ccu": 0, "fingerprint_count": 0}},
    ]


def test_ccu_timeseries_is_max_per_bucket_with_gaps_filled(clickhouse):
    load(clickhouse, SCENARIO)
    params = {"dimensions": "video", "metrics": "ccu,video_view", "where": "video==A",
              "from": str(BASE), "to": str(BASE + 4 * M)}
    minutes = get(clickhouse, "/v1/timeseries/accounts/1234", **params).json()
    # session 1: minutes 0,1,2 (stop at 2); session 2: instant at 1, times out into 2
    assert [p["value"] for p in minutes["ccu"]["data"][0]["points"]] == [1, 2, 2, 0, 0]
    assert [p["value"] for p in minutes["video_view"]["data"][0]["points"]] == [1, 1, 0, 0, 0]
    assert [p["timestamp"] for p in minutes["ccu"]["data"][0]["points"]] == [BASE + i * M for i in range(5)]
    peak = get(clickhouse, "/v1/timeseries/accounts/1234", bucket_limit="1", **params).json()
    assert peak["ccu"]["data"][0]["points"] == [{"timestamp": BASE, "value": 2}]
    assert peak["video_view"]["data"][0]["points"] == [{"timestamp": BASE, "value": 2}]
    two = get(clickhouse, "/v1/timeseries/accounts/1234", bucket_duration="2m", **params).json()
    assert [p["value"] for p in two["ccu"]["data"][0]["points"]] == [2, 2, 0]


def test_where_on_booleans_and_viewers(clickhouse):
    load(clickhouse, SCENARIO)
    window = {"from": str(BASE), "to": str(BASE + 10 * M)}
    live = get(clickhouse, "/v1/events/accounts/1234", dimensions="live", metrics="video_view", where="live==true",
               **window).json()
    assert live["data"] == [{"dimensions": {"account": "1234", "live": "true"}, "totals": {"video_view": 1}}]
    registered = get(clickhouse, "/v1/events/accounts/1234", dimensions="viewer", metrics="ccu",
                     where="viewer==registered", **window).json()
    assert registered["data"] == [{"dimensions": {"account": "1234", "viewer": "registered"}, "totals": {"ccu": 1}}]


def test_other_accounts_see_nothing(clickhouse):
    load(clickhouse, SCENARIO)
    response = get(clickhouse, "/v1/events/accounts/9999", dimensions="video", metrics="video_view,ccu")
    assert response.json() == {"data": []}


def test_sort_limit_offset(clickhouse):
    load(clickhouse, SCENARIO)
    window = {"from": str(BASE), "to": str(BASE + 10 * M)}
    ranked = get(clickhouse, "/v1/events/accounts/1234", dimensions="country", metrics="video_seconds_viewed",
                 sort="-video_seconds_viewed", limit="1", **window).json()
    assert ranked["data"] == [{"dimensions": {"account": "1234", "country": "US"},
                               "totals": {"video_seconds_viewed": 24.0}}]
    second = get(clickhouse, "/v1/events/accounts/1234", dimensions="country", metrics="video_seconds_viewed",
                 sort="-video_seconds_viewed", limit="1", offset="1", **window).json()
    assert second["data"][0]["dimensions"]["country"] == "GB"


@pytest.mark.parametrize("params, status, fragment", [
    ({"dimensions": "video", "metrics": "nope"}, 400, "unknown metric"),
    ({"dimensions": "video", "metrics": "ccu", "where": "video==A'; DROP TABLE events_raw; --"}, 400, "malformed"),
    ({"dimensions": "video", "metrics": "ccu", "where": "video==A' OR 1=1 --"}, 200, None),
    ({"dimensions": "video`; DROP TABLE events_raw", "metrics": "ccu"}, 400, "unknown dimension"),
    ({"dimensions": "video", "metrics": "ccu", "bucket_duration": "1h", "bucket_limit": "2"}, 400, "use one of"),
])
def test_bad_or_hostile_parameters(clickhouse, params, status, fragment):
    response = get(clickhouse, "/v1/timeseries/accounts/1234", **params)
    assert response.status_code == status
    if fragment:
        assert fragment in response.json()["error"]
    else:
        assert response.json() == {"ccu": {"data": []}}
    assert clickhouse.query("EXISTS TABLE events_raw") == [(1,)]


def test_a_malformed_account_opens_nothing(clickhouse):
    response = get(clickhouse, "/v1/events/accounts/bad%20id", dimensions="video", metrics="ccu")
    assert response.status_code == 401  # the key is checked first, and no key opens such an account


def test_a_flood_of_new_video_ids_folds_into_other(clickhouse):
    flood = [make_batch(100 + n, f"junk-{n}", "US", [("1", "view", BASE + n * 1000, {})]) for n in range(6)]
    load(clickhouse, flood[:4], cap=3)
    load(clickhouse, flood[4:], cap=3, first_offset=4)  # a new worker: the admitted values come from ClickHouse
    answer = get(clickhouse, "/v1/events/accounts/1234", dimensions="video", metrics="video_view,ccu",
                 **{"from": str(BASE), "to": str(BASE + 10 * M)}).json()
    assert {row["dimensions"]["video"]: row["totals"]["video_view"] for row in answer["data"]} == {
        "junk-0": 1, "junk-1": 1, "junk-2": 1, "(other)": 3}
    assert clickhouse.query("SELECT folded['video'] FROM events_raw WHERE video = '(other)' ORDER BY 1") == [
        ("junk-3",), ("junk-4",), ("junk-5",)]


def test_every_dimension_at_once_and_for_uniques(clickhouse):
    load(clickhouse, SCENARIO)
    dims = "video,country,continent,subdivision,device_type,os,browser,player,timezone,domain,live,viewer"
    window = {"from": str(BASE), "to": str(BASE + 10 * M)}
    answer = get(clickhouse, "/v1/events/accounts/1234", dimensions=dims, metrics="video_view,ccu,unique_viewers",
                 where="country==GB", **window).json()
    assert answer["data"] == [{
        "dimensions": {"account": "1234", "video": "A", "country": "GB", "continent": "", "subdivision": "",
                       "device_type": "desktop", "os": "", "browser": "", "player": "p", "timezone": "UTC",
                       "domain": "example.com", "live": "false", "viewer": "registered"},
        "totals": {"video_view": 1, "ccu": 1, "unique_viewers": 1}}]


def test_a_query_over_the_cost_limits_is_a_422_not_a_500(clickhouse, _chdb_url):
    from aggregations.clickhouse import connect

    load(clickhouse, SCENARIO)
    database = clickhouse.query("SELECT currentDatabase()")[0][0]
    limited = connect(_chdb_url, database, {"max_rows_to_read": 1})
    async def call():
        async with api_client(limited, store=clickhouse) as client:
            return await client.get("/v1/events/accounts/1234", params={"dimensions": "video", "metrics": "video_view"})
    try:
        response = asyncio.run(call())
    finally:
        limited.close()
    assert response.status_code == 422
    assert "cost limits" in response.json()["error"]


def test_totals_over_several_days_and_across_midnight(clickhouse):
    day = 86_400_000
    midnight = BASE // day * day
    spread = [  # sessions on three earlier days, one across midnight, and today's
        make_batch(200 + n, video, "US" if n % 2 else "GB",
                   [("1", "view", at, {}), ("2", "heartbeat", at + 5_000, {"watched_ms": 1000 * (n + 1)})])
        for n, (video, at) in enumerate([("D1", midnight - 3 * day + 5 * M), ("D1", midnight - 2 * day + 7 * M),
                                         ("D2", midnight - 2 * day + 9 * M), ("D1", midnight - day - 2_000),
                                         ("D2", midnight + 3 * M)])]
    load(clickhouse, spread)  # fingerprints are key % 3: D1 has keys 200, 201, 203 -> 2 fingerprints
    window = {"from": str(midnight - 3 * day - 10 * M), "to": str(BASE + 5 * M)}
    metrics = "video_view,video_seconds_viewed,ccu,fingerprint_count,watch_minutes"
    by_video = get(clickhouse, "/v1/events/accounts/1234", dimensions="video", metrics=metrics, where="video==D1,D2",
                   **window).json()["data"]
    assert by_video == [
        {"dimensions": {"account": "1234", "video": "D1"},
         "totals": {"video_view": 3, "video_seconds_viewed": 7.0, "ccu": 3, "fingerprint_count": 2,
                    "watch_minutes": round(7 / 60, 3)}},
        {"dimensions": {"account": "1234", "video": "D2"},
         "totals": {"video_view": 2, "video_seconds_viewed": 8.0, "ccu": 2, "fingerprint_count": 2,
                    "watch_minutes": round(8 / 60, 3)}}]
    # grouped by one more dimension and summed back: the same views
    by_country = get(clickhouse, "/v1/events/accounts/1234", dimensions="video,country", metrics=metrics,
                     where="video==D1,D2", **window).json()["data"]
    views = {}
    for row in by_country:
        views[row["dimensions"]["video"]] = views.get(row["dimensions"]["video"], 0) + row["totals"]["video_view"]
    assert views == {"D1": 3, "D2": 2}
