"""The analytics database as the rest of the service sees it: absent until connected and migrated."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from inkloop import tracing
from inkloop.errors import Unavailable
from inkloop_analytics import metrics
from inkloop_analytics.storage import ClickHouse, DataError
from inkloop_analytics.tables import (
    BACKEND_COLUMNS,
    BACKEND_TABLE,
    FRONTEND_COLUMNS,
    FRONTEND_TABLE,
    REJECTED_COLUMNS,
    REJECTED_TABLE,
    Row,
    Rows,
)
from inkloop_analytics.validation import Rejection, rejected_row

log = logging.getLogger(__name__)

# Event table -> the stream its rejected rows name.
STREAMS = {FRONTEND_TABLE: "frontend", BACKEND_TABLE: "backend"}
# Kept of the engine's message in a dead-lettered row's reason: enough to say why, not a whole trace.
MAX_REASON_CHARS = 500


class Refused(NamedTuple):
    """A row the store refused for its values, and the error it gave."""

    table: str
    row: Row
    error: DataError


class EventStore:
    def __init__(self, ch: ClickHouse | None = None, lookups: ClickHouse | None = None) -> None:
        self._ch = ch
        self._lookups = lookups

    @property
    def ready(self) -> bool:
        return self._ch is not None

    def attach(self, ch: ClickHouse, lookups: ClickHouse | None = None) -> None:
        """Called once migrations have run: from now on writes and queries go to `ch`, and ingest's
        duplicate lookups to `lookups` (default `ch`), so they need not wait for an insert to end."""
        self._ch = ch
        self._lookups = lookups

    @property
    def ch(self) -> ClickHouse:
        if self._ch is None:
            raise Unavailable("the analytics database is not ready yet (ClickHouse unreachable or migrating)")
        return self._ch

    @property
    def lookups(self) -> ClickHouse:
        """The connection for ingest's duplicate lookups."""
        return self._lookups or self.ch

    def insert(self, rows: Rows) -> None:
        """Inserts every table's rows; raises Unavailable (or QueryError) when any insert fails.

        A row the store refuses for its values (DataError: out of its column's range, say) would be
        refused on every retry, and with it every row spooled behind it; so it is set aside instead:
        into rejected_events with the reason, counted and logged, and the other rows are stored.
        Any other error is the store's state (down, a missing table) and may pass: it is raised.

        Not atomic across tables: after a partial failure the whole batch is spooled and replayed,
        and the rows that did get in are then stored twice, which deduplication by event_id absorbs.
        """
        with tracing.tracer().start_as_current_span(
            "clickhouse insert", attributes={"frontend_rows": len(rows.frontend), "backend_rows": len(rows.backend)}
        ):
            refused = self._insert_isolating(FRONTEND_TABLE, FRONTEND_COLUMNS, rows.frontend)
            refused += self._insert_isolating(BACKEND_TABLE, BACKEND_COLUMNS, rows.backend)
            now = datetime.now(UTC).replace(microsecond=0)
            dead_letters = [_dead_letter(refusal, now) for refusal in refused]
            lost = self._insert_isolating(REJECTED_TABLE, REJECTED_COLUMNS, [*rows.rejected, *dead_letters])
        # Reported only now that nothing more can fail: a retried batch reports each row once.
        for refusal in refused:
            _report(refusal, kept=True)
        for refusal in lost:
            _report(refusal, kept=False)

    def _insert_isolating(self, table: str, columns: Sequence[str], rows: list[Row]) -> list[Refused]:
        """Inserts `rows` but those the store refuses for their values, found by halving the batch
        (a few inserts for a rare bad row, where one insert per row would cost a part per row)."""
        if not rows:
            return []
        try:
            self.ch.insert(table, columns, rows)
            return []
        except DataError as error:
            if len(rows) == 1:
                return [Refused(table, rows[0], error)]
        middle = len(rows) // 2
        return self._insert_isolating(table, columns, rows[:middle]) + self._insert_isolating(
            table, columns, rows[middle:]
        )


def _dead_letter(refusal: Refused, now: datetime) -> Row:
    """The rejected_events row of an event row the store refused (event tables start event_id, tenant_id)."""
    event_id, tenant_id = refusal.row[0], refusal.row[1]
    reason = f"refused by the store: {refusal.error.message}"[:MAX_REASON_CHARS]
    problem = Rejection(refusal.error.column, reason)
    # The ids as text that UTF-8 can encode, or this row would be refused in turn. The batch id and
    # the event's size are not known here (0 = unknown size).
    return rejected_row(STREAMS[refusal.table], _encodable(event_id), _encodable(tenant_id), "", problem, 0, now)


def _encodable(value: object) -> str:
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _report(refusal: Refused, kept: bool) -> None:
    metrics.POISON_RECORDS.labels(refusal.table).inc()
    where = f"kept in {REJECTED_TABLE}" if kept else "dropped (it could not be kept anywhere)"
    log.warning(
        "%s row %s refused by ClickHouse for its values, %s: %s",
        refusal.table,
        refusal.row[0] if refusal.table in STREAMS else refusal.row[2],
        where,
        refusal.error,
    )
