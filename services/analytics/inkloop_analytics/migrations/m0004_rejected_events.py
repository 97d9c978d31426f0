"""Rejected events: why each invalid event was refused (Snowplow's "bad rows", without the payload)."""

from __future__ import annotations

from inkloop_analytics.migrations import DEFAULT_RETENTION_DAYS, low_cardinality, ttl_clause
from inkloop_analytics.storage import ClickHouse

description = "create rejected_events (reason and field of every refused event)"

# The payload is not kept: an invalid event may still carry a raw prompt or other personal data.
# event_id and tenant_id are kept as sent (truncated), to let an operator find the sender.
CREATE_REJECTED_EVENTS = """
CREATE TABLE IF NOT EXISTS rejected_events (
    received_at DateTime('UTC'),
    stream {short},
    event_id String,
    tenant_id String,
    batch_id String,
    field {short},
    reason String,
    size_bytes UInt32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY received_at
{ttl}
"""


def operations(ch: ClickHouse) -> list[str]:
    ttl = ttl_clause(ch, f"received_at + INTERVAL {DEFAULT_RETENTION_DAYS} DAY")
    return [CREATE_REJECTED_EVENTS.format(short=low_cardinality(ch, "String"), ttl=ttl)]
