"""Columns for perceived outcomes: each request's prompt signature and the request an edit started from."""

from __future__ import annotations

from inkloop_analytics.migrations import Operation, add_missing_columns
from inkloop_analytics.storage import ClickHouse

description = "add backend_events.prompt_signature and base_request_id (outcomes)"

COLUMNS = (("prompt_signature", "UInt64 DEFAULT 0"), ("base_request_id", "String DEFAULT ''"))


def operations(ch: ClickHouse) -> list[Operation]:
    return add_missing_columns(ch, "backend_events", COLUMNS)
