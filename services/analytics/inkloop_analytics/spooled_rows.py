"""Rows as spool records: how analytics writes the rows it acknowledged into `inkloop.spool`.

One record is one `Rows` batch as a JSON document. It tags the two non-JSON types and names its
columns, so rows written by an older version are reordered by name (a column added since takes the
value older rows have, `tables.ADDED_COLUMNS`; any other column this version needs and the record
lacks raises SpoolFormatError rather than being guessed). It is only ever parsed, never
executed:

    {"v":1,"frontend_events":{"columns":["event_id",…],"rows":[[{"$uuid":"…"},"t1",{"$time":"…"},…]]},…}
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from inkloop_analytics.tables import (
    ADDED_COLUMNS,
    BACKEND_COLUMNS,
    BACKEND_TABLE,
    FRONTEND_COLUMNS,
    FRONTEND_TABLE,
    REJECTED_COLUMNS,
    REJECTED_TABLE,
    Row,
    Rows,
)

FORMAT_VERSION = 1
UUID_TAG, TIME_TAG = "$uuid", "$time"
# Rows attribute -> (table, its current column order).
TABLES = {
    "frontend": (FRONTEND_TABLE, FRONTEND_COLUMNS),
    "backend": (BACKEND_TABLE, BACKEND_COLUMNS),
    "rejected": (REJECTED_TABLE, REJECTED_COLUMNS),
}


class SpoolFormatError(Exception):
    """An intact record this version cannot turn into rows (a column it needs is missing, say)."""


def encode(rows: Rows) -> bytes:
    """One record: the JSON document of `rows`."""
    document: dict[str, Any] = {"v": FORMAT_VERSION}
    for attribute, (table, columns) in TABLES.items():
        table_rows = getattr(rows, attribute)
        if table_rows:
            document[table] = {"columns": columns, "rows": table_rows}
    # ASCII only: every string survives, even one that is not valid UTF-8 (a lone surrogate).
    return json.dumps(document, default=_tagged, separators=(",", ":")).encode("ascii")


def decode(payload: bytes) -> Rows:
    """The rows of one record's JSON document, in this version's column orders."""
    try:
        document = json.loads(payload, object_hook=_untagged)
    except ValueError as error:
        raise SpoolFormatError(f"record is not a spool document: {error}") from error
    if document.get("v") != FORMAT_VERSION:
        raise SpoolFormatError(f"record format version {document.get('v')!r}, this version reads {FORMAT_VERSION}")
    rows = Rows()
    for attribute, (table, columns) in TABLES.items():
        if table in document:
            entry = document[table]
            setattr(rows, attribute, _in_column_order(table, entry["columns"], columns, entry["rows"]))
    return rows


def _in_column_order(table: str, stored: list[str], wanted: tuple[str, ...], rows: list[list[Any]]) -> list[Row]:
    if tuple(stored) == wanted:
        return [tuple(row) for row in rows]
    # Written by a version with other columns: reorder by name, dropping columns no longer used.
    missing = [column for column in wanted if column not in stored and column not in ADDED_COLUMNS]
    if missing:
        raise SpoolFormatError(f"{table} records lack the columns {missing}")
    positions = [stored.index(column) if column in stored else None for column in wanted]
    return [
        tuple(
            ADDED_COLUMNS[column] if position is None else row[position]
            for column, position in zip(wanted, positions, strict=True)
        )
        for row in rows
    ]


def _tagged(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return {UUID_TAG: str(value)}
    if isinstance(value, datetime):
        return {TIME_TAG: value.isoformat()}  # with its UTC offset when aware
    raise TypeError(f"a spooled row holds a {type(value).__name__}, which the spool format has no tag for")


def _untagged(entry: dict[str, Any]) -> Any:
    if len(entry) == 1:
        if UUID_TAG in entry:
            return uuid.UUID(entry[UUID_TAG])
        if TIME_TAG in entry:
            return datetime.fromisoformat(entry[TIME_TAG])
    return entry
