"""The on-disk spool: where acknowledged rows wait, in order, while ClickHouse cannot take them.

Layout: numbered segment files `000000000001.spool`, … under one directory. Each record is one
`Rows` batch: a 12-byte header (magic, payload length, CRC-32) and the pickled rows. `append` returns
only after the record is fsync'ed, so an acknowledgement given after it survives a crash. A crash
while appending leaves a torn last record; its CRC fails and it is skipped (it was never acknowledged).

The spool is private to this service's data directory: pickle is safe here for the same reason the
service's own code is (no one else writes these files). The size bound is checked by the writer
before it admits more rows (backpressure); the spool itself never refuses a record.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import zlib
from pathlib import Path

from inkloop_analytics.tables import Rows

log = logging.getLogger(__name__)

MAGIC = b"INKS"
HEADER = struct.Struct(">4sII")  # magic, payload length, CRC-32 of the payload
SUFFIX = ".spool"


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        # Segments left by an earlier process are sealed: they are replayed before anything new.
        self._sealed = sorted(directory.glob(f"*{SUFFIX}"))
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
        payload = pickle.dumps((rows.frontend, rows.backend, rows.rejected), protocol=pickle.HIGHEST_PROTOCOL)
        record = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
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
        """The records of a sealed segment, in order, up to the first torn or corrupt one."""
        data = segment.read_bytes()
        records, offset = [], 0
        while offset + HEADER.size <= len(data):
            magic, length, crc = HEADER.unpack_from(data, offset)
            payload = data[offset + HEADER.size : offset + HEADER.size + length]
            if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                log.warning("spool segment %s: torn record at byte %d skipped (never acknowledged)", segment, offset)
                break
            frontend, backend, rejected = pickle.loads(payload)
            records.append(Rows(frontend, backend, rejected))
            offset += HEADER.size + length
        return records

    def remove(self, segment: Path) -> None:
        """Deletes a replayed segment."""
        with self._lock:
            self._sealed.remove(segment)
            del self._sizes[segment]
        segment.unlink()

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
