"""The query parameters' contract as JSON Schema, made from the same lists and limits the parsers use.

The handlers take every parameter as a plain string and parse it themselves (``queries.params``), so the
key is checked before any parameter: FastAPI's own validation would answer a bad parameter before a
missing key. The document states here what those parsers accept, exactly enough that a value it calls
valid is one the API takes (Schemathesis checks both directions). What depends on two parameters at once
(``from`` before ``to``, at most 50,000 points per series, ``sort`` among the asked metrics) is said in
the descriptions: a JSON Schema of one parameter cannot say it.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Any

from queries import livepeer
from queries.catalog import BOOLEAN_DIMENSIONS, ENUM_DIMENSIONS, GROUPABLE, METRICS
from queries.export import FORMATS
from queries.live import FIELDS
from queries.params import MAX_EPOCH_MS, MAX_LIMIT, MAX_POINTS, TIME_STEPS

Schema = dict[str, Any]
# A value in ``where`` (and a video id that goes into one): no separator, not blank (values are trimmed).
VALUE = r"[^,;]*[^,;\s][^,;]*"
# Years whose every instant, in any UTC offset, lies inside the range ClickHouse's DateTime holds; days 1-28
# are valid in every month. The parser takes more of ISO 8601 (any day, week dates, "+" sent as a space).
_YEAR = r"(19[7-9][1-9]|19[89]0|20[0-9]{2}|210[0-4])"
_DAY = rf"{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
ISO_TIME = rf"^{_DAY}([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{{1,6}})?)?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?)?$"
LARGEST_WHOLE = 10**18 - 1  # what the parsers read as a number (18 digits)


def _alternatives(names: Any) -> str:
    return "|".join(re.escape(name) for name in names)


def where_pattern() -> str:
    """``d1==v1,v2;d2==v3``: each clause a dimension of the catalog; ``live`` and ``viewer`` take their values."""
    free = [name for name in GROUPABLE if name not in BOOLEAN_DIMENSIONS and name not in ENUM_DIMENSIONS]
    clauses = [rf"\s*({_alternatives(free)})\s*=={VALUE}(,{VALUE})*"]
    for name, values in {**BOOLEAN_DIMENSIONS, **ENUM_DIMENSIONS}.items():
        value = rf"\s*({_alternatives(values)})\s*"
        clauses.append(rf"\s*{re.escape(name)}\s*=={value}(,{value})*")
    clause = f"({'|'.join(clauses)})"
    return f"^{clause}(;{clause})*$"


def _list_of(names: Any, description: str) -> tuple[Schema, dict[str, Any]]:
    """A comma-separated list of names (``style: form, explode: false``)."""
    return ({"type": "array", "items": {"type": "string", "enum": list(names)}, "minItems": 1},
            {"style": "form", "explode": False, "description": description})


def _time(description: str) -> Schema:
    return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS - 1},
                      {"type": "string", "pattern": ISO_TIME}], "description": description}


def _whole(low: int, high: int) -> Schema:
    return {"type": "integer", "minimum": low, "maximum": high}


_RANGE = (f"; `from` must not be after `to`, and a timeseries holds at most {MAX_POINTS} points per series "
          "(a 400 says so otherwise)")
VIDEO_ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": rf"^(?!\.{{1,2}}$){VALUE}$"}
PATH_SEGMENT = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^(?!\.{1,2}$)[^/]+$"}


def query_parameters() -> dict[str, tuple[Schema, dict[str, Any]]]:
    """name → (schema, other fields of the parameter object) for every query parameter of the REST faces."""
    dimensions = _list_of(GROUPABLE, "comma-separated dimensions to group by; `account` is the whole account")
    metrics = _list_of(METRICS, "comma-separated metrics")
    return {
        "dimensions": (dimensions[0], {**dimensions[1], "required": True}),
        "metrics": (metrics[0], {**metrics[1], "required": True}),
        "where": ({"type": "string", "pattern": where_pattern()},
                  {"description": "d1==v1,v2;d2==v3: ';' joins clauses (AND), ',' lists values (IN)"}),
        "from": (_time("epoch ms or ISO 8601 (UTC unless it says); default now - 32 days" + _RANGE), {}),
        "to": (_time("epoch ms or ISO 8601; default now; the minute holding it is included" + _RANGE), {}),
        "bucket_duration": ({"type": "string", "pattern": r"^[1-9][0-9]{0,6}[mhd]$"},
                            {"description": "<n>m, <n>h or <n>d; default 1m; one of bucket_duration, bucket_limit "
                                            "and time_step at most"}),
        "bucket_limit": (_whole(1, LARGEST_WHOLE), {"description": "the range cut into at most n equal whole-minute "
                                                                   "buckets"}),
        "time_step": ({"type": "string", "enum": list(TIME_STEPS)}, {"description": "calendar buckets in `tz`"}),
        "tz": ({"type": "string", "enum": sorted(zoneinfo.available_timezones())},
               {"description": "IANA time zone of time_step's calendar (only with time_step); default UTC"}),
        "sort": ({"type": "string", "pattern": f"^-?({_alternatives(METRICS)})$"},
                 {"description": "one of the asked metrics; a '-' prefix sorts descending"}),
        "limit": (_whole(1, MAX_LIMIT), {"description": "rows per page, default 100"}),
        "offset": (_whole(0, LARGEST_WHOLE), {"description": "rows to skip, default 0"}),
        "viewer": ({"type": "string", "minLength": 1, "maxLength": 128},
                   {"description": "all (default), anonymous, registered, or one user id"}),
        "format": ({"type": "string", "enum": list(FORMATS)}, {"description": "xlsx (default) or csv"}),
        "fields": _list_of(FIELDS, "comma-separated figures to answer; default all"),
        "key": ({"type": "string"}, {"description": "the API key, for clients that cannot send headers "
                                                    "(EventSource); never logged"}),
        "timeStep": ({"type": "string", "enum": [step for step in TIME_STEPS if step != "all"]},
                     {"description": "one row per calendar step (UTC); leave out for the whole range"}),
        "playbackId": ({"type": "string", "pattern": f"^{VALUE}$"}, {"description": "the video's id"}),
        "assetId": ({"type": "string", "pattern": f"^{VALUE}$"},
                    {"description": "the video's id (at most one of playbackId, assetId, streamId)"}),
        "streamId": ({"type": "string", "pattern": f"^{VALUE}$"},
                     {"description": "the video's id (at most one of playbackId, assetId, streamId)"}),
        "creatorId": ({"type": "string"}, {"description": "the key's account (another is a 403)"}),
        "breakdownBy[]": _breakdown(livepeer.DIMENSIONS),
    }


def _breakdown(names: Any) -> tuple[Schema, dict[str, Any]]:
    return ({"type": "array", "items": {"type": "string", "enum": list(names)}},
            {"style": "form", "explode": True, "description": "Livepeer dimensions to break down by"})


DAY = rf"^{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$"
# Per operation, what differs from the table above.
OVERRIDES: dict[str, dict[str, tuple[Schema, dict[str, Any]] | None]] = {  # None: not offered there
    "/v1/usage/accounts/{account_id}": {
        "from": ({"type": "string", "pattern": DAY}, {"description": "YYYY-MM-DD (UTC); default the 1st of this month; "
                                                                     "at most 400 days before `to`"}),
        "to": ({"type": "string", "pattern": DAY}, {"description": "YYYY-MM-DD (UTC); default today"})},
    "/v1/retention/accounts/{account_id}/videos/{video_id}": {"video_id": (PATH_SEGMENT, {})},
    "/data/views/now": {"breakdownBy[]": _breakdown(livepeer.NOW_DIMENSIONS),
                        "playbackId": ({"type": "string"}, {"description": "the video's id"})},
    "/data/usage/query": {"breakdownBy[]": _breakdown(["creatorId"]), "timeStep": None},
}
# Parameters whose empty value (``?to=``) means the default, as if left out.
EMPTY_IS_DEFAULT = frozenset({"where", "from", "to", "bucket_duration", "bucket_limit", "time_step", "tz", "sort", "limit",
                              "offset", "format", "fields", "key", "timeStep", "playbackId", "assetId", "streamId",
                              "creatorId"})
PATH_PARAMETERS: dict[str, Schema] = {
    "account_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                   "description": "the account's id; a key opens its own account only (403 otherwise)"},
    "video_id": VIDEO_ID,
    "playbackId": {"type": "string", "pattern": r"^(?!\.{1,2}$)[^,;/]*[^,;/\s][^,;/]*$"},
}
