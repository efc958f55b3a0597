"""Accounts and read keys, kept in ClickHouse: the one store the CLI, the trackers and the API share.

A change is a newer version of a row (ReplacingMergeTree), read back with FINAL,
so every write is an insert and writing the same change twice is harmless. A key
is shown once, when it is made; only the SHA-256 of the whole key is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from aggregations.clickhouse import ClickHouse
from ingest.ratelimit import parse_rate

KeyKind = Literal["secret", "public"]
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ORIGIN = re.compile(r"^https?://[^/\s?#]+$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_ACCOUNT_COLUMNS = ["account", "name", "origins", "active", "created_at", "monthly_event_quota", "version"]
_KEY_COLUMNS = ["key_id", "account", "kind", "key_hash", "name", "videos", "metrics", "origins", "rate_limit",
                "created_at", "revoked_at", "version"]


class AccountError(Exception):
    """A management request that cannot be carried out, with the reason to show the operator."""


@dataclass(frozen=True)
class Account:
    account: str
    name: str
    origins: tuple[str, ...]  # empty: any origin may send beacons (the protocol's default)
    active: bool
    created_at: dt.datetime
    monthly_event_quota: int = 0  # accepted events per UTC month; 0: no quota


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    account: str
    kind: KeyKind
    key_hash: str
    name: str
    videos: tuple[str, ...]   # public keys: the only videos they may ask about
    metrics: tuple[str, ...]  # public keys: the only metrics they may ask for
    origins: tuple[str, ...]  # public keys: the only pages that may use them
    rate_limit: str           # empty: the deployment's default per-key rate
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def public(self) -> bool:
        return self.kind == "public"


def hash_key(key: str) -> str:
    """Unsalted SHA-256 is enough: keys carry 190 random bits, so there is nothing to guess or precompute."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: KeyKind) -> tuple[str, str]:
    """(key id, key): the id is part of the key, so a leaked key names what to revoke."""
    key_id = secrets.token_hex(6)
    return key_id, f"vp_{kind[0]}k_{key_id}_{secrets.token_urlsafe(24)}"


