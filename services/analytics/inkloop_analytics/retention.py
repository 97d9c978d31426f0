"""Retention: how long events are kept, per `retention_days`.

Where the engine has TTL, the event tables' TTL is changed to the configured days (only when it
differs: a TTL change rewrites parts on current ClickHouse). On 18.16, which has no TTL, whole
monthly partitions are dropped once every day in them is past retention; call `apply` now and then.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta

from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import BACKEND_TABLE, FRONTEND_TABLE, REJECTED_TABLE

log = logging.getLogger(__name__)

TIME_COLUMNS = {FRONTEND_TABLE: "time", BACKEND_TABLE: "time", REJECTED_TABLE: "received_at"}

ENGINE_FULL = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = %(table)s"
ACTIVE_PARTITIONS = """
SELECT DISTINCT partition FROM system.parts
WHERE database = currentDatabase() AND table = %(table)s AND active
"""
_TTL_DAYS = re.compile(r"TTL \w+ \+ toIntervalDay\((\d+)\)")


def apply(ch: ClickHouse, days: int, today: date | None = None) -> None:
    if days <= 0:
        return
    today = today or datetime.now(UTC).date()
    for table, column in TIME_COLUMNS.items():
        if ch.supports("ttl"):
            [(engine,)] = ch.query(ENGINE_FULL, {"table": table})
            match = _TTL_DAYS.search(engine)
            if match is None or int(match.group(1)) != days:
                # Identifiers and the day count come from code and settings, never from a caller.
                ch.execute(f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {int(days)} DAY")
                log.info("retention of %s set to %d days", table, days)
            continue
        oldest_kept = today - timedelta(days=days)
        for (partition,) in ch.query(ACTIVE_PARTITIONS, {"table": table}):
            year, month = divmod(int(partition), 100)
            next_month = date(year + month // 12, month % 12 + 1, 1)
            if next_month <= oldest_kept:
                ch.execute(f"ALTER TABLE {table} DROP PARTITION {int(partition)}")
                log.info("dropped partition %s of %s (past %d days of retention)", partition, table, days)
