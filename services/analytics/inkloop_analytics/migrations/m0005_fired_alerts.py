"""Fired alerts: every time an alert rule's value went above its threshold."""

from __future__ import annotations

from inkloop_analytics.migrations import distributed_table, low_cardinality, merge_tree
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import ALERTS_TABLE, local_table, on_cluster

description = "create fired_alerts"

# The rule is copied into each row: rules come from a settings file and may change later, and an
# alert must say what it was measured against at the time.
CREATE_FIRED_ALERTS = """
CREATE TABLE IF NOT EXISTS {table} {on_cluster} (
    fired_at DateTime('UTC'),
    tenant_id String,
    rule_name {short},
    kind {short},
    threshold Float64,
    window_s UInt32,
    min_events UInt32,
    value Float64,
    message String
) ENGINE = {engine}
PARTITION BY toYYYYMM(fired_at)
ORDER BY (fired_at, tenant_id)
"""


def operations(ch: ClickHouse) -> list[str]:
    engine = merge_tree(ch, ALERTS_TABLE, "MergeTree")
    table = local_table(ALERTS_TABLE, ch.cluster)
    create = CREATE_FIRED_ALERTS.format(
        table=table, on_cluster=on_cluster(ch.cluster), engine=engine, short=low_cardinality(ch, "String")
    )
    return [create, *distributed_table(ch, ALERTS_TABLE)]
