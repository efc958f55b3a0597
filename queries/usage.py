"""``GET /v1/usage/accounts/{id}``: what an account used, per UTC day, and how much of its monthly quota is left.

From the pipeline's own counts: events accepted (``usage_daily``, fed like every summing view, so exact
under replay), events refused by reason (``rejected_events``, from the dead-letter topic), sessions
(distinct, bots left out), views and watch minutes (the query API's own answer), and an estimate of
the raw-event bytes still stored for the day. Days are days of receipt for events, rejections, sessions
and bytes, and days the views happened for views and watch minutes (as the query API counts them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query

from aggregations.accounts import ApiKey, find_account
from aggregations.clickhouse import ClickHouse
from ingest.http import OrjsonResponse
from queries import answers
from queries.api import AccountId, QueryContext, answer_with
from queries.auth import CallerOf
from queries.params import QueryError, Question, calendar_buckets

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?$")
MAX_DAYS = 400
RAW_RETENTION_DAYS = 32
Day = Annotated[str | None, Query(description="YYYY-MM-DD (UTC); from: default the 1st of this month, to: today")]


def usage_router(context: QueryContext) -> APIRouter:
    router = APIRouter(tags=["usage"], default_response_class=OrjsonResponse)

    @router.get("/v1/usage/accounts/{account_id}", summary="An account's usage per UTC day, and its monthly quota")
    async def usage(account_id: AccountId, caller: CallerOf, start: Annotated[str | None, Query(alias="from")] = None,
                    to: Day = None) -> Any:
        async def run(_: ApiKey) -> Any:
            first, last = _days(start, to)
            return await usage_report(context.db, account_id, first, last)
        return await answer_with(context, "usage", account_id, caller, run)

    return router


async def usage_report(db: ClickHouse, account: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    params = {"account": account, "first": first.isoformat(), "last": last.isoformat()}
    accepted = {day: (int(events), int(bots), int(sessions)) for day, events, bots, sessions in await db.aquery(
        "SELECT day, sum(events), sum(bot_events), uniqCombined64Merge(sessions) FROM usage_daily "
        "WHERE account = {account:String} AND day BETWEEN {first:Date} AND {last:Date} GROUP BY day", params)}
    rejected: dict[dt.date, dict[str, int]] = {}
    for day, reason, count in await db.aquery(
            "SELECT day, reason, uniqExact(kafka_partition, kafka_offset) FROM rejected_events "
            "WHERE account = {account:String} AND day BETWEEN {first:Date} AND {last:Date} GROUP BY day, reason", params):
        rejected.setdefault(day, {})[reason] = int(count)
    watched = await _views_per_day(db, account, first, last)
    bytes_per_event = await _raw_bytes_per_event(db)
    today = dt.datetime.now(dt.UTC).date()
    days = []
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        events, bots, sessions = accepted.get(day, (0, 0, 0))
        views, minutes = watched.get(day, (0, 0.0))
        kept = (today - day).days < RAW_RETENTION_DAYS
        days.append({"day": day.isoformat(), "events_accepted": events, "bot_events": bots,
                     "events_rejected": sum(rejected.get(day, {}).values()), "rejected_by_reason": rejected.get(day, {}),
                     "sessions": sessions, "views": views, "watch_minutes": minutes,
                     "raw_bytes_estimate": round(events * bytes_per_event) if kept else 0})
    totals = {name: sum(day[name] for day in days) for name in
              ("events_accepted", "bot_events", "events_rejected", "views", "raw_bytes_estimate")}
    totals["watch_minutes"] = round(sum(day["watch_minutes"] for day in days), 3)
    return {"account": account, "from": first.isoformat(), "to": last.isoformat(), "days": days, "totals": totals,
            "quota": await _quota(db, account, today),
            "notes": "sessions are distinct per day (not summed over days); raw_bytes_estimate = the day's events x "
                     "the average compressed size of a stored raw event (0 once raw events expire after 32 days)"}


async def _views_per_day(db: ClickHouse, account: str, first: dt.date, last: dt.date) -> dict[dt.date, tuple[int, float]]:
    start_ms = _ms(first)
    question = Question(account, (), ("video_view", "watch_minutes"), (), start_ms, _ms(last + dt.timedelta(days=1)))
    series = await answers.timeseries(db, question, calendar_buckets(question, "day", "UTC"))
    found: dict[dt.date, list[Any]] = {}
    for metric, place in (("video_view", 0), ("watch_minutes", 1)):
        for entry in series[metric]["data"]:
            for point in entry["points"]:
                day = dt.datetime.fromtimestamp(point["timestamp"] / 1000, dt.UTC).date()
                found.setdefault(day, [0, 0.0])[place] = point["value"]
    return {day: (int(values[0]), float(values[1])) for day, values in found.items()}


async def _raw_bytes_per_event(db: ClickHouse) -> float:
    rows = await db.aquery("SELECT sum(bytes_on_disk), sum(rows) FROM system.parts "
                           "WHERE database = currentDatabase() AND table = 'events_raw' AND active")
    total_bytes, total_rows = rows[0] if rows else (0, 0)
    return float(total_bytes or 0) / float(total_rows) if total_rows else 0.0


async def _quota(db: ClickHouse, account: str, today: dt.date) -> dict[str, Any]:
    found = await asyncio.to_thread(find_account, db, account)
    quota = found.monthly_event_quota if found else 0
    month = today.replace(day=1)
    used = (await db.aquery("SELECT sum(events) FROM usage_daily WHERE account = {account:String} AND day >= {m:Date}",
                            {"account": account, "m": month.isoformat()}))[0][0] or 0
    return {"month": month.strftime("%Y-%m"), "monthly_events": quota or None, "used": int(used),
            "remaining": max(0, quota - int(used)) if quota else None}


def _days(start: str | None, to: str | None) -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    first = _day("from", start) if start else today.replace(day=1)
    last = _day("to", to) if to else today
    if first > last:
        raise QueryError("`from` is after `to`")
    if (last - first).days >= MAX_DAYS:
        raise QueryError(f"at most {MAX_DAYS} days per usage report: narrow from/to")
    return first, last


def _day(parameter: str, text: str) -> dt.date:
    """YYYY-MM-DD, or the day of an ISO 8601 time (its first ten characters)."""
    try:
        day = dt.date.fromisoformat(text[:10]) if _DAY.match(text) else None
    except ValueError:
        day = None
    if day is None or not 1970 <= day.year < 2106:
        raise QueryError(f"`{parameter}` must be a day between 1970 and 2105, YYYY-MM-DD, not {text!r}")
    return day


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
