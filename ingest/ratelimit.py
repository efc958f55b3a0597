"""Request limits by kind (the tracker's per client IP and per account, the API's per key), in this process's memory.

Fixed windows from the limits library: cheap, and old keys expire by
themselves, so a flood of distinct IPs cannot grow memory without bound.
Each process enforces its own share: N trackers (or API processes) behind a
balancer allow up to N times the configured rate.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter


class RateLimits:
    def __init__(self, rates: Mapping[str, str]) -> None:
        """``rates``: the default rate of each kind, in the limits library's notation ("100/second")."""
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        self._rates = dict(rates)

    def retry_after_s(self, kind: str, key: str, rate: str = "") -> int | None:
        """None when the request may pass (and counts it); else whole seconds until the window resets.
        ``rate`` overrides the kind's default for this key (a key created with its own rate)."""
        limit = parse_rate(rate or self._rates[kind])
        if self._limiter.hit(limit, kind, key):
            return None
        reset_at = self._limiter.get_window_stats(limit, kind, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))


@functools.lru_cache(maxsize=256)
def parse_rate(rate: str) -> RateLimitItem:
    """A rate in the limits library's notation; ValueError, saying what is expected, for anything else."""
    try:
        return parse(rate)
    except ValueError as exc:
        raise ValueError(f"{rate!r} is not a rate like '50/second' or '1000/minute'") from exc
