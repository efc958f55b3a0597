"""Accounts and secret keys for a test's vidpulse process, made before it starts (chdb: one process per folder).

Run as ``python -m tests.provision <clickhouse url> <account>...``: prints {account: secret key} as JSON.
"""

from __future__ import annotations

import sys

import orjson

from aggregations.accounts import create_account, create_key, find_account
from aggregations.clickhouse import connect
from aggregations.schema import migrate


def provision(url: str, accounts: list[str], database: str = "vidpulse") -> dict[str, str]:
    migrate(url, database)
    db = connect(url, database)
    try:
        keys = {}
        for account in accounts:
            if find_account(db, account) is None:
                create_account(db, account, "test")
            keys[account] = create_key(db, account, "secret", name="test")[1]
        return keys
    finally:
        db.close()


if __name__ == "__main__":
    print(orjson.dumps(provision(sys.argv[1], sys.argv[2:])).decode())
