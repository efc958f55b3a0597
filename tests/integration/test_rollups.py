"""The rollup projections (migration 0010) on the real engine: answers through them equal the minute
tables' answers across unaligned range edges, and a replayed block is in them once."""

import asyncio
import random
import uuid

import pytest
from prometheus_client import CollectorRegistry

from aggregations.clickhouse import connect
from aggregations.metrics import WorkerMetrics
from aggregations.rows import BatchRange, SessionIdentity, SinkRows, raw_row
from aggregations.schema import load_migrations, migrate
from aggregations.writer import ClickHouseWriter
from queries import answers, sql
from queries.catalog import METRICS
from queries.params import parse_buckets, parse_question
from tests.integration.test_clickhouse import BASE, M, load, make_batch

pytestmark = pytest.mark.clickhouse
H, D = 60 * M, 24 * 60 * M
ALL = ",".join(METRICS)
NON_MAX = ",".join(name for name, metric in METRICS.items() if not metric.components[0].max_of_minutes)


def sessions(count: int, seed: int) -> list:
    """Sessions spread over the last four days: views, first frames (some missing: exits before start),
    heartbeats with rebuffers, fatal errors, registered viewers, three videos and three countries."""
    rng = random.Random(seed)
    batches = []
    for n in range(count):
        key = seed * 10_000 + n
        at = BASE - rng.randrange(4 * D) + rng.randrange(60_000)
        events = [("1", "impression", at, {}), ("2", "view", at + 1000, {})]
        if rng.random() < 0.8:
            events.append(("3", "first_frame", at + 2000, {"startup_ms": rng.randrange(50, 3000)}))
        for beat in range(rng.randrange(0, 12)):
            when = at + 3000 + beat * 15_000
            events.append((f"h{beat}", "heartbeat", when, {"watched_ms": rng.randrange(1, 15_000)}))
            if rng.random() < 0.2:
                events.append((f"r{beat}", "rebuffer", when + 500, {"duration_ms": rng.randrange(1, 4000)}))
        if rng.random() < 0.1:
            events.append(("e", "error", at + 4000, {"fatal": True, "code": "x"}))
        batches.append(make_batch(key, rng.choice("ABC"), rng.choice(["US", "GB", "DE"]), events,
                                  user=f"u{rng.randrange(40)}" if rng.random() < 0.4 else ""))
    return batches


@pytest.fixture(scope="module")
def spread(_chdb_url):
    """One database for the module's read-only tests (loading takes seconds)."""
    database = f"test_rollups_{uuid.uuid4().hex[:12]}"
    migrate(_chdb_url, database)
    db = connect(_chdb_url, database)
    for seed in (1, 2, 3):  # three loads: several parts
        load(db, sessions(150, seed), first_offset=seed * 1000)
    yield db
    db.command(f"DROP DATABASE IF EXISTS {database}")
    db.close()


class MinuteRowsOnly:
    """The database as it was before migration 0010: SQL without the rollups, and no projection read."""

    def __init__(self, db) -> None:
        self._db = db

    async def aquery(self, statement, parameters=None, settings=None):
        return await self._db.aquery(statement, parameters, {**(settings or {}), "optimize_use_projections": 0})


def both_ways(db, monkeypatch, ask):
    """The answer through the rollups, then from the minute rows alone (the SQL before migration 0010)."""
    rolled = asyncio.run(ask(db))
    with monkeypatch.context() as patch:
        patch.setattr(sql, "ROLLUP_DIMENSIONS", frozenset())
        plain = asyncio.run(ask(MinuteRowsOnly(db)))
    return rolled, plain


RANGES = [  # none aligned to hours at both ends; one crossing three midnights, one within a day
    (BASE - 4 * D - 17 * M, BASE + 5 * M),
    (BASE - 2 * D - 3 * H - 41 * M, BASE - 7 * M),
    (BASE - 30 * H - 1 * M, BASE - 26 * H + 23 * M),
]


@pytest.mark.parametrize("start, end", RANGES)
@pytest.mark.parametrize("dimensions, where", [("account", None), ("video", None), ("video", "video==A,C"),
                                               ("account", "video==B")])
