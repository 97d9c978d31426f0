"""The analytics database as the rest of the service sees it: absent until connected and migrated."""

from __future__ import annotations

from inkloop.errors import Unavailable
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import (
    BACKEND_COLUMNS,
    BACKEND_TABLE,
    FRONTEND_COLUMNS,
    FRONTEND_TABLE,
    REJECTED_COLUMNS,
    REJECTED_TABLE,
    Rows,
)


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

        Not atomic across tables: after a partial failure the whole batch is spooled and replayed,
        and the rows that did get in are then stored twice, which deduplication by event_id absorbs.
        """
        ch = self.ch
        if rows.frontend:
            ch.insert(FRONTEND_TABLE, FRONTEND_COLUMNS, rows.frontend)
        if rows.backend:
            ch.insert(BACKEND_TABLE, BACKEND_COLUMNS, rows.backend)
        if rows.rejected:
            ch.insert(REJECTED_TABLE, REJECTED_COLUMNS, rows.rejected)
