"""The JSON response every vidpulse endpoint answers with (orjson: fast, and exact with big integers)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response


def cors_headers(origin: str) -> dict[str, str]:
    """What lets the page at ``origin`` read an answer, its Retry-After included (the SDK backs off by it)."""
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": "Retry-After"}


def allow_origin(response: Response, origin: str) -> Response:
    response.headers.update(cors_headers(origin))
    return response


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
