"""Rejected events: why each invalid event was refused (Snowplow's "bad rows", without the payload)."""

from __future__ import annotations

from inkloop_analytics.migrations import (
    DEFAULT_RETENTION_DAYS,
    distributed_table,
    low_cardinality,
    merge_tree,
    ttl_clause,
)
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import REJECTED_TABLE, local_table, on_cluster

description = "create rejected_events (reason and field of every refused event)"

# The payload is not kept: an invalid event may still carry a raw prompt or other personal data.
# event_id and tenant_id are kept as sent (truncated), to let an operator find the sender.
CREATE_REJECTED_EVENTS = """
CREATE TABLE IF NOT EXISTS {table} {on_cluster} (
    received_at DateTime('UTC'),
    stream {short},
    event_id String,
    tenant_id String,
    batch_id String,
    field {short},
    reason String,
    size_bytes UInt32
) ENGINE = {engine}
PARTITION BY toYYYYMM(received_at)
ORDER BY received_at
{ttl}
"""


def operations(ch: ClickHouse) -> list[str]:
    ttl = ttl_clause(ch, f"received_at + INTERVAL {DEFAULT_RETENTION_DAYS} DAY")
    engine = merge_tree(ch, REJECTED_TABLE, "MergeTree")
    table = local_table(REJECTED_TABLE, ch.cluster)
    create = CREATE_REJECTED_EVENTS.format(
        table=table, on_cluster=on_cluster(ch.cluster), engine=engine, short=low_cardinality(ch, "String"), ttl=ttl
    )
    return [create, *distributed_table(ch, REJECTED_TABLE)]
