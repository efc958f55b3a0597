"""The built-in dashboard at ``/``: static files only. Everything it shows it asks of the public API
(``/v1/whoami``, ``/v1/events``, ``/v1/timeseries``, retention, export and the live channel) with the key
the user pasted, so it shows exactly what the API answers and can do nothing a key could not.

The page and its script live in ``queries/dashboard/``; its one front-end dependency (uPlot, a time-series
chart library) is installed from npm into ``queries/dashboard/node_modules`` by ``make install`` and served
from here: no CDN, works offline. Only the files named below are served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from ingest.http import OrjsonResponse

HERE = Path(__file__).resolve().parent / "dashboard"
ASSETS = {
    "app.js": (HERE / "app.js", "text/javascript"),
    "app.css": (HERE / "app.css", "text/css"),
    "uplot.js": (HERE / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js", "text/javascript"),
    "uplot.css": (HERE / "node_modules" / "uplot" / "dist" / "uPlot.min.css", "text/css"),
}
# The page talks to its own origin only; the key never leaves sessionStorage but in headers (and the
# WebSocket's subprotocol offer).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # a public key used from this page is recognised by its Referer
    "Cache-Control": "no-cache",
}


def dashboard_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def page() -> Response:
        return FileResponse(HERE / "index.html", media_type="text/html", headers=SECURITY_HEADERS)

    @router.get("/dashboard/{name}")
    async def asset(name: str) -> Response:
        found = ASSETS.get(name)
        if found is None:
            return OrjsonResponse({"error": f"no dashboard file {name!r}"}, status_code=404)
        path, media_type = found
        if not path.exists():
            return OrjsonResponse({"error": f"{path.name} is not installed: run `make install` (it runs npm ci in "
                                            "queries/dashboard)"}, status_code=503)
        return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)

    return router
