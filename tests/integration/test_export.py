"""The per-video export (XLSX and CSV) against the real ClickHouse engine (chdb), no Kafka: every cell is
the number /v1/events or /v1/timeseries answers for the same range."""

import asyncio
import csv
import datetime as dt
import io

import httpx
import msgspec
import openpyxl
import pytest

from aggregations.clickhouse import ClickHouseError
from queries.export import XLSX
from tests.integration.inprocess import api_client
from tests.integration.test_clickhouse import BASE, M, load, make_batch

pytestmark = pytest.mark.clickhouse
SUMMARY = "video_impression,video_view,video_seconds_viewed,ad_start,alive_ss_ad_start,ccu,fingerprint_count"
BREAKDOWN = "video_view,video_seconds_viewed,fingerprint_count"
SHEETS = ["Summary", "Concurrent users", "Views by Device Type", "Views by Geography"]
EXPORT = "/v1/events/accounts/1234/videos/V/export"


def batch(key: int, video: str, country: str, continent: str, device: str, events: list, **extra):
    return msgspec.structs.replace(make_batch(key, video, country, events, **extra), continent=continent,
                                   device_type=device)


# fingerprint = key % 3: sessions 1 and 4 share fingerprint 1.
SCENARIO = [
    # V, desktop, US: minutes 0..2, stopped; 24 s watched; one server-side ad
    batch(1, "V", "US", "NA", "desktop", [("1", "impression", BASE, {}), ("2", "view", BASE + 1000, {}),
                                          ("3", "heartbeat", BASE + 11_000, {"watched_ms": 10_000}),
                                          ("4", "ad_start", BASE + 20_000, {"server_side": True}),
                                          ("5", "heartbeat", BASE + 2 * M + 5_000, {"watched_ms": 10_000}),
                                          ("6", "stop", BASE + 2 * M + 9_000, {"watched_ms": 4_000})], live=True),
    # V, mobile, GB: view at minute 1, silent afterwards (times out into minute 2); a client-side ad
    batch(2, "V", "GB", "EU", "mobile", [("1", "view", BASE + M + 30_000, {}),
                                         ("2", "ad_start", BASE + M + 40_000, {})]),
    # V, mobile, US: minute 10 only, 5.5 s watched
    batch(4, "V", "US", "NA", "mobile", [("1", "impression", BASE + 10 * M, {}), ("2", "view", BASE + 10 * M + 1000, {}),
                                         ("3", "stop", BASE + 10 * M + 7000, {"watched_ms": 5_500})]),
    # V, tablet, DE: an impression only at minute 12 (not concurrent)
    batch(5, "V", "DE", "EU", "tablet", [("1", "impression", BASE + 12 * M, {})]),
    # another video: never in V's report
    batch(3, "W", "FR", "EU", "desktop", [("1", "view", BASE + M, {}), ("2", "stop", BASE + 3 * M, {"watched_ms": 9_000})]),
]
WINDOW = {"from": str(BASE), "to": str(BASE + 20 * M)}


def call(db, path: str, store=None, **params) -> httpx.Response:
    """``store``: where the keys are, when ``db`` is a stand-in."""
    async def run():
        async with api_client(db, store=store) as client:
            return await client.get(path, params=params)
    return asyncio.run(run())


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        ".000+00:00", "Z").replace("+00:00", "Z")


