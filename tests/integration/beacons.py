"""Builds beacon envelopes, posts them and reads the API back, for end-to-end tests (no pipeline code involved)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


def envelope(session: str, video: str, events: list[dict[str, Any]], account: str = "1234", player: str = "web",
             **extra: Any) -> dict[str, Any]:
    return {"account": account, "player": player, "session": session, "video": video, "events": events, **extra}


def post(client: httpx.Client, body: dict[str, Any], ip: str = "8.8.8.8", user_agent: str = DESKTOP) -> dict[str, Any]:
    """Posts one batch as a player behind a trusted proxy would; fails on anything but a full acceptance."""
    response = client.post("/v1/track", json=body, headers={"X-Forwarded-For": ip, "User-Agent": user_agent})
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["rejected"] == 0, result
    return result


def get(process: Any, endpoint: str, account: str, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{process.url}/v1/{endpoint}/accounts/{account}", params=params, timeout=30,
                         auth=process.auth)
    assert response.status_code == 200, response.text
    return response.json()


def eventually(fetch: Callable[[], Any], expected: Any, timeout_s: float = 120) -> Any:
    """Polls until the pipeline has caught up; returns the last answer for the assertion's diff.

    The default covers a session closed by silence: the worker waits timeout + grace (65 s in the tests)
    after its last batch arrived before it writes the stretch after its last event."""
    deadline = time.monotonic() + timeout_s
    answer = fetch()
    while answer != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = fetch()
    return answer
