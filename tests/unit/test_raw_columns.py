"""events_raw's per-event columns, taken from a batch's events (aggregations/rows.py, RawColumns)."""

from aggregations.rows import RAW_COLUMNS, raw_rows
from ingest.models import EnrichedBatch, EnrichedEvent


def batch(events: list[EnrichedEvent]) -> EnrichedBatch:
    return EnrichedBatch(account="a", player="p", session="s", session_key=1, fingerprint=2, video="v", live=False,
                         tz="UTC", user="", domain="", duration_s=None, country="DE", continent="EU", subdivision="",
                         device_type="tv", os="", browser="", is_bot=False, received_at_ms=5, events=events)


def test_each_event_field_lands_in_its_column_and_only_an_error_is_fatal() -> None:
    events = [EnrichedEvent(id="1", type="error", ts=10, event_time_ms=11, code="E1", message="boom", fatal=True),
              EnrichedEvent(id="2", type="error", ts=20, event_time_ms=21, fatal=False),
              # a field the message should not carry for this type: not fatal all the same
              EnrichedEvent(id="3", type="heartbeat", ts=30, event_time_ms=31, watched_ms=1000, position=2.5,
                            percentiles=[25], startup_ms=300, percent=4, duration_ms=7, server_side=True, fatal=True)]
    rows = [dict(zip(RAW_COLUMNS, row, strict=True)) for row in raw_rows(batch(events), events, 3, 9)]
    assert [row["fatal"] for row in rows] == [True, False, False]
    assert [(row["event_id"], row["type"], row["device_ts"], row["event_time"]) for row in rows] == \
        [("1", "error", 10, 11), ("2", "error", 20, 21), ("3", "heartbeat", 30, 31)]
    assert (rows[0]["error_code"], rows[0]["error_message"]) == ("E1", "boom")
    third = rows[2]
    assert (third["watched_ms"], third["position"], third["percentiles"], third["startup_ms"], third["percent"],
            third["rebuffer_ms"], third["server_side"]) == (1000, 2.5, [25], 300, 4, 7, True)
    assert {(row["kafka_partition"], row["kafka_offset"], row["country"], row["received_at"]) for row in rows} == \
        {(3, 9, "DE", 5)}


def test_a_batch_without_a_fatal_flag_writes_false_for_each_event() -> None:
    events = [EnrichedEvent(id=str(i), type="heartbeat", ts=i, event_time_ms=i) for i in range(4)]
    assert [row[RAW_COLUMNS.index("fatal")] for row in raw_rows(batch(events), events, 0, 0)] == [False] * 4
