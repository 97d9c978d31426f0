"""Migrations apply once, in order, on both engines, and follow the numbering conventions."""

from __future__ import annotations

import re
from importlib.resources import files

from harness.clickhouse import EVERY_ENGINE
from inkloop_analytics import migrations
from inkloop_analytics.migrations import MIGRATIONS_TABLE, discover, migrate, run
from inkloop_analytics.storage import ClickHouse

CLICKHOUSE_ENGINES = EVERY_ENGINE

MIGRATIONS_DIR = files(migrations)


def migration_file_names() -> list[str]:
    return sorted(
        entry.name for entry in MIGRATIONS_DIR.iterdir() if entry.name.endswith(".py") and entry.name != "__init__.py"
    )


def test_every_module_is_numbered_and_numbers_are_contiguous() -> None:
    names = migration_file_names()
    assert names, "no migrations found"
    for name in names:
        assert re.fullmatch(r"m\d{4}_[a-z0-9_]+\.py", name), f"{name} is not named mNNNN_description.py"
    assert [int(name[1:5]) for name in names] == list(range(1, len(names) + 1))
    assert [migration.number for migration in discover()] == list(range(1, len(names) + 1))


def test_max_migration_txt_names_the_newest_module() -> None:
    newest = migration_file_names()[-1].removesuffix(".py")
    assert MIGRATIONS_DIR.joinpath("max_migration.txt").read_text().strip() == newest


def test_every_migration_describes_itself() -> None:
    for migration in discover():
        assert migration.description.strip(), f"{migration.name} has no description"


def test_migrate_applies_all_in_order_then_nothing(clickhouse: ClickHouse) -> None:
    every_number = [migration.number for migration in discover()]
    assert migrate(clickhouse) == every_number
    assert migrate(clickhouse) == []
    recorded = clickhouse.query(f"SELECT version, name FROM {MIGRATIONS_TABLE} ORDER BY version")
    assert recorded == [(migration.number, migration.name) for migration in discover()]


def test_operations_are_idempotent_and_create_only_if_missing(clickhouse: ClickHouse) -> None:
    for migration in discover():
        for operation in migration.operations(clickhouse):
            if re.match(r"\s*CREATE\b", str(operation), re.IGNORECASE):
                assert "IF NOT EXISTS" in str(operation).upper(), f"{migration.name}: {operation}"
                run(clickhouse, operation)  # a CREATE is safe to run twice on its own
            run(clickhouse, operation)
        # Run again, as after a crash before the ledger recorded it: an ALTER is asked for only while
        # needed (18.16 has no ADD COLUMN IF NOT EXISTS), so the rerun changes nothing.
        for operation in migration.operations(clickhouse):
            assert not re.match(r"\s*ALTER\b", str(operation), re.IGNORECASE), f"{migration.name}: {operation}"
            run(clickhouse, operation)


def test_ddl_is_rendered_for_the_engine(clickhouse: ClickHouse) -> None:
    [create_ledger] = discover()[0].operations(clickhouse)
    assert ("LowCardinality(String)" in create_ledger) == clickhouse.supports("low_cardinality")


def test_ddl_on_a_cluster_is_replicated_per_shard_behind_a_distributed_table(clickhouse: ClickHouse) -> None:
    create, *distributed = discover()[1].operations(clickhouse)  # m0002: frontend_events
    cluster, database = clickhouse.cluster, clickhouse.database
    if not cluster:
        assert "ON CLUSTER" not in create and "ENGINE = ReplacingMergeTree(inserted_at)" in create
        assert distributed == []
        return
    path = f"/clickhouse/{cluster}/tables/{{shard}}/{database}/frontend_events"
    assert f"frontend_events_local ON CLUSTER `{cluster}`" in create
    assert f"ENGINE = ReplicatedReplacingMergeTree('{path}', '{{replica}}', inserted_at)" in create
    [create_distributed] = distributed
    assert f"frontend_events ON CLUSTER `{cluster}` AS `{database}`.frontend_events_local" in create_distributed
    sharding = f"Distributed(`{cluster}`, '{database}', frontend_events_local, cityHash64(tenant_id, visitor_id))"
    assert sharding in create_distributed
    [ledger] = discover()[0].operations(clickhouse)  # one replica set over every node, not per shard
    assert f"ReplicatedReplacingMergeTree('/clickhouse/{cluster}/tables/all/{database}/schema_migrations'" in ledger
