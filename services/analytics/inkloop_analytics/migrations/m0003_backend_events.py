"""Back-end events: one row per step of a job's life, with the prompt's features (never its text)."""

from __future__ import annotations

from inkloop_analytics.migrations import (
    DEFAULT_RETENTION_DAYS,
    distributed_table,
    low_cardinality,
    merge_tree,
    ttl_clause,
)
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import BACKEND_TABLE, local_table, on_cluster

description = "create backend_events (ReplacingMergeTree deduplicated by event_id)"

# Same deduplication scheme as frontend_events. prompt_redacted is the privacy policy's truncated,
# PII-redacted excerpt (empty when the policy stores no text); the raw prompt has no column.
CREATE_BACKEND_EVENTS = """
CREATE TABLE IF NOT EXISTS {table} {on_cluster} (
    event_id UUID,
    tenant_id {short},
    time DateTime('UTC'),
    user_id String,
    request_id String,
    job_id String,
    type {short},
    variant {short},
    kind {short},
    width UInt32,
    height UInt32,
    steps UInt32,
    true_cfg_scale Float32,
    num_images UInt32,
    seed UInt64,
    latency_s Float64,
    error_code {short},
    prompt_length UInt32,
    prompt_language {short},
    prompt_hash String,
    prompt_redacted String,
    policy {short},
    has_negative_prompt UInt8,
    inserted_at DateTime('UTC')
) ENGINE = {engine}
PARTITION BY toYYYYMM(time)
ORDER BY (tenant_id, toDate(time), event_id)
{ttl}
"""


def operations(ch: ClickHouse) -> list[str]:
    ttl = ttl_clause(ch, f"time + INTERVAL {DEFAULT_RETENTION_DAYS} DAY")
    engine = merge_tree(ch, BACKEND_TABLE, "ReplacingMergeTree", "inserted_at")
    table = local_table(BACKEND_TABLE, ch.cluster)
    create = CREATE_BACKEND_EVENTS.format(
        table=table, on_cluster=on_cluster(ch.cluster), engine=engine, short=low_cardinality(ch, "String"), ttl=ttl
    )
    return [create, *distributed_table(ch, BACKEND_TABLE)]