def workbook(response: httpx.Response) -> dict[str, list[tuple]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == XLSX
    book = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    return {sheet.title: [trimmed(row) for row in sheet.iter_rows(values_only=True)] for sheet in book.worksheets}


def trimmed(row) -> tuple:
    """A row without its trailing empty cells (readers pad or cut rows to different widths)."""
    row = list(row)
    while row and row[-1] is None:
        row.pop()
    return tuple(row)


def expected_sheets(db, window: dict[str, str], bucket: str) -> dict[str, list[tuple]]:
    """The four sheets as the JSON API answers them."""
    where = {"where": "video==V", **window}
    events = call(db, "/v1/events/accounts/1234", dimensions="video", metrics=SUMMARY, **where).json()["data"]
    totals = events[0]["totals"] if events else dict.fromkeys(SUMMARY.split(","), 0)
    series = call(db, "/v1/timeseries/accounts/1234", dimensions="video", metrics="ccu", bucket_duration=bucket,
                  **where).json()["ccu"]["data"]
    points = series[0]["points"] if series else []
    peak = call(db, "/v1/timeseries/accounts/1234", dimensions="video", metrics="ccu", bucket_limit="1",
                **where).json()["ccu"]["data"]
    devices = call(db, "/v1/events/accounts/1234", dimensions="video,device_type", metrics=BREAKDOWN,
                   sort="-video_view", **where).json()["data"]
    places = call(db, "/v1/events/accounts/1234", dimensions="video,country,continent", metrics=BREAKDOWN,
                  sort="-video_view", **where).json()["data"]
    metrics = BREAKDOWN.split(",")
    return {
        "Summary": [(name, totals[name]) for name in SUMMARY.split(",")] + [
            ("peak_ccu", peak[0]["points"][0]["value"] if peak else 0)],
        "Concurrent users": [("bucket", bucket), ("timestamp", "timestamp_ms", "ccu")] + [
            (iso(p["timestamp"]), p["timestamp"], p["value"]) for p in points],
        "Views by Device Type": [("device_type", *metrics)] + [
            (row["dimensions"]["device_type"], *(row["totals"][m] for m in metrics)) for row in devices],
        "Views by Geography": [("country", "continent", *metrics)] + [
            (row["dimensions"]["country"], row["dimensions"]["continent"], *(row["totals"][m] for m in metrics))
            for row in places],
    }


def number(cell):
    try:
        return float(cell)
    except ValueError:
        return cell


def summary_of(sheets: dict[str, list[tuple]]) -> dict:
    rows = sheets["Summary"]
    assert rows[0] == ("metric", "value")
    assert all(1 <= len(row) <= 2 for row in rows)
    return {row[0]: row[1] if len(row) == 2 else None for row in rows[1:]}


def test_xlsx_cells_are_the_apis_numbers(clickhouse):
    load(clickhouse, SCENARIO)
    response = call(clickhouse, EXPORT, **WINDOW)
    sheets = workbook(response)
    assert list(sheets) == SHEETS
    assert response.headers["content-disposition"] == (
        f'attachment; filename="vidpulse-1234-V-{compact(BASE)}-{compact(BASE + 20 * M)}.xlsx"')

    api = expected_sheets(clickhouse, WINDOW, "1m")
    summary = summary_of(sheets)
    assert [(name, summary[name]) for name, _ in api["Summary"]] == api["Summary"]
    assert sheets["Concurrent users"] == api["Concurrent users"]
    assert sheets["Views by Device Type"] == api["Views by Device Type"]
    assert sheets["Views by Geography"] == api["Views by Geography"]

    # and by hand
    assert summary == {
        "account": "1234", "video": "V", "from": iso(BASE), "to": iso(BASE + 21 * M - 1),
        "video_impression": 3, "video_view": 3, "video_seconds_viewed": 29.5, "ad_start": 2, "alive_ss_ad_start": 1,
        "ccu": 3, "fingerprint_count": 2, "peak_ccu": 2, "peak_ccu_at": iso(BASE + M)}
    assert [row[2] for row in sheets["Concurrent users"][2:]] == [1, 2, 2, 0, 0, 0, 0, 0, 0, 0, 1] + [0] * 10
    assert [row[1] for row in sheets["Concurrent users"][2:]] == [BASE + i * M for i in range(21)]
    assert sheets["Views by Device Type"][1:] == [("mobile", 2, 5.5, 2), ("desktop", 1, 24.0, 1), ("tablet", 0, 0.0, 0)]
    assert sheets["Views by Geography"][1:] == [("US", "NA", 2, 29.5, 1), ("GB", "EU", 1, 0.0, 1), ("DE", "EU", 0, 0.0, 0)]


def compact(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y%m%dT%H%MZ")


def test_a_narrower_range_gives_smaller_numbers(clickhouse):
    load(clickhouse, SCENARIO)
    wide = summary_of(workbook(call(clickhouse, EXPORT, **WINDOW)))
    narrow_window = {"from": str(BASE + 5 * M), "to": str(BASE + 15 * M)}
    narrow_sheets = workbook(call(clickhouse, EXPORT, **narrow_window))
    narrow = summary_of(narrow_sheets)
    assert narrow == {
        "account": "1234", "video": "V", "from": iso(BASE + 5 * M), "to": iso(BASE + 16 * M - 1),
        "video_impression": 2, "video_view": 1, "video_seconds_viewed": 5.5, "ad_start": 0, "alive_ss_ad_start": 0,
        "ccu": 1, "fingerprint_count": 1, "peak_ccu": 1, "peak_ccu_at": iso(BASE + 10 * M)}
    assert all(narrow[name] <= wide[name] for name in SUMMARY.split(",")) and narrow["video_view"] < wide["video_view"]
    assert len(narrow_sheets["Concurrent users"]) == 2 + 11
    api = expected_sheets(clickhouse, narrow_window, "1m")
    assert [(name, narrow[name]) for name, _ in api["Summary"]] == api["Summary"]
    for name in SHEETS[1:]:
        assert narrow_sheets[name] == api[name]
    # ISO 8601 works as in the other endpoints
    as_iso = workbook(call(clickhouse, EXPORT, **{"from": iso(BASE + 5 * M), "to": iso(BASE + 15 * M)}))
    assert as_iso == narrow_sheets


def test_a_long_range_uses_a_coarser_bucket_and_still_finds_the_peak_minute(clickhouse):
    load(clickhouse, SCENARIO)
    window = {"from": str(BASE - 40 * 1440 * M), "to": str(BASE + 20 * M)}  # > 50,000 minutes
    sheets = workbook(call(clickhouse, EXPORT, **window))
    assert sheets["Concurrent users"][0] == ("bucket", "5m")
    api = expected_sheets(clickhouse, window, "5m")
    summary = summary_of(sheets)
    assert [(name, summary[name]) for name, _ in api["Summary"]] == api["Summary"]
    for name in SHEETS[1:]:
        assert sheets[name] == api[name]
    assert summary["peak_ccu"] == 2 and summary["peak_ccu_at"] == iso(BASE + M)
    assert len(sheets["Concurrent users"]) - 2 == len(api["Concurrent users"]) - 2 <= 50_000


def test_csv_holds_the_four_sheets_row_by_row(clickhouse):
    load(clickhouse, SCENARIO)
    sheets = workbook(call(clickhouse, EXPORT, **WINDOW))
    response = call(clickhouse, EXPORT, format="csv", **WINDOW)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].endswith('.csv"')
    lines = list(csv.reader(io.StringIO(response.text)))
    assert [line[0] for line in lines] == [name for name in SHEETS for _ in sheets[name]]
    assert lines[0] == ["Summary", "metric", "value"]
    def cells(row):  # "" is an empty cell, numbers compare as numbers
        return trimmed(None if cell is None or cell == "" else number(cell) for cell in row)
    assert ({name: [cells(line[1:]) for line in lines if line[0] == name] for name in SHEETS}
            == {name: [cells(row) for row in rows] for name, rows in sheets.items()})
    assert ["Views by Geography", "US", "NA", "2", "29.5", "1"] in lines
    assert ["Views by Device Type", "desktop", "1", "24.0", "1"] in lines  # as the JSON API writes it


def test_a_video_without_data_exports_zeros(clickhouse):
    load(clickhouse, SCENARIO)
    sheets = workbook(call(clickhouse, "/v1/events/accounts/1234/videos/nothing/export", **WINDOW))
    summary = summary_of(sheets)
    assert [summary[name] for name in SUMMARY.split(",")] == [0] * 7
    assert summary["peak_ccu"] == 0 and summary["peak_ccu_at"] is None
    assert [row[2] for row in sheets["Concurrent users"][2:]] == [0] * 21
    assert sheets["Views by Device Type"] == [("device_type", *BREAKDOWN.split(","))]


def test_text_is_never_a_formula(clickhouse):
    load(clickhouse, [batch(9, "=1+2", "US", "NA", "desktop", [("1", "view", BASE, {})])])
    path = "/v1/events/accounts/1234/videos/=1+2/export"
    summary = summary_of(workbook(call(clickhouse, path, **WINDOW)))
    assert summary["video"] == "=1+2" and summary["video_view"] == 1
    lines = list(csv.reader(io.StringIO(call(clickhouse, path, format="csv", **WINDOW).text)))
    assert ["Summary", "video", "'=1+2"] in lines


@pytest.mark.parametrize("path, params, fragment, valid", [
    (EXPORT, {"format": "pdf"}, "unknown format", ["xlsx", "csv"]),
    (EXPORT, {"from": "yesterday"}, "`from` must be", None),
    (EXPORT, {"from": str(BASE + M), "to": str(BASE - M)}, "`from` is after `to`", None),
    ("/v1/events/accounts/1234/videos/a,b/export", {}, "cannot be exported", None),
])
def test_bad_parameters_are_400s(clickhouse, path, params, fragment, valid):
    response = call(clickhouse, path, **params)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert response.json().get("valid") == valid


def test_a_database_outage_is_a_503(clickhouse):
    class Down:
        async def aquery(self, *_args, **_kwargs):
            raise ClickHouseError("HTTPConnectionPool(host='10.1.2.3', port=8123): connection refused")

    response = call(Down(), EXPORT, store=clickhouse)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "did not answer" in response.json()["error"]
    assert "10.1.2.3" not in response.text and "HTTPConnectionPool" not in response.text  # the inside stays inside



def test_without_from_and_to_the_last_32_days_by_the_minute(clickhouse):
    load(clickhouse, SCENARIO)
    sheets = workbook(call(clickhouse, EXPORT))
    summary = summary_of(sheets)
    start = dt.datetime.fromisoformat(summary["from"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(summary["to"].replace("Z", "+00:00")) + dt.timedelta(milliseconds=1)
    assert end - start == dt.timedelta(days=32, minutes=1)
    assert sheets["Concurrent users"][0] == ("bucket", "1m")
    assert len(sheets["Concurrent users"]) - 2 == 32 * 1440 + 1
    assert sheets["Concurrent users"][2][0] == summary["from"]  # every sheet covers the same range
    assert summary == {**summary_of(workbook(call(clickhouse, EXPORT, **WINDOW))), "from": summary["from"],
                       "to": summary["to"]}


def test_any_printable_video_id(clickhouse):
    load(clickhouse, [batch(9, "live/main stage", "US", "NA", "desktop", [("1", "view", BASE, {})])])
    response = call(clickhouse, "/v1/events/accounts/1234/videos/live%2Fmain%20stage/export", **WINDOW)
    summary = summary_of(workbook(response))
    assert summary["video"] == "live/main stage" and summary["video_view"] == 1 and summary["ccu"] == 1
    assert 'filename="vidpulse-1234-live_main_stage-' in response.headers["content-disposition"]