def test_totals_through_rollups_equal_the_minute_tables(spread, monkeypatch, start, end, dimensions, where):
    question = parse_question("1234", dimensions, ALL, where, str(start), str(end))
    rolled, plain = both_ways(spread, monkeypatch, lambda db: answers.totals(db, question, None, False, 100, 0))
    assert rolled == plain
    assert rolled["data"] and any(row["totals"]["video_view"] for row in rolled["data"])


@pytest.mark.parametrize("buckets", [{"duration": "1h"}, {"duration": "1d"}, {"duration": "7h"}, {"limit": "1"},
                                     {"time_step": "day", "tz": "America/New_York"},
                                     {"time_step": "day", "tz": "Asia/Kolkata"},
                                     {"time_step": "week", "tz": "Europe/Berlin"}, {"time_step": "all"}])
@pytest.mark.parametrize("dimensions, where", [("account", None), ("video", "video==A,B")])
def test_timeseries_through_rollups_equal_the_minute_tables(spread, monkeypatch, buckets, dimensions, where):
    start, end = RANGES[0]
    question = parse_question("1234", dimensions, ALL, where, str(start), str(end))
    steps = parse_buckets(question, buckets.get("duration"), buckets.get("limit"), buckets.get("time_step"),
                          buckets.get("tz"))
    rolled, plain = both_ways(spread, monkeypatch, lambda db: answers.timeseries(db, question, steps))
    assert rolled == plain
    assert any(point["value"] for point in rolled["ccu"]["data"][0]["points"])


def test_hourly_buckets_from_an_hour_boundary_read_the_rollups(spread, monkeypatch):
    start = (BASE - 3 * D) // H * H
    question = parse_question("1234", "video", NON_MAX, None, str(start), str(BASE))
    steps = parse_buckets(question, "1h", None)
    rolled, plain = both_ways(spread, monkeypatch, lambda db: answers.timeseries(db, question, steps))
    assert rolled == plain
    statement = sql.timeseries(question, steps, sql.component_groups(question.metrics)[("minute_metrics", False)])
    assert "toStartOfHour(minute) AS t" in statement.sql


def projections_read(db, statement) -> set[str]:
    plan = "\n".join(row[0] for row in db.query(f"EXPLAIN {statement.sql}", statement.parameters))
    return {name for name in ("days", "hours", "video_minutes", "account_minutes") if f"ReadFromMergeTree ({name})" in plan}


# Whole hours on both sides of a whole day, whatever the time of day the tests run: RANGES[0] starts and ends
# where BASE falls, and run between 23:47 and 00:47 UTC it had no whole hour at either end (seen in CI).
MIDNIGHT = BASE // D * D
LONG_RANGE = (MIDNIGHT - 3 * D + 5 * H + 17 * M, MIDNIGHT - D + 7 * H + 23 * M)  # inside the loaded four days


def test_long_ranges_read_the_projections(spread):
    start, end = LONG_RANGE
    question = parse_question("1234", "video", ALL, None, str(start), str(end))
    for (table, by_minute), components in sql.component_groups(question.metrics).items():
        if not by_minute:
            assert projections_read(spread, sql.totals(question, components)) == {"days", "hours"}, table
    peak = parse_question("1234", "video", "ccu,fingerprint_count", "video==A", str(start), str(end))
    [components] = sql.component_groups(peak.metrics).values()
    statement = sql.timeseries(peak, parse_buckets(peak, None, "1"), components)
    assert projections_read(spread, statement) == {"video_minutes"}


ROLLUP_READS = {  # each straight from one projection: what it holds, not what the query planner prefers
    "days": "SELECT sum(video_view), sum(watched_ms), uniqCombined64Merge(viewers) FROM (SELECT video, "
            "sum(video_view) AS video_view, sum(watched_ms) AS watched_ms, uniqCombined64MergeState(viewers) AS viewers "
            "FROM minute_metrics WHERE account = '1234' AND toStartOfDay(minute) >= toDateTime(0, 'UTC') GROUP BY video)",
    "hours": "SELECT uniqCombined64Merge(s), uniqCombined64Merge(f) FROM (SELECT video, uniqCombined64MergeState(sessions) "
             "AS s, uniqCombined64MergeState(fingerprints) AS f FROM minute_uniques WHERE account = '1234' "
             "AND toStartOfHour(minute) >= toDateTime(0, 'UTC') GROUP BY video)",
    "video_minutes": "SELECT sum(c) FROM (SELECT video, minute, uniqCombined64Merge(sessions) AS c FROM minute_uniques "
                     "WHERE account = '1234' AND video IN ['A', 'B'] GROUP BY video, minute)",
}


