"""Alerts per subject: outcome rules fire for one language class or variant of a tenant."""

from __future__ import annotations

from inkloop_analytics.migrations import Operation, add_missing_columns
from inkloop_analytics.storage import ClickHouse

description = "add fired_alerts.subject and breakdown (outcome alerts)"

COLUMNS = (("subject", "String DEFAULT ''"), ("breakdown", "String DEFAULT ''"))


def operations(ch: ClickHouse) -> list[Operation]:
    return add_missing_columns(ch, "fired_alerts", COLUMNS)
