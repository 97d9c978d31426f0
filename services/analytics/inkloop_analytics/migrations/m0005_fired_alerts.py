"""Fired alerts: every time an alert rule's value went above its threshold."""

from __future__ import annotations

from inkloop_analytics.migrations import low_cardinality
from inkloop_analytics.storage import ClickHouse

description = "create fired_alerts"

# The rule is copied into each row: rules come from a settings file and may change later, and an
# alert must say what it was measured against at the time.
CREATE_FIRED_ALERTS = """
CREATE TABLE IF NOT EXISTS fired_alerts (
    fired_at DateTime('UTC'),
    tenant_id String,
    rule_name {short},
    kind {short},
    threshold Float64,
    window_s UInt32,
    min_events UInt32,
    value Float64,
    message String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(fired_at)
ORDER BY (fired_at, tenant_id)
"""


def operations(ch: ClickHouse) -> list[str]:
    return [CREATE_FIRED_ALERTS.format(short=low_cardinality(ch, "String"))]
