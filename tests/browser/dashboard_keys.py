"""Accounts and keys for the dashboard tests, made in the process's database before it starts (chdb: one
process per folder): a secret key, public keys for one video (two metrics, and ccu only) from the process's own origin,
a secret key with a rate limit of its own (to meet a real 429), and a secret key of an account with no data.

Run as ``python -m tests.browser.dashboard_keys <clickhouse url> <account> <empty account> <origin> <video>``;
prints the keys as JSON.
"""

from __future__ import annotations

import sys

import orjson

from aggregations.accounts import create_account, create_key, find_account
from aggregations.clickhouse import connect
from aggregations.schema import migrate

PUBLIC_METRICS = ("ccu", "video_view")
SLOW_RATE = "4/second"


def make(url: str, account: str, empty_account: str, origin: str, video: str) -> dict[str, str]:
    migrate(url, "vidpulse")
    db = connect(url, "vidpulse")
    try:
        for name in (account, empty_account):
            if find_account(db, name) is None:
                create_account(db, name, "dashboard test")
        return {
            "secret": create_key(db, account, "secret", name="dashboard")[1],
            "public": create_key(db, account, "public", name="dashboard page", videos=(video,), metrics=PUBLIC_METRICS,
                                 origins=(origin,))[1],
            # like the development account's public key: one video, ccu only
            "ccu_only": create_key(db, account, "public", name="badge page", videos=(video,), metrics=("ccu",),
                                   origins=(origin,))[1],
            "slow": create_key(db, account, "secret", name="slow", rate_limit=SLOW_RATE)[1],
            "empty": create_key(db, empty_account, "secret", name="empty")[1],
        }
    finally:
        db.close()


if __name__ == "__main__":
    print(orjson.dumps(make(*sys.argv[1:6])).decode())
