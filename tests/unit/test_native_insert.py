"""The worker's inserts (Native bytes serialized once from columns, times as integer ticks) against
clickhouse-connect's own row-oriented insert of datetimes: the same rows, read back from chdb."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aggregations.clickhouse import ClickHouse
from aggregations.metrics import WorkerMetrics
from aggregations.rows import RAW_COLUMNS, BatchRange, SinkRows, raw_rows, utc
from aggregations.writer import ClickHouseWriter
from ingest.models import EnrichedBatch, EnrichedEvent

pytestmark = pytest.mark.clickhouse
BASE = (int(time.time() * 1000) // 60_000 - 30) * 60_000 + 123  # within the tables' TTL; not a whole second
TIME_COLUMNS = {RAW_COLUMNS.index("event_time"), RAW_COLUMNS.index("received_at")}
ORDER = "ORDER BY account, event_id"


def batch(key: int, user: str = "") -> EnrichedBatch:
    events = [EnrichedEvent(id="v", type="view", ts=BASE, event_time_ms=BASE),
              EnrichedEvent(id="f", type="first_frame", ts=BASE + 1, event_time_ms=BASE + 1, startup_ms=120),
              EnrichedEvent(id="h", type="heartbeat", ts=BASE + 999, event_time_ms=BASE + 999, watched_ms=1000,
                            position=12.5),
              EnrichedEvent(id="e", type="error", ts=BASE + 1001, event_time_ms=BASE + 1001, code="E1",
                            message="bad ü", fatal=True),
              EnrichedEvent(id="s", type="stop", ts=BASE + 60_000, event_time_ms=BASE + 60_000)]
    return EnrichedBatch(
        account=f"acct{key}", player="p", session=f"s{key}", session_key=key, fingerprint=key * 7, video=f"v{key % 2}",
        live=bool(key % 2), tz="Europe/Paris", user=user, domain="example.com", duration_s=61.5, country="FR",
        continent="EU", subdivision="IDF", device_type="desktop", os="Linux", browser="Firefox", is_bot=False,
        received_at_ms=BASE + 61_000, events=events)


def rows() -> list[tuple[Any, ...]]:
    return [row for key in range(1, 5) for row in raw_rows(batch(key, user="u" if key == 3 else ""), batch(key).events,
                                                            key % 3, 100 + key, {"video": "long"} if key == 2 else None)]


def as_datetimes(row: tuple[Any, ...]) -> list[Any]:
    """The same row as the worker wrote it before: times as UTC datetimes."""
    return [utc(value) if index in TIME_COLUMNS else value for index, value in enumerate(row)]


def read(db: ClickHouse, table: str) -> list[tuple[Any, ...]]:
    return db.query(f"SELECT {', '.join(RAW_COLUMNS)} FROM {table} {ORDER}")


def test_times_are_millisecond_ticks(clickhouse: ClickHouse) -> None:
    """raw_rows gives milliseconds: right only while both columns count milliseconds."""
    types = dict(clickhouse.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                  "AND table = 'events_raw' AND name IN ('event_time', 'received_at')"))
    assert types == {"event_time": "DateTime64(3, 'UTC')", "received_at": "DateTime64(3, 'UTC')"}


def test_native_block_writes_what_the_row_insert_wrote(clickhouse: ClickHouse) -> None:
    settings = {"deduplicate_blocks_in_dependent_materialized_views": 1}
    clickhouse._client.insert("events_raw", [as_datetimes(row) for row in rows()], column_names=list(RAW_COLUMNS),
                              settings=settings)
    expected = read(clickhouse, "events_raw")
    assert len(expected) == 20
    clickhouse.command("TRUNCATE TABLE events_raw")
    clickhouse.insert("events_raw", rows(), RAW_COLUMNS)
    assert read(clickhouse, "events_raw") == expected
    millis = clickhouse.query("SELECT DISTINCT toUnixTimestamp64Milli(event_time), toUnixTimestamp64Milli(received_at) "
                              "FROM events_raw ORDER BY 1")
    assert millis == [(BASE + offset, BASE + 61_000) for offset in (0, 1, 999, 1001, 60_000)]


def test_writer_sends_one_block_to_both_tables_with_its_token(clickhouse: ClickHouse) -> None:
    """events_raw and the views behind events_stream get the rows; the same batch again changes nothing."""
    writer = ClickHouseWriter(clickhouse, WorkerMetrics(CollectorRegistry()))
    block = BatchRange("g", "t", 0, 101, 104)
    for _ in range(2):
        asyncio.run(writer.write(SinkRows(raw=rows()), block))
    assert len(read(clickhouse, "events_raw")) == 20
    views = clickhouse.query("SELECT account, sum(video_view) FROM minute_metrics GROUP BY account ORDER BY account")
    assert views == [(f"acct{key}", 1) for key in range(1, 5)]


def test_the_raw_block_fits_both_tables(clickhouse: ClickHouse) -> None:
    """The writer sends events_raw's bytes to events_stream: their columns must have the same types."""
    block = clickhouse.encode("events_raw", RAW_COLUMNS, list(zip(*rows(), strict=True)))
    clickhouse.insert_block("events_stream", block)
    clickhouse.command("CREATE TABLE wide (event_id String, event_time DateTime64(6, 'UTC')) "
                       "ENGINE = MergeTree ORDER BY event_id")
    narrow = clickhouse.encode("events_raw", ("event_id", "event_time"), [["a"], [BASE]])
    with pytest.raises(ValueError, match="cannot go to wide"):
        clickhouse.insert_block("wide", narrow)
    assert clickhouse.query("SELECT count() FROM wide") == [(0,)]


