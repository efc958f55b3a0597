"""Per-client-IP and per-account request limits, in this tracker process's memory.

Fixed windows from the limits library: cheap, and old keys expire by
themselves, so a flood of distinct IPs cannot grow memory without bound.
Each tracker enforces its own share: N trackers behind a balancer allow up to
N times the configured rate.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter


class RateLimits:
    def __init__(self, per_ip: str, per_account: str) -> None:
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        self._limits: dict[str, RateLimitItem] = {"ip": parse(per_ip), "account": parse(per_account)}

    def retry_after_s(self, kind: str, key: str) -> int | None:
        """None when the request may pass (and counts it); else whole seconds until the window resets."""
        limit = self._limits[kind]
        if self._limiter.hit(limit, kind, key):
            return None
        reset_at = self._limiter.get_window_stats(limit, kind, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))
