"""Numbered, idempotent ClickHouse migrations for the analytics database (PostHog style).

Each module `mNNNN_description.py` has a `description` and `operations(ch) -> list[str]`: the DDL to
run, rendered for the engine and the state at hand (see `low_cardinality` and `ttl_clause`), safe to
run again: a CREATE says `IF NOT EXISTS`, an ALTER is asked for only while its change is missing
(18.16 has no `ADD COLUMN IF NOT EXISTS`). `migrate(ch)` runs the pending ones in order and records
each in `schema_migrations`. `max_migration.txt` names the newest module, so two branches that each add
a migration conflict in git instead of both taking the same number.

On a cluster (`ch.cluster`) the same modules render every CREATE `ON CLUSTER` with the Replicated
variant of its engine, stored as `<table>_local` behind a Distributed table of the table's own name
(tables.local_table; `merge_tree`, `distributed_table`, `add_missing_columns`). The ALTER of a
replicated table is an `OnEachShard` operation instead (`ClickHouse.execute_on_each_shard` says why).

Several analytics replicas may start at once: `migrate` applies pending migrations under
`migration_lock`, so each runs once; should two overlap anyway (a stale lock taken over), the DDL is
idempotent and `schema_migrations` (a ReplacingMergeTree) drops the duplicate record.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from inkloop_analytics.migration_lock import migration_lock
from inkloop_analytics.storage import ClickHouse, quote_identifier
from inkloop_analytics.tables import SHARDING_KEYS, local_table, on_cluster

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
MODULE_NAME = re.compile(r"m(?P<number>\d{4})_[a-z0-9_]+")

APPLIED_VERSIONS = f"SELECT DISTINCT version FROM {MIGRATIONS_TABLE}"
TABLE_EXISTS = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = %(table)s"

# Retention written into the event tables' TTL where the engine has TTL; `retention.apply` changes it
# to the configured number of days at start (and drops old partitions on engines without TTL).
DEFAULT_RETENTION_DAYS = 400


COLUMN_NAMES = "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(table)s"
# The ledger's own replicas wait for what the others recorded (the migration lock's previous holder).
SYNC_LEDGER = f"SYSTEM SYNC REPLICA {MIGRATIONS_TABLE}"

# A Distributed table with the stored table's columns, spreading rows by the table's sharding key.
CREATE_DISTRIBUTED = """
CREATE TABLE IF NOT EXISTS {table} {on_cluster} AS {database}.{local}
ENGINE = Distributed({cluster}, '{database_name}', {local}, {sharding_key})
"""
DROP_DISTRIBUTED = "DROP TABLE IF EXISTS {table} {on_cluster}"


@dataclass(frozen=True)
class OnEachShard:
    """A statement for one replica of every shard, which replicates it to the shard's other replicas."""

    sql: str

    def __str__(self) -> str:
        return self.sql


Operation = str | OnEachShard


def run(ch: ClickHouse, operation: Operation) -> None:
    if isinstance(operation, OnEachShard):
        ch.execute_on_each_shard(operation.sql)
    else:
        ch.execute(operation)


def merge_tree(ch: ClickHouse, table: str, engine: str, *arguments: str, sharded: bool = True) -> str:
    """The ENGINE of `table`: `engine(arguments)` on one node. On a cluster its Replicated variant,
    one set of replicas per shard (`{shard}` macro) or, `sharded=False`, one across every node; the
    ZooKeeper path names the database and table itself (18.16 has no `{database}` macro)."""
    if not ch.cluster:
        return f"{engine}({', '.join(arguments)})" if arguments else engine
    group = "{shard}" if sharded else "all"
    path = f"/clickhouse/{ch.cluster}/tables/{group}/{ch.database}/{table}"
    replication = [f"'{path}'", "'{replica}'"]
    return f"Replicated{engine}({', '.join([*replication, *arguments])})"


def distributed_table(ch: ClickHouse, table: str) -> list[str]:
    """On a cluster, the CREATE of `table` as the Distributed table over its stored `<table>_local`."""
    if not ch.cluster:
        return []
    return [
        CREATE_DISTRIBUTED.format(
            table=table,
            on_cluster=on_cluster(ch.cluster),
            database=quote_identifier(ch.database),
            database_name=ch.database,
            local=local_table(table, ch.cluster),
            cluster=quote_identifier(ch.cluster),
            sharding_key=SHARDING_KEYS[table],
        )
    ]


def add_missing_columns(ch: ClickHouse, table: str, columns: tuple[tuple[str, str], ...]) -> list[Operation]:
    """The ALTER adding those of (name, type and default) that `table` lacks, in one statement (on a
    cluster each ALTER of a replicated table waits for every replica): 18.16 has no ADD COLUMN IF NOT
    EXISTS, so a rerun asks for nothing.

    On a cluster the stored `<table>_local` is altered on one replica of each shard (replication
    takes the change to the others), and the Distributed table is dropped and created again with the
    new columns: 18.16 refuses `ALTER … ON CLUSTER` on a Distributed table over replicated shards
    (code 371). Meanwhile inserts fail and go to the spool. Both are checked, so a rerun after a
    crash between the two completes it."""
    stored = local_table(table, ch.cluster)
    existing = {name for (name,) in ch.query(COLUMN_NAMES, {"table": stored})}
    additions = [f"ADD COLUMN {name} {definition}" for name, definition in columns if name not in existing]
    alters: list[Operation] = [OnEachShard(f"ALTER TABLE {stored} {', '.join(additions)}")] if additions else []
    if not ch.cluster:
        return alters
    distributed = {name for (name,) in ch.query(COLUMN_NAMES, {"table": table})}
    if not alters and all(name in distributed for name, _ in columns):
        return []
    recreate = [DROP_DISTRIBUTED.format(table=table, on_cluster=on_cluster(ch.cluster)), *distributed_table(ch, table)]
    return alters + recreate


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    description: str
    operations: Callable[[ClickHouse], Sequence[Operation]]


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


def _ledger_exists(ch: ClickHouse) -> bool:
    [(exists,)] = ch.query(TABLE_EXISTS, {"table": MIGRATIONS_TABLE})
    return bool(exists)


def applied_versions(ch: ClickHouse) -> set[int]:
    if not _ledger_exists(ch):
        return set()
    return {version for (version,) in ch.query(APPLIED_VERSIONS)}


def migrate(ch: ClickHouse) -> list[int]:
    """Apply the migrations not yet recorded in `ch`'s database; returns their numbers, in order.

    With nothing pending (the usual start) no lock is taken. Otherwise the ledger is read again
    under the lock: another replica may have applied them meanwhile."""
    every = discover()
    done = applied_versions(ch)
    if all(migration.number in done for migration in every):
        return []
    with migration_lock(ch):
        if ch.cluster and _ledger_exists(ch):
            ch.execute(SYNC_LEDGER)
        return _apply(ch, every, applied_versions(ch))


def _apply(ch: ClickHouse, every: list[Migration], done: set[int]) -> list[int]:
    newly_applied = []
    for migration in every:
        if migration.number in done:
            continue
        log.info("applying migration %s: %s", migration.name, migration.description)
        for operation in migration.operations(ch):
            run(ch, operation)
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
