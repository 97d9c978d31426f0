"""Numbered, idempotent ClickHouse migrations for the analytics database (PostHog style).

Each module `mNNNN_description.py` has a `description` and `operations(ch) -> list[str]`: the DDL to
run, rendered for the engine and the state at hand (see `low_cardinality` and `ttl_clause`), safe to
run again: a CREATE says `IF NOT EXISTS`, an ALTER is asked for only while its change is missing
(18.16 has no `ADD COLUMN IF NOT EXISTS`). `migrate(ch)` runs the pending ones in order and records
each in `schema_migrations`. `max_migration.txt` names the newest module, so two branches that each add
a migration conflict in git instead of both taking the same number.

Run migrations from one process at a time (the service at start-up); should two overlap anyway,
the DDL is idempotent and `schema_migrations` (a ReplacingMergeTree) drops the duplicate record.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from inkloop_analytics.storage import ClickHouse

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
MODULE_NAME = re.compile(r"m(?P<number>\d{4})_[a-z0-9_]+")

APPLIED_VERSIONS = f"SELECT DISTINCT version FROM {MIGRATIONS_TABLE}"
TABLE_EXISTS = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = %(table)s"

# Retention written into the event tables' TTL where the engine has TTL; `retention.apply` changes it
# to the configured number of days at start (and drops old partitions on engines without TTL).
DEFAULT_RETENTION_DAYS = 400


COLUMN_NAMES = "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(table)s"


def add_missing_columns(ch: ClickHouse, table: str, columns: tuple[tuple[str, str], ...]) -> list[str]:
    """ALTERs adding those of (name, type and default) that `table` lacks: 18.16 has no ADD COLUMN IF
    NOT EXISTS, so a rerun asks for nothing."""
    existing = {name for (name,) in ch.query(COLUMN_NAMES, {"table": table})}
    return [
        f"ALTER TABLE {table} ADD COLUMN {name} {definition}" for name, definition in columns if name not in existing
    ]


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    description: str
    operations: Callable[[ClickHouse], list[str]]


def discover() -> list[Migration]:
    """Every migration module of this package, in order."""
    migrations = []
    for module_info in pkgutil.iter_modules(__path__):
        match = MODULE_NAME.fullmatch(module_info.name)
        if match is None:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        migrations.append(Migration(int(match["number"]), module_info.name, module.description, module.operations))
    return sorted(migrations, key=lambda migration: migration.number)


def applied_versions(ch: ClickHouse) -> set[int]:
    [(exists,)] = ch.query(TABLE_EXISTS, {"table": MIGRATIONS_TABLE})
    if not exists:
        return set()
    return {version for (version,) in ch.query(APPLIED_VERSIONS)}


def migrate(ch: ClickHouse) -> list[int]:
    """Apply the migrations not yet recorded in `ch`'s database; returns their numbers, in order."""
    done = applied_versions(ch)
    newly_applied = []
    for migration in discover():
        if migration.number in done:
            continue
        log.info("applying migration %s: %s", migration.name, migration.description)
        for statement in migration.operations(ch):
            ch.execute(statement)
        ch.insert(
            MIGRATIONS_TABLE, ["version", "name", "applied_at"], [(migration.number, migration.name, datetime.now(UTC))]
        )
        newly_applied.append(migration.number)
    return newly_applied


def low_cardinality(ch: ClickHouse, column_type: str) -> str:
    """`LowCardinality(T)` where the engine takes it (18.16 only behind an experimental setting)."""
    return f"LowCardinality({column_type})" if ch.supports("low_cardinality") else column_type


def ttl_clause(ch: ClickHouse, expression: str) -> str:
    """`TTL expression` for a MergeTree table, or nothing where the engine has no TTL (18.16), in
    which case old data has to be dropped by other means (e.g. `ALTER TABLE … DROP PARTITION`)."""
    return f"TTL {expression}" if ch.supports("ttl") else ""