def rollups(db) -> dict[str, list]:
    return {name: db.query(query, settings={"force_optimize_projection_name": name,
                                             "optimize_time_filter_with_preimage": 0})
            for name, query in ROLLUP_READS.items()}


def test_a_replayed_batch_is_in_the_rollups_once(clickhouse):
    writer = ClickHouseWriter(clickhouse, WorkerMetrics(CollectorRegistry()))
    written = sessions(40, 7)
    blocks = []
    for offset, batch in enumerate(written):
        minutes = {event.event_time_ms // M * M for event in batch.events if event.type != "impression"}
        blocks.append((SinkRows(raw=[raw_row(batch, event, 0, offset) for event in batch.events],
                                session_minutes=SessionIdentity.of(batch).minute_rows(minutes)),
                       BatchRange("g", "t", 0, offset, offset)))
    for rows, block in blocks[:20]:
        asyncio.run(writer.write(rows, block))
    asyncio.run(writer.write(*blocks[0]))
    for rows, block in blocks:  # a crash after 20: the replay cuts the same blocks, the first 20 are dropped
        asyncio.run(writer.write(rows, block))
    once = rollups(clickhouse)
    expected = clickhouse.query(ROLLUP_READS["days"], settings={"optimize_use_projections": 0})
    views = sum(1 for batch in written for event in batch.events if event.type == "view")
    assert once["days"] == expected and once["days"][0][0] == views
    assert once["hours"] == clickhouse.query(ROLLUP_READS["hours"], settings={"optimize_use_projections": 0})
    assert once["hours"][0][0] == len(written)
    for rows, block in blocks:  # replayed once more, then merged: still the same
        asyncio.run(writer.write(rows, block))
    clickhouse.command("OPTIMIZE TABLE minute_metrics FINAL")
    clickhouse.command("OPTIMIZE TABLE minute_uniques FINAL")
    assert rollups(clickhouse) == once
    assert clickhouse.query("SELECT count() FROM events_raw") == [(sum(len(rows.raw) for rows, _ in blocks),)]


def test_the_migration_builds_the_rollups_of_rows_written_before_it(clickhouse):
    load(clickhouse, sessions(30, 9))
    before = rollups(clickhouse)
    for table in ("minute_metrics", "minute_uniques"):
        for name in ("hours", "days", "video_minutes", "account_minutes"):
            clickhouse.command(f"ALTER TABLE {table} CLEAR PROJECTION {name}")
    assert projection_rows(clickhouse) == {}
    [migration] = [m for m in load_migrations() if m.version == 10]
    for statement in migration.statements:  # idempotent: ADD ... IF NOT EXISTS, MATERIALIZE again
        clickhouse.command(statement)
    assert set(projection_rows(clickhouse)) == {(table, name) for table in ("minute_metrics", "minute_uniques")
                                                for name in ("hours", "days", "video_minutes", "account_minutes")}
    assert rollups(clickhouse) == before


def projection_rows(db) -> dict[tuple[str, str], int]:
    rows = db.query("SELECT table, name, sum(rows) FROM system.projection_parts WHERE database = currentDatabase() "
                    "AND active AND name != 'by_video' GROUP BY table, name HAVING sum(rows) > 0")
    return {(table, name): count for table, name, count in rows}


def test_an_account_without_data_answers_the_same_both_ways(spread, monkeypatch):
    start, end = RANGES[0]
    question = parse_question("9999", "account", ALL, None, str(start), str(end))
    rolled, plain = both_ways(spread, monkeypatch, lambda db: answers.totals(db, question, None, False, 100, 0))
    assert rolled == plain
