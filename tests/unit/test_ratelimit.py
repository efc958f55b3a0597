"""The in-memory fixed windows count as the limits library's fixed-window limiter does."""

import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from ingest import ratelimit
from ingest.ratelimit import RateLimits


def test_a_window_allows_its_rate_then_refuses_until_it_resets(monkeypatch):
    now = [1_000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    limits = RateLimits({"ip": "3/second", "key": "2/minute"})
    assert [limits.retry_after_s("ip", "a") for _ in range(4)] == [None, None, None, 1]
    assert limits.retry_after_s("ip", "b") is None  # another key, its own window
    now[0] += 0.5
    assert limits.retry_after_s("ip", "a") == 1
    now[0] += 0.5  # the window opened at the first request has ended
    assert limits.retry_after_s("ip", "a") is None
    assert [limits.retry_after_s("key", "k") for _ in range(3)][2] == 60
    assert limits.retry_after_s("key", "k", "5/minute") is None  # a key's own rate has its own count
    now[0] += 10
    limits.retry_after_s("ip", "c")
    assert ("ip", "a", 3, 1) not in limits._windows  # noqa: SLF001 - ended windows leave memory


def test_the_same_answers_as_the_limits_library_over_a_burst(monkeypatch):
    now = [2_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])  # one clock for both
    ours, theirs = RateLimits({"ip": "50/second"}), FixedWindowRateLimiter(MemoryStorage())
    item = parse("50/second")
    answers = []
    for step in range(300):
        now[0] = 2_000.0 + step * 0.01  # 100 requests a second for 3 s
        answers.append((ours.retry_after_s("ip", "x") is None, theirs.hit(item, "ip", "x")))
    assert [a for a, _ in answers] == [b for _, b in answers]
    assert sum(a for a, _ in answers) == 150