def create_account(db: ClickHouse, account: str, name: str = "", origins: tuple[str, ...] = (),
                   monthly_event_quota: int = 0) -> Account:
    if not ACCOUNT_ID.match(account):
        raise AccountError(f"account id {account!r} must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
    if find_account(db, account) is not None:
        raise AccountError(f"account {account} exists already")
    created = Account(account, name, _origins(origins), True, _now(), _quota(monthly_event_quota))
    _write_account(db, created)
    return created


def update_account(db: ClickHouse, account: str, name: str | None = None,
                   origins: tuple[str, ...] | None = None, active: bool | None = None,
                   monthly_event_quota: int | None = None) -> Account:
    """None leaves a field as it is; ``active=False`` deletes (data stays; beacons and keys are refused);
    a quota of 0 removes the quota."""
    current = _existing(db, account)
    changed = replace(current, name=current.name if name is None else name,
                      origins=current.origins if origins is None else _origins(origins),
                      active=current.active if active is None else active,
                      monthly_event_quota=current.monthly_event_quota if monthly_event_quota is None
                      else _quota(monthly_event_quota))
    _write_account(db, changed)
    return changed


def find_account(db: ClickHouse, account: str) -> Account | None:
    rows = db.query(f"SELECT {', '.join(_ACCOUNT_COLUMNS[:-1])} FROM accounts FINAL WHERE account = {{a:String}}",
                    {"a": account})
    return _account(rows[0]) if rows else None


def list_accounts(db: ClickHouse) -> list[Account]:
    rows = db.query(f"SELECT {', '.join(_ACCOUNT_COLUMNS[:-1])} FROM accounts FINAL ORDER BY account")
    return [_account(row) for row in rows]


def create_key(db: ClickHouse, account: str, kind: KeyKind, name: str = "", videos: tuple[str, ...] = (),
               metrics: tuple[str, ...] = (), origins: tuple[str, ...] = (), rate_limit: str = "") -> tuple[ApiKey, str]:
    """The stored key and the key itself, which is never shown again."""
    if not _existing(db, account).active:
        raise AccountError(f"account {account} is deleted: it gets no new keys")
    if kind == "public" and not (videos and metrics and origins):
        raise AccountError("a public key must name its videos, its metrics and the origins that may use it")
    if kind == "secret" and (videos or metrics or origins):
        raise AccountError("a secret key reads all of its account: videos, metrics and origins are for public keys")
    _check_rate(rate_limit)
    key_id, key = new_key(kind)
    stored = ApiKey(key_id, account, kind, hash_key(key), name, tuple(videos), tuple(metrics), _origins(origins),
                    rate_limit, _now(), None)
    _write_key(db, stored)
    return stored, key


def list_keys(db: ClickHouse, account: str | None = None) -> list[ApiKey]:
    where = "WHERE account = {a:String}" if account else ""
    rows = db.query(f"SELECT {', '.join(_KEY_COLUMNS[:-1])} FROM api_keys FINAL {where} ORDER BY account, created_at",
                    {"a": account or ""})
    return [_key(row) for row in rows]


def revoke_key(db: ClickHouse, key_id: str) -> ApiKey:
    """Revoking twice keeps the first revocation's time."""
    rows = db.query(f"SELECT {', '.join(_KEY_COLUMNS[:-1])} FROM api_keys FINAL WHERE key_id = {{k:String}}",
                    {"k": key_id})
    if not rows:
        raise AccountError(f"no key with id {key_id!r}: `vidpulse keys list` shows the ids")
    current = _key(rows[0])
    if current.revoked_at is not None:
        return current
    revoked = replace(current, revoked_at=_now())
    _write_key(db, revoked)
    return revoked


def active_origins(db: ClickHouse) -> dict[str, tuple[str, ...]]:
    """What a tracker needs: every active account and the origins it allows (empty: any)."""
    rows = db.query("SELECT account, origins FROM accounts FINAL WHERE active")
    return {account: tuple(origins) for account, origins in rows}


def quota_usage(db: ClickHouse) -> dict[str, tuple[int, int]]:
    """What a tracker needs to enforce quotas: (monthly quota, events accepted this UTC month) of every active
    account that has a quota."""
    rows = db.query("SELECT a.account, a.monthly_event_quota, ifNull(u.used, 0) FROM "
                    "(SELECT account, monthly_event_quota FROM accounts FINAL WHERE active AND monthly_event_quota > 0) "
                    "AS a LEFT JOIN (SELECT account, sum(events) AS used FROM usage_daily "
                    "WHERE day >= toStartOfMonth(toDate(now('UTC'))) GROUP BY account) AS u ON a.account = u.account "
                    "SETTINGS join_use_nulls = 1")
    return {account: (int(quota), int(used)) for account, quota, used in rows}


def active_keys(db: ClickHouse) -> dict[str, ApiKey]:
    """What the API needs: the keys that open something, by hash (revoked keys and deleted accounts' keys: none)."""
    rows = db.query(f"SELECT {', '.join('k.' + c for c in _KEY_COLUMNS[:-1])} FROM api_keys AS k FINAL "
                    "INNER JOIN (SELECT account FROM accounts FINAL WHERE active) AS a ON k.account = a.account "
                    "WHERE k.revoked_at IS NULL")
    return {key.key_hash: key for key in map(_key, rows)}


def _existing(db: ClickHouse, account: str) -> Account:
    found = find_account(db, account)
    if found is None:
        raise AccountError(f"no account {account!r}: `vidpulse accounts list` shows them")
    return found


def _origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    """As browsers send them in ``Origin``: lower case, without the scheme's default port."""
    normal = []
    for origin in origins:
        if not ORIGIN.match(origin.lower()):
            raise AccountError(f"origin {origin!r} must be scheme://host[:port], as browsers send it, "
                               "e.g. https://www.example.com")
        scheme, _, host = origin.lower().partition("://")
        bare, _, port = host.rpartition(":")
        normal.append(f"{scheme}://{bare if port == _DEFAULT_PORTS[scheme] else host}")
    return tuple(dict.fromkeys(normal))


def _quota(events: int) -> int:
    if events < 0:
        raise AccountError("a monthly event quota is a whole number of events (0: none)")
    return events


def _check_rate(rate: str) -> None:
    if not rate:
        return
    try:
        parse_rate(rate)
    except ValueError as exc:
        raise AccountError(str(exc)) from exc


def _version(db: ClickHouse, table: str, column: str, value: str) -> int:
    """Later than every stored version of the row, even when this machine's clock is behind the one that wrote it."""
    stored = db.query(f"SELECT max(version) FROM {table} WHERE {column} = {{v:String}}", {"v": value})[0][0]
    return max(int(stored or 0) + 1, time.time_ns())


def _write_account(db: ClickHouse, account: Account) -> None:
    db.insert("accounts", [(account.account, account.name, list(account.origins), account.active,
                            account.created_at, account.monthly_event_quota,
                            _version(db, "accounts", "account", account.account))], _ACCOUNT_COLUMNS)


def _write_key(db: ClickHouse, key: ApiKey) -> None:
    db.insert("api_keys", [(key.key_id, key.account, key.kind, key.key_hash, key.name, list(key.videos),
                            list(key.metrics), list(key.origins), key.rate_limit, key.created_at, key.revoked_at,
                            _version(db, "api_keys", "key_id", key.key_id))], _KEY_COLUMNS)


def _account(row: tuple[Any, ...]) -> Account:
    account, name, origins, active, created_at, quota = row
    return Account(account, name, tuple(origins), bool(active), created_at, int(quota))


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, account, kind, key_hash, name, videos, metrics, origins, rate_limit, created_at, revoked_at = row
    return ApiKey(key_id, account, kind, key_hash, name, tuple(videos), tuple(metrics), tuple(origins), rate_limit,
                  created_at, revoked_at)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
