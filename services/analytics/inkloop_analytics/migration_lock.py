"""One migrator at a time: analytics replicas that start together must not apply a migration twice.

The lock is a table. `CREATE TABLE schema_migrations_lock` (no IF NOT EXISTS) succeeds for one caller
and fails with TABLE_ALREADY_EXISTS for every other until the holder drops it. On a cluster it is
created ON CLUSTER: ZooKeeper's distributed DDL queue puts all claims in one order that every node
executes alike, so exactly one claim succeeds, whichever node each caller is connected to.

A holder that died leaves its lock behind; a lock older than STALE_AFTER_S is taken over. The DDL
being idempotent, an overlap after such a take-over repeats a statement, it does not break the schema.
chDB needs no lock: one process holds its path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from inkloop_analytics.storage import ClickHouse, QueryError
from inkloop_analytics.tables import on_cluster

log = logging.getLogger(__name__)

LOCK_TABLE = "schema_migrations_lock"
TABLE_ALREADY_EXISTS = 57
STALE_AFTER_S = 600
POLL_S = 0.5

CLAIM = "CREATE TABLE {lock} {on_cluster} (holder String) ENGINE = Log"
RELEASE = "DROP TABLE IF EXISTS {lock} {on_cluster}"
LOCK_AGE_S = """
SELECT toInt64(now()) - toInt64(metadata_modification_time) FROM system.tables
WHERE database = currentDatabase() AND name = %(table)s
"""


@contextmanager
def migration_lock(ch: ClickHouse, stale_after_s: float = STALE_AFTER_S) -> Iterator[None]:
    """Held while the block runs; waits (polling) while another process holds it."""
    if ch.exclusive:
        yield
        return
    _claim(ch, stale_after_s)
    try:
        yield
    finally:
        ch.execute(RELEASE.format(lock=LOCK_TABLE, on_cluster=on_cluster(ch.cluster)))


def _claim(ch: ClickHouse, stale_after_s: float) -> None:
    told = False
    while True:
        try:
            ch.execute(CLAIM.format(lock=LOCK_TABLE, on_cluster=on_cluster(ch.cluster)))
            return
        except QueryError as error:
            if error.code != TABLE_ALREADY_EXISTS:
                raise
        age = ch.query(LOCK_AGE_S, {"table": LOCK_TABLE})
        if age and age[0][0] > stale_after_s:
            log.warning("taking over the migration lock, held for %d s by a process that seems gone", age[0][0])
            ch.execute(RELEASE.format(lock=LOCK_TABLE, on_cluster=on_cluster(ch.cluster)))
            continue
        if not told:
            told = True
            log.info("another analytics process is migrating the database; waiting for it")
        time.sleep(POLL_S)
