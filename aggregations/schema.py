"""Forward-only, idempotent schema migrations, applied by ``vidpulse migrate`` and at writer start-up.

Each ``migrations/NNNN_name.sql`` runs once per database, in order; its
statements use IF NOT EXISTS, so a migration interrupted half-way is simply
run again. Applied versions are recorded in ``schema_migrations``.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import NamedTuple

from aggregations.clickhouse import ClickHouse, connect

log = logging.getLogger(__name__)


class Migration(NamedTuple):
    version: int
    name: str
    statements: list[str]


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("aggregations.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            statements = [s.strip() for s in entry.read_text().split(";\n") if _has_sql(s)]
            found.append(Migration(int(version), name, statements))
    return sorted(found)


def migrate(url: str, database: str) -> list[int]:
    """Applies what is missing; returns the versions applied now."""
    server = connect(url, None)
    try:
        server.command(f"CREATE DATABASE IF NOT EXISTS `{_identifier(database)}`")
    finally:
        server.close()
    db = connect(url, database)
    try:
        return _apply_missing(db)
    finally:
        db.close()


def _apply_missing(db: ClickHouse) -> list[int]:
    db.command("CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
               "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
    done = {row[0] for row in db.query("SELECT version FROM schema_migrations")}
    applied = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements:
            db.command(statement)
        db.insert("schema_migrations", [(migration.version, migration.name)], ["version", "name"])
        log.info("applied migration %04d_%s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"VIDPULSE_CLICKHOUSE_DATABASE must be letters, digits and _, not {name!r}")
    return name
