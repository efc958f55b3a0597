"""The per-video report: ``GET /v1/events/accounts/{account_id}/videos/{video_id}/export``.

Brightcove's Live Analytics API offers this download as an XLSX with four sheets; vidpulse
builds the same four from its own answers, so every number in the file is one that
``/v1/events`` or ``/v1/timeseries`` gives for the same ``from``/``to`` and
``where=video==<video_id>`` (they are computed by ``answers.totals`` and
``answers.timeseries`` from questions parsed by ``parse_question``; all of a report's
questions share one "now", so the defaults cover the same range in every sheet):

- **Summary**: one row per item, ``metric, value``: ``account``, ``video``, ``from`` and
  ``to`` (ISO 8601 UTC; ``to`` is the last included millisecond, the range being whole
  minutes), the totals of ``video_impression``, ``video_view``, ``video_seconds_viewed``,
  ``ad_start``, ``alive_ss_ad_start``, ``ccu`` (distinct sessions) and
  ``fingerprint_count``, then ``peak_ccu`` (the highest per-minute ``ccu``) and
  ``peak_ccu_at`` (the first minute that reached it; empty when the peak is 0).
- **Concurrent users**: a first row ``bucket, <duration>``, then ``timestamp, timestamp_ms,
  ccu``, then one row per bucket (ISO 8601 UTC, epoch ms, value), gaps as 0. The bucket is
  the smallest of 1m, 5m, 1h, 1d that keeps the range within the API's 50,000 points per
  series; a bucket's value is the highest per-minute ``ccu`` in it, as in ``/v1/timeseries``.
- **Views by Device Type**: ``device_type, video_view, video_seconds_viewed,
  fingerprint_count``, one row per device type.
- **Views by Geography**: ``country, continent, video_view, video_seconds_viewed,
  fingerprint_count``, one row per country.
  Both breakdowns are ordered by ``video_view`` descending, ties by dimension values, as
  ``/v1/events?...&sort=-video_view`` orders them.

``format=xlsx`` (the default) answers the workbook. ``format=csv`` answers one CSV file,
since a CSV cannot hold four sheets: every line is the name of a sheet followed by the cells
of one row of that sheet, exactly as in the workbook, header rows included, sheets in the
order above. So the first column, ``sheet``, tells the four tables apart (filter on it to get
one), the lines of different sheets have different widths, and the file has no header line
of its own. Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return) get a leading ``'`` in the CSV; in the workbook they are
stored as plain text, unchanged.

A video id that contains ``,`` or ``;`` cannot be exported, as it cannot be filtered on in
``where`` either (they are that syntax's separators): ``400``. Errors are answered as in
``queries/api.py``: ``400`` with ``{"error", "valid"}``, ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from aggregations.accounts import ApiKey
from aggregations.clickhouse import ClickHouse
from queries import answers
from queries.api import AccountId, From, QueryContext, To, answer_with
from queries.auth import CallerOf
from queries.params import QueryError, parse_buckets, parse_question

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMATS = {"xlsx": XLSX, "csv": "text/csv; charset=utf-8"}
SUMMARY_METRICS = ("video_impression", "video_view", "video_seconds_viewed", "ad_start", "alive_ss_ad_start", "ccu",
                   "fingerprint_count")
BREAKDOWN_METRICS = ("video_view", "video_seconds_viewed", "fingerprint_count")
CCU_BUCKETS = ("1m", "5m", "1h", "1d")  # the first that fits the range is used
SHEETS = ("Summary", "Concurrent users", "Views by Device Type", "Views by Geography")
PAGE = 10_000  # /v1/events' largest limit
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9_-]+")

VideoId = Annotated[str, Path(min_length=1, max_length=128, description="the video's id, as the player sent it")]
Format = Annotated[str | None, Query(alias="format", description="xlsx (default) or csv")]


@dataclass(frozen=True)
class Sheet:
    name: str
    rows: list[tuple[Any, ...]]
    header_rows: int  # how many leading rows are headings
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Report:
    account: str
    video: str
    start_ms: int
    end_ms: int  # exclusive
    sheets: tuple[Sheet, ...]

    def filename(self, extension: str) -> str:
        last_minute = self.end_ms - 60_000
        parts = ("vidpulse", _safe(self.account), _safe(self.video), _compact(self.start_ms), _compact(last_minute))
        return f"{'-'.join(parts)}.{extension}"


def export_router(context: QueryContext) -> APIRouter:
    router = APIRouter(tags=["analytics"])
    db = context.db

    @router.get("/v1/events/accounts/{account_id}/videos/{video_id:path}/export",
                summary="One video's report over the range: XLSX with four sheets, or CSV",
                response_class=Response,
                responses={200: {"content": {XLSX: {}, "text/csv": {}},
                                 "description": "Summary, Concurrent users, Views by Device Type, Views by Geography"},
                           400: {"description": "a bad parameter: {error, valid}"},
                           503: {"description": "the analytics database did not answer"}})
    async def export(account_id: AccountId, caller: CallerOf, video_id: VideoId, start: From = None, to: To = None,
                     requested: Format = None) -> Response:
        async def run(_: ApiKey) -> Response:
            kind = _format(requested)
            report = await build_report(db, account_id, video_id, start, to)
            body = await run_in_threadpool(_xlsx if kind == "xlsx" else _csv, report.sheets)
            disposition = f'attachment; filename="{report.filename(kind)}"'
            return Response(body, media_type=FORMATS[kind], headers={"Content-Disposition": disposition})
        return await answer_with(context, "export", account_id, caller, run)

    return router


async def build_report(db: ClickHouse, account: str, video: str, start: str | None, end: str | None,
                       now_ms: int | None = None) -> Report:
    """The four sheets' rows, from the same answers /v1/events and /v1/timeseries give."""
    if "," in video or ";" in video:
        raise QueryError(f"video ids containing ',' or ';' cannot be exported (nor filtered in where): {video!r}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    where = f"video=={video}"

    def ask(dimensions: str, metrics: tuple[str, ...]):
        return parse_question(account, dimensions, ",".join(metrics), where, start, end, now_ms=now)

    summary_question = ask("video", SUMMARY_METRICS)
    summary_rows = await _all_totals(db, summary_question, sort=None)
    totals = summary_rows[0]["totals"] if summary_rows else {}

    ccu_question = ask("video", ("ccu",))
    bucket, buckets = _ccu_buckets(ccu_question)
    points = _points((await answers.timeseries(db, ccu_question, buckets))["ccu"]["data"], buckets.timestamps())
    peak = max((value for _, value in points), default=0)
    peak_at = await _peak_minute(db, account, where, bucket, points, peak, ccu_question.end_ms) if peak else None

    start_ms, end_ms = summary_question.start_ms, summary_question.end_ms
    summary = Sheet(SHEETS[0], [
        ("metric", "value"),
        ("account", account),
        ("video", video),
        ("from", _iso(start_ms)),
        ("to", _iso(end_ms - 1)),
        *((name, totals.get(name, 0)) for name in SUMMARY_METRICS),
        ("peak_ccu", peak),
        ("peak_ccu_at", None if peak_at is None else _iso(peak_at)),
    ], header_rows=1, widths=(22, 28))
    concurrent = Sheet(SHEETS[1], [
        ("bucket", bucket),
        ("timestamp", "timestamp_ms", "ccu"),
        *((_iso(ts), ts, value) for ts, value in points),
    ], header_rows=2, widths=(22, 16, 10))

    devices = await _all_totals(db, ask("video,device_type", BREAKDOWN_METRICS), sort="video_view")
    by_device = Sheet(SHEETS[2], [
        ("device_type", *BREAKDOWN_METRICS),
        *((row["dimensions"]["device_type"], *(row["totals"][m] for m in BREAKDOWN_METRICS)) for row in devices),
    ], header_rows=1, widths=(16, 12, 22, 18))

    places = await _all_totals(db, ask("video,country,continent", BREAKDOWN_METRICS), sort="video_view")
    by_place = Sheet(SHEETS[3], [
        ("country", "continent", *BREAKDOWN_METRICS),
        *((row["dimensions"]["country"], row["dimensions"]["continent"], *(row["totals"][m] for m in BREAKDOWN_METRICS))
          for row in places),
    ], header_rows=1, widths=(10, 10, 12, 22, 18))

    return Report(account, video, start_ms, end_ms, (summary, concurrent, by_device, by_place))


async def _all_totals(db: ClickHouse, question: Any, sort: str | None) -> list[dict[str, Any]]:
    """Every row /v1/events would page through (limit 10,000 each), ``sort`` descending when given."""
    rows: list[dict[str, Any]] = []
    while True:
        page = (await answers.totals(db, question, sort, sort is not None, PAGE, len(rows)))["data"]
        rows.extend(page)
        if len(page) < PAGE:
            return rows


def _ccu_buckets(question: Any) -> tuple[str, Any]:
    """The smallest of CCU_BUCKETS within the 50,000-point limit; the coarsest one's error when none is."""
    for duration in CCU_BUCKETS[:-1]:
        try:
            return duration, parse_buckets(question, duration, None)
        except QueryError:
            continue
    return CCU_BUCKETS[-1], parse_buckets(question, CCU_BUCKETS[-1], None)


def _points(data: list[dict[str, Any]], timestamps: list[int]) -> list[tuple[int, Any]]:
    """The one series (where pins a single video), or every bucket at 0 when the video has no data."""
    if not data:
        return [(ts, 0) for ts in timestamps]
    return [(point["timestamp"], point["value"]) for point in data[0]["points"]]


async def _peak_minute(db: ClickHouse, account: str, where: str, bucket: str, points: list[tuple[int, Any]],
                       peak: Any, end_ms: int) -> int:
    """The first minute whose ccu is the peak: the first bucket reaching it, looked into minute by minute."""
    index = next(i for i, (_, value) in enumerate(points) if value == peak)
    first = points[index][0]
    if bucket == "1m":
        return first
    last = points[index + 1][0] if index + 1 < len(points) else end_ms
    within = parse_question(account, "video", "ccu", where, str(first), str(last - 1))
    minutes = await answers.timeseries(db, within, parse_buckets(within, "1m", None))
    return next((ts for ts, value in _points(minutes["ccu"]["data"], []) if value == peak), first)


def _format(text: str | None) -> str:
    kind = (text or "xlsx").strip().lower()
    if kind not in FORMATS:
        raise QueryError(f"unknown format {text!r}", list(FORMATS))
    return kind


def _xlsx(sheets: tuple[Sheet, ...]) -> bytes:
    workbook = Workbook(write_only=True)
    bold = Font(bold=True)
    for sheet in sheets:
        worksheet = workbook.create_sheet(sheet.name)
        for column, width in enumerate(sheet.widths):
            worksheet.column_dimensions[chr(ord("A") + column)].width = width
        worksheet.freeze_panes = f"A{sheet.header_rows + 1}"
        for number, row in enumerate(sheet.rows):
            worksheet.append([_xlsx_cell(worksheet, value, bold if number < sheet.header_rows else None)
                              for value in row])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _xlsx_cell(worksheet: Any, value: Any, font: Font | None) -> Any:
    if not isinstance(value, str) and font is None:
        return value
    cell = WriteOnlyCell(worksheet, value=ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value)
    if isinstance(value, str):
        cell.data_type = "s"  # text stays text: a value starting with "=" is not a formula
    if font is not None:
        cell.font = font
    return cell


def _csv(sheets: tuple[Sheet, ...]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    for sheet in sheets:
        for row in sheet.rows:
            writer.writerow([sheet.name, *(_csv_cell(value) for value in row)])
    return out.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms // 1000, dt.timezone.utc)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, dt.timezone.utc).strftime("%Y%m%dT%H%MZ")


def _safe(text: str) -> str:
    return _UNSAFE_IN_FILENAME.sub("_", text).strip("_")[:64] or "_"
