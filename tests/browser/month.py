"""A month of simulated traffic for the dashboard tests, posted through the real tracker.

``vidpulse simulate`` plays its sessions in the last ~40 minutes only. The dashboard must stay fast over a
30-day range, so this helper replays the simulator's own generator (``ingest.simulator.generate``: the same
devices, countries, videos and session shapes) at windows spread over the last 30 days, more of them in the
(UTC) evening than at night, and posts each session's batches as the simulator does (its User-Agent, its
``X-Forwarded-For``, no ``sent_at``, so ``ts`` is the event time). The tracker must accept events that old:
start it with ``lateness_s`` above 30 days (events_raw keeps 32).

Run as ``python -m tests.browser.month <tracker url> <account> <sessions> <videos> [seed]``; prints what was sent
(as JSON: sessions, batches, events, and the views among them).
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time

import httpx
import orjson

from ingest.simulator import MINUTE_MS, PlannedSession, generate

DAY_MS = 86_400_000
DAYS = 30
WINDOWS_PER_DAY = 8           # one generator window (≈30 minutes of session starts) every 3 hours
OLDEST_GAP_MS = 2 * 3600_000  # the newest window ends two hours ago, clear of `vidpulse simulate`'s 40 minutes


def plan(account: str, sessions: int, videos: int, seed: int, now_ms: int) -> list[PlannedSession]:
    """About ``sessions`` sessions over 30 days; a window's share follows the time of day (UTC)."""
    rng = random.Random(seed)
    windows = []
    for day in range(DAYS):
        for slot in range(WINDOWS_PER_DAY):
            at = now_ms - OLDEST_GAP_MS - day * DAY_MS - slot * (DAY_MS // WINDOWS_PER_DAY)
            hour = at // 3600_000 % 24
            windows.append((at, 1.6 + math.sin((hour - 14) / 24 * 2 * math.pi) + rng.random() * 0.4))
    scale = sessions / sum(weight for _, weight in windows)
    planned: list[PlannedSession] = []
    for index, (at, weight) in enumerate(windows):
        count = max(1, round(weight * scale))
        planned += generate(seed * 1000 + index, count, videos, account, at, f"m{seed}w{index:03d}")
    return planned


async def send(url: str, planned: list[PlannedSession], concurrency: int = 40) -> tuple[int, int]:
    """Posts every session's batches in order (sessions in parallel); (batches, events) accepted."""
    gate = asyncio.Semaphore(concurrency)
    totals = [0, 0]

    async def one(client: httpx.AsyncClient, session: PlannedSession) -> None:
        async with gate:
            headers = {"Content-Type": "application/json", "User-Agent": session.viewer.device.user_agent,
                       "X-Forwarded-For": session.viewer.ip}
            # One POST per session (a player may flush its whole queue at once): a month of sessions must
            # be sent in well under a minute on a busy two-core machine.
            body = orjson.dumps(session.envelope(session.events))
            response = None
            for attempt in range(8):
                try:
                    response = await client.post(f"{url}/v1/track", content=body, headers=headers)
                except httpx.TransportError:
                    response = None  # the same body again: the sessionizer drops events it already has
                if response is not None and response.status_code not in (429, 503):
                    break
                await asyncio.sleep(0.2 * 2 ** attempt)
            if response is None or response.status_code != 202 or response.json().get("rejected"):
                raise RuntimeError(f"{session.session}: {response and response.status_code} "
                                   f"{response and response.text[:300]}")
            totals[0] += 1
            totals[1] += len(session.events)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(one(client, session) for session in planned))
    return totals[0], totals[1]


def main(argv: list[str]) -> int:
    url, account, sessions, videos = argv[0].rstrip("/"), argv[1], int(argv[2]), int(argv[3])
    seed = int(argv[4]) if len(argv) > 4 else 7
    started = time.monotonic()
    planned = plan(account, sessions, videos, seed, int(time.time() * 1000) // MINUTE_MS * MINUTE_MS)
    batches, events = asyncio.run(send(url, planned))
    views = sum(event["type"] == "view" for session in planned for event in session.events)
    print(orjson.dumps({"sessions": len(planned), "batches": batches, "events": events, "views": views,
                        "seconds": round(time.monotonic() - started, 1)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
