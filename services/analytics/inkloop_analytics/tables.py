"""Names and column orders of the analytics tables (created by migrations m0002–m0005)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FRONTEND_TABLE = "frontend_events"
BACKEND_TABLE = "backend_events"
REJECTED_TABLE = "rejected_events"
ALERTS_TABLE = "fired_alerts"

FRONTEND_COLUMNS = (
    "event_id",
    "tenant_id",
    "time",
    "server_time",
    "visitor_id",
    "session_id",
    "user_id",
    "page_url",
    "referrer",
    "user_agent",
    "device",
    "language",
    "screen",
    "type",
    "category",
    "action",
    "label",
    "value",
    "request_id",
    "custom_var_names",
    "custom_var_values",
    "inserted_at",
)

BACKEND_COLUMNS = (
    "event_id",
    "tenant_id",
    "time",
    "user_id",
    "request_id",
    "job_id",
    "type",
    "variant",
    "kind",
    "width",
    "height",
    "steps",
    "true_cfg_scale",
    "num_images",
    "seed",
    "latency_s",
    "error_code",
    "prompt_length",
    "prompt_language",
    "prompt_hash",
    "prompt_redacted",
    "policy",
    "has_negative_prompt",
    "inserted_at",
    "prompt_signature",
    "base_request_id",
    "template_id",
)
#: Columns added after a table was first created (m0006, m0008), with the value rows written before
#: had: spooled rows of an earlier version are read with these filled in.
ADDED_COLUMNS: dict[str, Any] = {"prompt_signature": 0, "base_request_id": "", "template_id": ""}

REJECTED_COLUMNS = ("received_at", "stream", "event_id", "tenant_id", "batch_id", "field", "reason", "size_bytes")

ALERT_COLUMNS = (
    "fired_at",
    "tenant_id",
    "rule_name",
    "kind",
    "threshold",
    "window_s",
    "min_events",
    "value",
    "message",
    "subject",
    "breakdown",
)

Row = tuple[Any, ...]


@dataclass
class Rows:
    """Rows bound for each table, in the column orders above: one unit of writing and of spooling."""

    frontend: list[Row] = field(default_factory=list)
    backend: list[Row] = field(default_factory=list)
    rejected: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frontend) + len(self.backend) + len(self.rejected)

    def extend(self, other: Rows) -> None:
        self.frontend.extend(other.frontend)
        self.backend.extend(other.backend)
        self.rejected.extend(other.rejected)
