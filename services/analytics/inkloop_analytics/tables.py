"""Names and column orders of the analytics tables (created by migrations m0002–m0005).

On a cluster every table keeps its name for reading and writing, as a Distributed table over the
cluster, and its rows are stored on each shard in `<name>_local` (Replicated, one copy per replica):
so every query and insert is the same SQL on one node and on a cluster. `local_table` is that rule;
only DDL and maintenance (ALTER, system.parts) name the stored tables.
"""

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

#: How a Distributed table spreads rows over shards. Deterministic in the row, so an event sent again
#: lands on the shard (and in the ReplacingMergeTree) its first copy is in, and the repeat collapses
#: there. Every row of a visitor is on one shard, and every back-end row of a user.
SHARDING_KEYS = {
    FRONTEND_TABLE: "cityHash64(tenant_id, visitor_id)",
    BACKEND_TABLE: "cityHash64(tenant_id, user_id)",
    REJECTED_TABLE: "cityHash64(tenant_id, event_id)",
    ALERTS_TABLE: "cityHash64(tenant_id, rule_name)",
}
LOCAL_SUFFIX = "_local"


def local_table(table: str, cluster: str) -> str:
    """The table that stores `table`'s rows: itself on one node, `<table>_local` on a cluster."""
    return f"{table}{LOCAL_SUFFIX}" if cluster else table


def on_cluster(cluster: str) -> str:
    """The clause that makes a DDL statement run on every node of `cluster` (nothing on one node)."""
    return f"ON CLUSTER `{cluster}`" if cluster else ""


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
