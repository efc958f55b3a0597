"""Usage and monthly quotas through the real pipeline: the usage report equals the counts of what was sent
(rejected events included, retries counted once), and an account over its quota gets 429s while everything
accepted before stays counted."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.beacons import DESKTOP, envelope, eventually, get
from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
LIMITED, FREE = "usage-quota", "usage-free"
QUOTA = 30


@pytest.fixture(scope="module")
def metered(_kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VidpulseProcess]:
    process = VidpulseProcess(_kafka_bootstrap, tmp_path_factory.mktemp("usage"), f"u{time.time_ns() % 10**12}",
                              accounts=(LIMITED, FREE), flush_interval_s="0.5", accounts_refresh_s="1",
                              rate_limit_key="100000/second")
    process.provision((LIMITED, FREE))
    env = {**os.environ, "VIDPULSE_CLICKHOUSE_URL": process.env["VIDPULSE_CLICKHOUSE_URL"]}
    done = subprocess.run([sys.executable, "-m", "vidpulse.cli", "accounts", "update", LIMITED, "--quota", str(QUOTA)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "monthly event quota 30" in done.stdout, done.stderr
    process.start()
    yield process
    process.stop()


def send(client: httpx.Client, account: str, session: str, events: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/v1/track", json=envelope(session, "v1", events, account=account),
                       headers={"X-Forwarded-For": "8.8.8.8", "User-Agent": DESKTOP})


def usage(process: VidpulseProcess, account: str) -> dict[str, Any]:
    return get(process, "usage", account)


def test_the_usage_report_equals_what_was_sent(metered):
    now = int(time.time() * 1000)
    with httpx.Client(base_url=metered.url, timeout=30) as client:
        first = [{"id": "1", "type": "view", "ts": now}, {"id": "2", "type": "heartbeat", "ts": now, "watched_ms": 30_000},
                 {"id": "3", "type": "warp_drive", "ts": now}, {"id": "2", "type": "heartbeat", "ts": now}]
        answer = send(client, FREE, "usage-session-1", first)
        assert answer.status_code == 202 and answer.json()["accepted"] == 2 and answer.json()["rejected"] == 2
        assert send(client, FREE, "usage-session-1", first[:2]).status_code == 202  # a client retry: counted once
        second = [{"id": "1", "type": "view", "ts": now}, {"id": "2", "type": "stop", "ts": now, "watched_ms": 6_000},
                  {"id": "3", "type": "view", "ts": now + 600_000}]  # too far in the future
        assert send(client, FREE, "usage-session-2", second).json()["rejected"] == 1

    today = dt.datetime.now(dt.UTC).date().isoformat()
    expected = {"day": today, "events_accepted": 4, "bot_events": 0, "events_rejected": 3,
                "rejected_by_reason": {"invalid": 1, "duplicate_id": 1, "in_future": 1}, "sessions": 2, "views": 2,
                "watch_minutes": 0.6}

    def today_of_free() -> dict[str, Any]:
        report = usage(metered, FREE)
        found = next((day for day in report["days"] if day["day"] == today), {})
        return {name: found.get(name) for name in expected}

    assert eventually(today_of_free, expected, timeout_s=45) == expected
    report = usage(metered, FREE)
    assert report["quota"]["monthly_events"] is None and report["totals"]["events_accepted"] == 4
    assert report["days"][-1]["raw_bytes_estimate"] > 0


def test_over_its_quota_an_account_gets_429s_and_keeps_what_was_accepted(metered):
    accepted, refusal, sent_at = 0, None, int(time.time() * 1000)
    with httpx.Client(base_url=metered.url, timeout=30) as client:
        for batch in range(40):
            events = [{"id": str(n), "type": "heartbeat", "ts": sent_at} for n in range(10)]
            answer = send(client, LIMITED, f"quota-session-{batch:03d}", events)
            if answer.status_code == 429:
                refusal = answer
                break
            assert answer.status_code == 202, answer.text
            accepted += answer.json()["accepted"]
            time.sleep(0.2)
        assert refusal is not None, f"{accepted} events accepted and no 429"
        assert "monthly quota of 30 accepted events" in refusal.json()["error"]
        assert int(refusal.headers["Retry-After"]) > 0
        # another account is not held back
        assert send(client, FREE, "free-after-quota", [{"id": "1", "type": "view", "ts": sent_at}]).status_code == 202
    assert QUOTA <= accepted <= QUOTA + 30  # a refresh may land between the store's count and this tracker's own

    def counted() -> int:
        return usage(metered, LIMITED)["totals"]["events_accepted"]
    assert eventually(counted, accepted, timeout_s=45) == accepted
    quota = usage(metered, LIMITED)["quota"]
    assert quota == {"month": dt.datetime.now(dt.UTC).strftime("%Y-%m"), "monthly_events": QUOTA, "used": accepted,
                     "remaining": 0}


def test_a_usage_report_refuses_bad_days_and_other_accounts_keys(metered):
    assert httpx.get(f"{metered.url}/v1/usage/accounts/{FREE}", params={"from": "last week"}, auth=metered.auth,
                     timeout=30).status_code == 400
    assert httpx.get(f"{metered.url}/v1/usage/accounts/{FREE}", params={"from": "2020-01-01", "to": "2026-01-01"},
                     auth=metered.auth, timeout=30).json()["error"].startswith("at most 400 days")
    other = {"Authorization": f"Bearer {metered.auth.keys[LIMITED]}"}
    assert httpx.get(f"{metered.url}/v1/usage/accounts/{FREE}", headers=other, timeout=30).status_code == 403
