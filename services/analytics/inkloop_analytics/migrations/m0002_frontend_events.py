"""Front-end events: page views and `_trackEvent` calls from the page's tracker."""

from __future__ import annotations

from inkloop_analytics.migrations import (
    DEFAULT_RETENTION_DAYS,
    distributed_table,
    low_cardinality,
    merge_tree,
    ttl_clause,
)
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import FRONTEND_TABLE, local_table, on_cluster

description = "create frontend_events (ReplacingMergeTree deduplicated by event_id)"

# ReplacingMergeTree keyed by (tenant, day, event_id): a retried event (same id, same client time)
# collapses into one row when parts merge. Until then both copies exist, which is why every query
# counts distinct event ids or is insensitive to repeats (on a cluster the retry reaches the same
# shard: tables.SHARDING_KEYS). `time` is the client's clock, because a retry re-sends it unchanged
# while `server_time` differs; second precision, as windowFunnel needs.
# `device` is derived from the user agent at ingest so that breakdowns need no parsing at query time.
CREATE_FRONTEND_EVENTS = """
CREATE TABLE IF NOT EXISTS {table} {on_cluster} (
    event_id UUID,
    tenant_id {short},
    time DateTime('UTC'),
    server_time DateTime('UTC'),
    visitor_id String,
    session_id String,
    user_id String,
    page_url String,
    referrer String,
    user_agent String,
    device {short},
    language {short},
    screen {short},
    type {short},
    category {short},
    action {short},
    label String,
    value Nullable(Int64),
    request_id String,
    custom_var_names Array(String),
    custom_var_values Array(String),
    inserted_at DateTime('UTC')
) ENGINE = {engine}
PARTITION BY toYYYYMM(time)
ORDER BY (tenant_id, toDate(time), event_id)
{ttl}
"""


def operations(ch: ClickHouse) -> list[str]:
    ttl = ttl_clause(ch, f"time + INTERVAL {DEFAULT_RETENTION_DAYS} DAY")
    engine = merge_tree(ch, FRONTEND_TABLE, "ReplacingMergeTree", "inserted_at")
    table = local_table(FRONTEND_TABLE, ch.cluster)
    create = CREATE_FRONTEND_EVENTS.format(
        table=table, on_cluster=on_cluster(ch.cluster), engine=engine, short=low_cardinality(ch, "String"), ttl=ttl
    )
    return [create, *distributed_table(ch, FRONTEND_TABLE)]
