"""The on-disk spool: where acknowledged rows wait, in order, while ClickHouse cannot take them.

Layout: numbered segment files `000000000001.jsonl`, … under one directory. Each record is one
`Rows` batch on one line: the CRC-32 of the JSON document (8 hex digits), a space, the document, a
newline. The document tags the two non-JSON types and names its columns, so rows written by an
older version are reordered by name (a column this version needs and the record lacks raises
SpoolFormatError rather than being guessed). It is only ever parsed, never executed, and
`cut -d' ' -f2- SEGMENT | jq` shows it:

    {"v":1,"frontend_events":{"columns":["event_id",…],"rows":[[{"$uuid":"…"},"t1",{"$time":"…"},…]]},…}

`append` returns only after the record is fsync'ed, so an acknowledgement given after it survives a
crash. A crash while appending leaves a torn last line; it has no newline or its CRC fails and it is
skipped (it was never acknowledged). Reading stops at the first such line.

Segments `*.spool` of earlier versions (binary frames around pickled rows) are still replayed, once,
through an unpickler that builds nothing but the row types (UUID, datetime). The size bound is
checked by the writer before it admits more rows (backpressure); the spool itself never refuses a
record.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import struct
import threading
import uuid
import zlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
FORMAT_VERSION = 1
UUID_TAG, TIME_TAG = "$uuid", "$time"
# Rows attribute -> (table, its current column order).
TABLES = {
    "frontend": (FRONTEND_TABLE, FRONTEND_COLUMNS),
    "backend": (BACKEND_TABLE, BACKEND_COLUMNS),
    "rejected": (REJECTED_TABLE, REJECTED_COLUMNS),
}

LEGACY_SUFFIX = ".spool"
LEGACY_MAGIC = b"INKS"
LEGACY_HEADER = struct.Struct(">4sII")  # magic, payload length, CRC-32 of the payload
LEGACY_CLASSES = {
    ("uuid", "UUID"): uuid.UUID,
    ("datetime", "datetime"): datetime,
    ("datetime", "date"): date,
    ("datetime", "timezone"): timezone,
    ("datetime", "timedelta"): timedelta,
}


#: Appended to a segment this version cannot read: out of the way, never deleted.
UNREADABLE_SUFFIX = ".unreadable"


class SpoolFormatError(Exception):
    """An intact record this version cannot turn into rows (a column it needs is missing, say)."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        # Segments left by an earlier process are sealed: they are replayed before anything new.
        segments = [*directory.glob(f"*{SUFFIX}"), *directory.glob(f"*{LEGACY_SUFFIX}")]
        self._sealed = sorted(segments, key=lambda path: int(path.stem))
        self._sizes = {path: path.stat().st_size for path in self._sealed}
        self._next_number = int(self._sealed[-1].stem) + 1 if self._sealed else 1
        self._current: Path | None = None
        self._current_fd: int | None = None
        # append runs in a worker thread while seal/remove run on the event loop.
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def empty(self) -> bool:
        with self._lock:
            return not self._sealed and (self._current is None or self._sizes[self._current] == 0)

    def full(self) -> bool:
        return self.size_bytes >= self.max_bytes

    def append(self, rows: Rows) -> None:
        """Writes one record and fsyncs it; returns once it is durable."""
        record = encode(rows)
        with self._lock:
            if self._current is not None and self._sizes[self._current] >= self.segment_bytes:
                self._seal_locked()
            if self._current is None:
                self._open_segment_locked()
            assert self._current is not None and self._current_fd is not None
            os.write(self._current_fd, record)
            os.fsync(self._current_fd)
            self._sizes[self._current] += len(record)

    def seal(self) -> None:
        """Closes the segment being appended to, so it can be replayed; the next append starts another."""
        with self._lock:
            self._seal_locked()

    def oldest(self) -> Path | None:
        """The oldest sealed segment (sealing the current one if that is all there is)."""
        with self._lock:
            if not self._sealed and self._current is not None and self._sizes[self._current] > 0:
                self._seal_locked()
            return self._sealed[0] if self._sealed else None

    def read(self, segment: Path) -> list[Rows]:
        """The records of a sealed segment, in order, up to the first torn or corrupt one.

        Raises SpoolFormatError for an intact record this version cannot read (nothing is skipped)."""
        data = segment.read_bytes()
        if segment.suffix == LEGACY_SUFFIX:
            return _read_legacy(segment, data)
        return _read_lines(segment, data)

    def remove(self, segment: Path) -> None:
        """Deletes a replayed segment."""
        with self._lock:
            self._sealed.remove(segment)
            del self._sizes[segment]
        segment.unlink()

    def set_aside(self, segment: Path) -> Path:
        """Renames a segment this version cannot read out of the replay order (kept for an operator)."""
        with self._lock:
            self._sealed.remove(segment)
            del self._sizes[segment]
        kept = segment.with_name(f"{segment.name}{UNREADABLE_SUFFIX}")
        segment.rename(kept)
        return kept

    def close(self) -> None:
        with self._lock:
            self._seal_locked()

    def _open_segment_locked(self) -> None:
        path = self.directory / f"{self._next_number:012d}{SUFFIX}"
        self._next_number += 1
        self._current_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._current = path
        self._sizes[path] = 0
        # The new directory entry must be durable too, or a crash could lose the whole file.
        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)

    def _seal_locked(self) -> None:
        if self._current is None:
            return
        assert self._current_fd is not None
        os.close(self._current_fd)
        if self._sizes[self._current] == 0:
            self._current.unlink()
            del self._sizes[self._current]
        else:
            self._sealed.append(self._current)
        self._current, self._current_fd = None, None


