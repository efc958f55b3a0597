"""JSON in and out with orjson's speed and the standard's breadth.

orjson refuses integers beyond 64 bits, which RFC 8259 allows; a beacon
holding one must still be judged event by event, and its dead letter must
still be written, so both directions fall back to the standard library.
NaN and Infinity stay refused: they are not JSON.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class NotJSON(ValueError):
    pass


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            raise NotJSON(str(fast_error)) from fast_error


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
