"""Request limits by kind (the tracker's per client IP and per account, the API's per key), in this process's memory.

Fixed windows, as the limits library's ``FixedWindowRateLimiter`` over its ``MemoryStorage`` counts
them (a key's window opens at its first request and lasts the rate's period; a refused request
counts too), kept here in one dictionary: that storage started a ``threading.Timer`` thread
whenever its previous one had expired, which under load was a tenth of the tracker's event loop.
Windows that are over are dropped at most once a second, so a flood of distinct IPs cannot grow
memory beyond one window's worth of keys. The limits library still reads the rates ("100/second").
Each process enforces its own share: N trackers (or API processes) behind a balancer allow up to N
times the configured rate.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse

PURGE_EVERY_S = 1.0


class RateLimits:
    def __init__(self, rates: Mapping[str, str]) -> None:
        """``rates``: the default rate of each kind, in the limits library's notation ("100/second")."""
        self._rates = dict(rates)
        # (kind, key, amount, period) -> [window end (epoch s), requests in the window]
        self._windows: dict[tuple[str, str, int, int], list[float]] = {}
        self._purge_at = 0.0

    def retry_after_s(self, kind: str, key: str, rate: str = "") -> int | None:
        """None when the request may pass (and counts it); else whole seconds until the window resets.
        ``rate`` overrides the kind's default for this key (a key created with its own rate)."""
        limit = parse_rate(rate or self._rates[kind])
        period = limit.get_expiry()
        now = time.time()
        if now >= self._purge_at:
            self._purge(now)
        slot = (kind, key, limit.amount, period)
        window = self._windows.get(slot)
        if window is None or now >= window[0]:
            window = self._windows[slot] = [now + period, 0]
        window[1] += 1
        if window[1] <= limit.amount:
            return None
        return max(1, math.ceil(window[0] - now))

    def _purge(self, now: float) -> None:
        for slot in [slot for slot, window in self._windows.items() if now >= window[0]]:
            del self._windows[slot]
        self._purge_at = now + PURGE_EVERY_S


@functools.lru_cache(maxsize=256)
def parse_rate(rate: str) -> RateLimitItem:
    """A rate in the limits library's notation; ValueError, saying what is expected, for anything else."""
    try:
        return parse(rate)
    except ValueError as exc:
        raise ValueError(f"{rate!r} is not a rate like '50/second' or '1000/minute'") from exc