def encode(rows: Rows) -> bytes:
    """One record line: CRC-32, space, JSON document, newline."""
    document: dict[str, Any] = {"v": FORMAT_VERSION}
    for attribute, (table, columns) in TABLES.items():
        table_rows = getattr(rows, attribute)
        if table_rows:
            document[table] = {"columns": columns, "rows": table_rows}
    # ASCII only: every string survives, even one that is not valid UTF-8 (a lone surrogate).
    payload = json.dumps(document, default=_tagged, separators=(",", ":")).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


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
    missing = [column for column in wanted if column not in stored]
    if missing:
        raise SpoolFormatError(f"{table} records lack the columns {missing}")
    positions = [stored.index(column) for column in wanted]
    return [tuple(row[position] for position in positions) for row in rows]


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


def _read_lines(segment: Path, data: bytes) -> list[Rows]:
    records, offset = [], 0
    while (end := data.find(b"\n", offset)) != -1:
        crc, _, payload = data[offset:end].partition(b" ")
        if _stored_crc(crc) != zlib.crc32(payload):
            break
        records.append(decode(payload))
        offset = end + 1
    if offset < len(data):
        log.warning("spool segment %s: torn record at byte %d skipped (never acknowledged)", segment, offset)
    return records


def _stored_crc(prefix: bytes) -> int | None:
    try:
        return int(prefix, 16) if len(prefix) == 8 else None
    except ValueError:
        return None


class _RowsUnpickler(pickle.Unpickler):
    """Builds only the types rows hold: anything else in a legacy file is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in LEGACY_CLASSES:
            raise SpoolFormatError(f"legacy spool record refers to {module}.{name}")
        return LEGACY_CLASSES[(module, name)]


def _read_legacy(segment: Path, data: bytes) -> list[Rows]:
    """Records of a pickle segment written by an earlier version (12-byte frame, pickled tuple)."""
    records, offset = [], 0
    while offset + LEGACY_HEADER.size <= len(data):
        magic, length, crc = LEGACY_HEADER.unpack_from(data, offset)
        payload = data[offset + LEGACY_HEADER.size : offset + LEGACY_HEADER.size + length]
        if magic != LEGACY_MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            break
        try:
            frontend, backend, rejected = _RowsUnpickler(io.BytesIO(payload)).load()
        except (pickle.UnpicklingError, ValueError, TypeError) as error:
            raise SpoolFormatError(f"legacy spool record at byte {offset} of {segment}: {error}") from error
        records.append(Rows(frontend, backend, rejected))
        offset += LEGACY_HEADER.size + length
    if offset < len(data):
        log.warning("spool segment %s: torn record at byte %d skipped (never acknowledged)", segment, offset)
    return records
