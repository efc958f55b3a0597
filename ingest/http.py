"""The JSON response every vidpulse endpoint answers with (orjson: fast, and exact with big integers)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response


def allow_origin(response: Response, origin: str) -> Response:
    """Lets the page at ``origin`` read this answer, its Retry-After included (the SDK backs off by it)."""
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
