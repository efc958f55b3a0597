"""Serves the player SDK: ``/sdk/vidpulse.js`` (classic script) and ``/sdk/vidpulse.mjs`` (ES module)."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {"vidpulse.js": "text/javascript", "vidpulse.mjs": "text/javascript"}


def sdk_routes() -> list[Route]:
    return [Route(f"/sdk/{name}", _serve(name, media_type), methods=["GET"]) for name, media_type in FILES.items()]


def _serve(name: str, media_type: str):  # noqa: ANN202 - a Starlette endpoint
    async def endpoint(_: Request) -> Response:
        body = resources.files("ingest.sdk").joinpath(name).read_bytes()
        return Response(body, media_type=media_type, headers={
            "Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})
    return endpoint
