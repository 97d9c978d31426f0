"""The migrations ledger itself; analytics tables follow from 0002."""

from __future__ import annotations

from inkloop_analytics.migrations import MIGRATIONS_TABLE, low_cardinality, merge_tree
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import on_cluster

description = "create schema_migrations, the record of applied migrations"

# ReplacingMergeTree: a migration recorded twice (overlapping runs) collapses to one row. On a
# cluster every node holds a replica of the whole ledger (not one per shard, no Distributed table):
# whichever node a replica of the service talks to knows what was applied.
CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS {table} {on_cluster} (
    version UInt32,
    name {name_type},
    applied_at DateTime('UTC')
) ENGINE = {engine}
ORDER BY version
"""


def operations(ch: ClickHouse) -> list[str]:
    engine = merge_tree(ch, MIGRATIONS_TABLE, "ReplacingMergeTree", "applied_at", sharded=False)
    name_type = low_cardinality(ch, "String")
    create = CREATE_SCHEMA_MIGRATIONS.format(
        table=MIGRATIONS_TABLE, on_cluster=on_cluster(ch.cluster), name_type=name_type, engine=engine
    )
    return [create]
