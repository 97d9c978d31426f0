"""The migrations ledger itself; analytics tables follow from 0002."""

from __future__ import annotations

from inkloop_analytics.migrations import MIGRATIONS_TABLE, low_cardinality
from inkloop_analytics.storage import ClickHouse

description = "create schema_migrations, the record of applied migrations"

# ReplacingMergeTree: a migration recorded twice (overlapping runs) collapses to one row.
CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS {table} (
    version UInt32,
    name {name_type},
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


def operations(ch: ClickHouse) -> list[str]:
    return [CREATE_SCHEMA_MIGRATIONS.format(table=MIGRATIONS_TABLE, name_type=low_cardinality(ch, "String"))]
