"""Migrations apply once, in order, on both engines, and follow the numbering conventions."""

from __future__ import annotations

import re
from importlib.resources import files

from inkloop_analytics import migrations
from inkloop_analytics.migrations import MIGRATIONS_TABLE, discover, migrate
from inkloop_analytics.storage import ClickHouse

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
        for statement in migration.operations(clickhouse):
            if re.match(r"\s*CREATE\b", statement, re.IGNORECASE):
                assert "IF NOT EXISTS" in statement.upper(), f"{migration.name}: {statement}"
                clickhouse.execute(statement)  # a CREATE is safe to run twice on its own
            clickhouse.execute(statement)
        # Run again, as after a crash before the ledger recorded it: an ALTER is asked for only while
        # needed (18.16 has no ADD COLUMN IF NOT EXISTS), so the rerun changes nothing.
        for statement in migration.operations(clickhouse):
            assert not re.match(r"\s*ALTER\b", statement, re.IGNORECASE), f"{migration.name}: {statement}"
            clickhouse.execute(statement)


def test_ddl_is_rendered_for_the_engine(clickhouse: ClickHouse) -> None:
    [create_ledger] = discover()[0].operations(clickhouse)
    assert ("LowCardinality(String)" in create_ledger) == clickhouse.supports("low_cardinality")