def test_the_writer_serializes_again_for_events_stream_when_a_type_differs(clickhouse: ClickHouse) -> None:
    """A migration that changed a column's type on one table only must not stop the worker: the block is
    serialized again for the other table, and both get the same rows."""
    clickhouse.command("ALTER TABLE events_stream MODIFY COLUMN rebuffer_ms UInt64")
    block = clickhouse.encode("events_raw", RAW_COLUMNS, list(zip(*rows(), strict=True)))
    assert not clickhouse.fits("events_stream", block)
    writer = ClickHouseWriter(clickhouse, WorkerMetrics(CollectorRegistry()))
    asyncio.run(writer.write(SinkRows(raw=rows()), BatchRange("g", "t", 0, 101, 104)))
    assert len(read(clickhouse, "events_raw")) == 20
    views = clickhouse.query("SELECT account, sum(video_view) FROM minute_metrics GROUP BY account ORDER BY account")
    assert views == [(f"acct{key}", 1) for key in range(1, 5)]


def test_raw_columns_put_each_field_under_its_column_and_the_batch_under_every_event():
    from aggregations.rows import RawColumns

    columns = RawColumns()
    columns.add(batch(2), batch(2).events, 1, 102, {"video": "long"})
    columns.add(batch(3), batch(3).events[3:4], 0, 103)
    found = [dict(zip(RAW_COLUMNS, row, strict=True)) for row in columns]
    assert len(columns) == 6 and [row["event_id"] for row in found] == ["v", "f", "h", "e", "s", "e"]
    heartbeat, error, other = found[2], found[3], found[5]
    assert (heartbeat["event_time"], heartbeat["device_ts"], heartbeat["watched_ms"], heartbeat["position"]) == (
        BASE + 999, BASE + 999, 1000, 12.5)
    assert (error["error_code"], error["error_message"], error["fatal"], found[4]["fatal"]) == ("E1", "bad ü", True, False)
    assert (found[1]["startup_ms"], found[0]["startup_ms"]) == (120, None)
    assert {(row["account"], row["session_key"], row["fingerprint"], row["video"], row["kafka_offset"], row["received_at"],
             row["folded"]["video"]) for row in found[:5]} == {("acct2", 2, 14, "v0", 102, BASE + 61_000, "long")}
    assert (other["account"], other["kafka_partition"], other["kafka_offset"], other["folded"], other["live"]) == (
        "acct3", 0, 103, {}, True)
    assert list(SinkRows(raw=list(columns)).raw) == list(columns)  # rows given as tuples become the same columns


def test_writing_does_not_import_pandas(tmp_path):
    """clickhouse-connect's insert asks whether its data is a DataFrame; answered without importing pandas (and
    with it pyarrow: 80 MB per process, over a second at the worker's first write under load; chdb imports
    pyarrow itself, a ClickHouse server's client does not)."""
    script = (
        "import sys\n"
        "from aggregations.clickhouse import connect\n"
        f"db = connect('chdb://{tmp_path}/db', 'default')\n"
        "db.command('CREATE TABLE t (a UInt32, s String) ENGINE = MergeTree ORDER BY a')\n"
        "db.insert('t', [(1, 'x'), (2, 'y')], ('a', 's'))\n"
        "assert db.query('SELECT sum(a) FROM t') == [(3,)]\n"
        "print('pandas' in sys.modules)\n")
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[2])
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "False"
