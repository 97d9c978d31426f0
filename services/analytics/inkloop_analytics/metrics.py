"""The analytics service's ingest and storage metrics (alert metrics live with the alerts)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "inkloop_analytics_events_total",
    "Events acknowledged, by stream (frontend, backend) and status (accepted, duplicate, rejected).",
    ["stream", "status"],
)
INSERT_SECONDS = Histogram(
    "inkloop_analytics_insert_seconds",
    "Duration of one ClickHouse insert of a batch of rows.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROWS_SPOOLED = Counter(
    "inkloop_analytics_rows_spooled_total", "Rows written to the spool because ClickHouse did not take them."
)
ROWS_REPLAYED = Counter("inkloop_analytics_rows_replayed_total", "Spooled rows later inserted into ClickHouse.")
POISON_RECORDS = Counter(
    "inkloop_analytics_poison_records_total",
    "Rows ClickHouse refused for their values (not for an outage), by table: kept in rejected_events "
    "with the reason instead (rejected_events' own such rows are only logged), so the rows behind them go on.",
    ["table"],
)
