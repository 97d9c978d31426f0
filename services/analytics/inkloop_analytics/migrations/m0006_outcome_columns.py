"""Columns for perceived outcomes: each request's prompt signature and the request an edit started from."""

from __future__ import annotations

from inkloop_analytics.storage import ClickHouse

description = "add backend_events.prompt_signature and base_request_id (outcomes)"

COLUMNS = (("prompt_signature", "UInt64 DEFAULT 0"), ("base_request_id", "String DEFAULT ''"))
EXISTING = "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'backend_events'"


def operations(ch: ClickHouse) -> list[str]:
    # 18.16 has no ADD COLUMN IF NOT EXISTS: only the missing ones are added, so a rerun is a no-op.
    existing = {name for (name,) in ch.query(EXISTING)}
    return [
        f"ALTER TABLE backend_events ADD COLUMN {name} {definition}"
        for name, definition in COLUMNS
        if name not in existing
    ]
