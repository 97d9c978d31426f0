"""Retention: how long events are kept, per `retention_days` (0 = forever).

This is data retention (a maintenance task the service runs hourly), not a cohort-retention query.

Where the engine has TTL, the event tables' TTL is changed to the configured days (only when it
differs: a TTL change rewrites parts on current ClickHouse), or removed for 0, since the tables are
created with a default TTL that would otherwise still delete data. On 18.16, which has no TTL, whole
monthly partitions are dropped once every day in them is past retention; call `apply` now and then.
On a cluster both act on the stored `<table>_local` tables, ON CLUSTER, and the partitions are those
of every node.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta

from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import BACKEND_TABLE, FRONTEND_TABLE, REJECTED_TABLE, local_table

log = logging.getLogger(__name__)

TIME_COLUMNS = {FRONTEND_TABLE: "time", BACKEND_TABLE: "time", REJECTED_TABLE: "received_at"}

ENGINE_FULL = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = %(table)s"
ACTIVE_PARTITIONS = """
SELECT DISTINCT partition FROM {parts}
WHERE database = %(database)s AND table = %(table)s AND active
"""
# Every node's parts, on a cluster: each shard holds partitions of its own.
CLUSTER_PARTS = "cluster({cluster}, system, parts)"
_TTL = re.compile(r"\bTTL\b")
_TTL_DAYS = re.compile(r"\bTTL \w+ \+ toIntervalDay\((\d+)\)")


def apply(ch: ClickHouse, days: int, today: date | None = None) -> None:
    """Brings every event table to `days` of retention; `today` only matters on engines without TTL."""
    if ch.supports("ttl"):
        for table, column in TIME_COLUMNS.items():
            _set_ttl(ch, local_table(table, ch.cluster), column, days)
    elif days > 0:
        oldest_kept = (today or datetime.now(UTC).date()) - timedelta(days=days)
        for table in TIME_COLUMNS:
            _drop_partitions_before(ch, local_table(table, ch.cluster), oldest_kept, days)


def _set_ttl(ch: ClickHouse, table: str, column: str, days: int) -> None:
    [(engine,)] = ch.query(ENGINE_FULL, {"table": table})
    # Identifiers and the day count come from code and settings, never from a caller.
    alter = f"ALTER TABLE {table}"  # of a replicated table on a cluster: once per shard
    if days <= 0:
        if _TTL.search(engine):
            ch.execute_on_each_shard(f"{alter} REMOVE TTL")
            log.info("retention of %s removed (events kept forever)", table)
        return
    match = _TTL_DAYS.search(engine)
    if match is None or int(match.group(1)) != days:
        ch.execute_on_each_shard(f"{alter} MODIFY TTL {column} + INTERVAL {int(days)} DAY")
        log.info("retention of %s set to %d days", table, days)


def _drop_partitions_before(ch: ClickHouse, table: str, oldest_kept: date, days: int) -> None:
    """Drops the monthly (toYYYYMM) partitions whose every day is before `oldest_kept`."""
    parts = CLUSTER_PARTS.format(cluster=ch.cluster) if ch.cluster else "system.parts"
    for (partition,) in ch.query(ACTIVE_PARTITIONS.format(parts=parts), {"database": ch.database, "table": table}):
        year, month = divmod(int(partition), 100)
        next_month = date(year + month // 12, month % 12 + 1, 1)
        if next_month <= oldest_kept:
            ch.execute_on_each_shard(f"ALTER TABLE {table} DROP PARTITION {int(partition)}")
            log.info("dropped partition %s of %s (past %d days of retention)", partition, table, days)
