"""The prompt template a request was made from, for template outcomes and recommendations."""

from __future__ import annotations

from inkloop_analytics.migrations import Operation, add_missing_columns
from inkloop_analytics.storage import ClickHouse

description = "add backend_events.template_id (templates)"

COLUMNS = (("template_id", "String DEFAULT ''"),)


def operations(ch: ClickHouse) -> list[Operation]:
    return add_missing_columns(ch, "backend_events", COLUMNS)
