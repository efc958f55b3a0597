"""``vidpulse accounts ...`` and ``vidpulse keys ...``: tenants and their read keys, straight in the store.

Against a ClickHouse server this works while everything runs (trackers and APIs
see changes within VIDPULSE_ACCOUNTS_REFRESH_S). With a ``chdb://`` URL it works
while ``vidpulse up`` runs in its split form too: the server ``up`` runs on that
folder is found (vidpulse/localserver.py) and used. The embedded engine itself
allows one process per folder, so with ``VIDPULSE_UP_PROCESSES=one`` it works
while ``vidpulse up`` is stopped.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from aggregations import accounts as store
from aggregations.clickhouse import ClickHouse, ClickHouseError, connect
from aggregations.schema import migrate
from ingest.settings import Settings
from queries.catalog import METRICS
from vidpulse.localserver import server_url_for


def add_commands(commands: Any) -> None:
    """Adds the ``accounts`` and ``keys`` commands to the CLI's subparsers."""
    accounts = commands.add_parser("accounts", help="create, list, update or delete accounts").add_subparsers(
        dest="action", required=True)
    create = accounts.add_parser("create", help="a new account (the tracker accepts beacons only for accounts)")
    create.add_argument("account", nargs="+", help="1-64 characters of A-Z a-z 0-9 _ -")
    _account_options(create)
    accounts.add_parser("list", help="every account, deleted ones included").add_argument("--json", action="store_true")
    update = accounts.add_parser("update", help="change an account's name, allowed origins or monthly event quota")
    update.add_argument("account")
    _account_options(update)
    update.add_argument("--any-origin", action="store_true", help="allow beacons from any origin again")
    delete = accounts.add_parser("delete", help="refuse the account's beacons and keys from now on (data is kept)")
    delete.add_argument("account")

    keys = commands.add_parser("keys", help="create, list or revoke read keys").add_subparsers(dest="action",
                                                                                              required=True)
    create_key = keys.add_parser("create", help="a new key, shown this once")
    create_key.add_argument("account")
    kind = create_key.add_mutually_exclusive_group(required=True)
    kind.add_argument("--secret", action="store_const", const="secret", dest="kind", help="reads all of the account")
    kind.add_argument("--public", action="store_const", const="public", dest="kind",
                      help="safe in a page: needs --video, --metric and --origin")
    create_key.add_argument("--name", default="")
    create_key.add_argument("--video", action="append", default=[], help="a video it may read (repeat)")
    create_key.add_argument("--metric", action="append", default=[], help=f"a metric it may read (repeat): {', '.join(METRICS)}")
    create_key.add_argument("--origin", action="append", default=[], help="a page origin that may use it (repeat)")
    create_key.add_argument("--rate", default="", help="its own rate limit, e.g. 200/second (default: VIDPULSE_RATE_LIMIT_KEY)")
    create_key.add_argument("--json", action="store_true")
    listing = keys.add_parser("list", help="keys (never the keys themselves)")
    listing.add_argument("account", nargs="?")
    listing.add_argument("--json", action="store_true")
    keys.add_parser("revoke", help="refuse a key from now on").add_argument("key_id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 done, 1 the store cannot be opened, 2 the request was refused (the reason on stderr)."""
    url = server_url_for(settings.clickhouse_url, settings.chdb_folder)
    try:
        migrate(url, settings.clickhouse_database)
        db = connect(url, settings.clickhouse_database)
    except ClickHouseError as exc:
        print(f"vidpulse: {exc}", file=sys.stderr)
        return 1
    try:
        return _ACTIONS[(args.command, args.action)](db, args)
    except store.AccountError as exc:
        print(f"vidpulse: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()


def _account_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name")
    parser.add_argument("--origin", action="append", help="a page origin allowed to send beacons (repeat); "
                                                          "none: any origin")
    parser.add_argument("--quota", type=int, help="accepted events per UTC month; beyond it the trackers answer 429 "
                                                  "(0: no quota)")


def _create_accounts(db: ClickHouse, args: argparse.Namespace) -> int:
    for account in args.account:
        created = store.create_account(db, account, args.name or "", tuple(args.origin or ()), args.quota or 0)
        print(f"created account {created.account}")
    return 0


def _list_accounts(db: ClickHouse, args: argparse.Namespace) -> int:
    found = store.list_accounts(db)
    rows = [{"account": a.account, "name": a.name, "origins": list(a.origins), "active": a.active,
             "created_at": a.created_at.isoformat(), "monthly_event_quota": a.monthly_event_quota} for a in found]
    _print(rows, args.json, "{account:<24} {active!s:<6} {name:<24} {monthly_event_quota:<12} {origins}")
    return 0


def _update_account(db: ClickHouse, args: argparse.Namespace) -> int:
    origins = () if args.any_origin else (tuple(args.origin) if args.origin else None)
    updated = store.update_account(db, args.account, name=args.name, origins=origins, monthly_event_quota=args.quota)
    print(f"updated account {updated.account}: origins {', '.join(updated.origins) or 'any'}, monthly event quota "
          f"{updated.monthly_event_quota or 'none'}")
    return 0


def _delete_account(db: ClickHouse, args: argparse.Namespace) -> int:
    store.update_account(db, args.account, active=False)
    print(f"deleted account {args.account}: its beacons and keys are refused; its data is kept")
    return 0


def _create_key(db: ClickHouse, args: argparse.Namespace) -> int:
    unknown = [metric for metric in args.metric if metric not in METRICS]
    if unknown:
        raise store.AccountError(f"unknown metric {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    key, secret = store.create_key(db, args.account, args.kind, args.name, tuple(args.video), tuple(args.metric),
                                   tuple(args.origin), args.rate)
    if args.json:
        print(orjson.dumps({"key_id": key.key_id, "account": key.account, "kind": key.kind, "key": secret}).decode())
    else:
        print(f"created {key.kind} key {key.key_id} for account {key.account}; it is shown this once:\n{secret}")
    return 0


def _list_keys(db: ClickHouse, args: argparse.Namespace) -> int:
    rows = [{"key_id": k.key_id, "account": k.account, "kind": k.kind, "name": k.name, "videos": list(k.videos),
             "metrics": list(k.metrics), "origins": list(k.origins), "rate": k.rate_limit or "default",
             "created_at": k.created_at.isoformat(), "revoked": k.revoked_at is not None}
            for k in store.list_keys(db, args.account)]
    _print(rows, args.json, "{key_id:<14} {account:<20} {kind:<7} {revoked!s:<6} {name:<20} {videos} {metrics} {origins}")
    return 0


def _revoke_key(db: ClickHouse, args: argparse.Namespace) -> int:
    revoked = store.revoke_key(db, args.key_id)
    print(f"revoked key {revoked.key_id} of account {revoked.account}")
    return 0


def _print(rows: list[dict[str, Any]], as_json: bool, line: str) -> None:
    if as_json:
        print(orjson.dumps(rows).decode())
        return
    for row in rows:
        print(line.format(**row))


_ACTIONS = {("accounts", "create"): _create_accounts, ("accounts", "list"): _list_accounts,
            ("accounts", "update"): _update_account, ("accounts", "delete"): _delete_account,
            ("keys", "create"): _create_key, ("keys", "list"): _list_keys, ("keys", "revoke"): _revoke_key}
