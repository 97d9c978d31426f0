"""The on-disk spool: where acknowledged records wait, in order, while their destination is down.

Both services keep what they acknowledged here until it is delivered: the gateway its back-end
event batches while analytics is unreachable, analytics its rows while ClickHouse is. A record is
one line of text without a newline: analytics writes JSON documents (`cut -d' ' -f2- SEGMENT | jq`
shows them), the gateway base64 of its protobuf batches (`… | base64 -d`). Segment files keep the
`.jsonl` name of the first format.

Layout: numbered segment files `000000000001.jsonl`, … under one directory. Each line is the CRC-32
of the record (8 hex digits), a space, the record, a newline. `append` returns only after the
record is fsync'ed (and a new segment's directory entry with it), so an acknowledgement given after
it survives a crash. A crash while appending leaves a torn last line: no newline, or a CRC that
fails; reading stops there (it was never acknowledged) and says so in the log.

Bounded in one of two ways, chosen by the owner:
- `PUSH_BACK`: the spool never drops; `full()` tells the owner to stop admitting (analytics'
  ingest waits, then answers RESOURCE_EXHAUSTED with a retry delay).
- `DROP_OLDEST`: an append that takes the spool past `max_bytes` deletes the oldest sealed
  segments first (the gateway's events must never block a request); every record dropped is
  counted in `inkloop_spool_dropped_records_total{spool}` and logged.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
#: Appended to a segment its owner cannot read: out of the replay order, kept for an operator.
UNREADABLE_SUFFIX = ".unreadable"

SPOOL_BYTES = Gauge("inkloop_spool_bytes", "Bytes waiting in the on-disk spool, by spool.", ["spool"])
DROPPED_RECORDS = Counter(
    "inkloop_spool_dropped_records_total",
    "Records a DROP_OLDEST spool deleted unsent to stay within its size bound, by spool.",
    ["spool"],
)


class WhenFull(enum.Enum):
    PUSH_BACK = "push_back"
    DROP_OLDEST = "drop_oldest"


class Spool:
    """A durable FIFO of one-line records (bytes without b"\\n") in numbered segments."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str,
        max_bytes: int,
        when_full: WhenFull = WhenFull.PUSH_BACK,
        segment_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.name = name
        self.max_bytes = max_bytes
        self.when_full = when_full
        # Dropping goes by whole segments: keep them small against the bound so a drop loses little.
        self.segment_bytes = (
            min(segment_bytes, max(max_bytes // 8, 1)) if when_full is WhenFull.DROP_OLDEST else segment_bytes
        )
        directory.mkdir(parents=True, exist_ok=True)
        # Segments left by an earlier process are sealed: they are replayed before anything new.
        self._sealed = sorted(directory.glob(f"*{SUFFIX}"), key=lambda path: int(path.stem))
        self._sizes = {path: path.stat().st_size for path in self._sealed}
        self._next_number = int(self._sealed[-1].stem) + 1 if self._sealed else 1
        self._current: Path | None = None
        self._current_fd: int | None = None
        # Appends may run in a worker thread while reads and removals run on the event loop.
        self._lock = threading.Lock()
        self._gauge = SPOOL_BYTES.labels(name)
        self._gauge.set(self.size_bytes)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def empty(self) -> bool:
        with self._lock:
            return not self._sealed and (self._current is None or self._sizes[self._current] == 0)

    def full(self) -> bool:
        return self.size_bytes >= self.max_bytes

    def append(self, record: bytes) -> None:
        """Writes one record and fsyncs it; returns once it is durable."""
        self.append_many([record])

    def append_many(self, records: Sequence[bytes]) -> None:
        """Writes records in order with one fsync; returns once all are durable."""
        lines = [_line(record) for record in records]
        with self._lock:
            for line in lines:
                if self._current is not None and self._sizes[self._current] >= self.segment_bytes:
                    self._seal_locked()
                if self._current is None:
                    self._open_segment_locked()
                assert self._current is not None and self._current_fd is not None
                os.write(self._current_fd, line)
                self._sizes[self._current] += len(line)
            if self._current_fd is not None:
                os.fsync(self._current_fd)
            if self.when_full is WhenFull.DROP_OLDEST:
                self._drop_oldest_locked()
            self._gauge.set(sum(self._sizes.values()))

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

    def read(self, segment: Path) -> list[bytes]:
        """The records of a sealed segment, in order, up to the first torn or corrupt one."""
        return _records(segment, segment.read_bytes())

    def remove(self, segment: Path) -> None:
        """Deletes a delivered segment."""
        with self._lock:
            self._forget_locked(segment)
        segment.unlink(missing_ok=True)

    def set_aside(self, segment: Path) -> Path:
        """Renames a segment its owner cannot read out of the replay order (kept, never deleted)."""
        with self._lock:
            self._forget_locked(segment)
        kept = segment.with_name(f"{segment.name}{UNREADABLE_SUFFIX}")
        segment.rename(kept)
        return kept

    def close(self) -> None:
        with self._lock:
            self._seal_locked()

    def _forget_locked(self, segment: Path) -> None:
        if segment in self._sealed:  # a DROP_OLDEST append may have dropped it meanwhile
            self._sealed.remove(segment)
            del self._sizes[segment]
        self._gauge.set(sum(self._sizes.values()))

    def _drop_oldest_locked(self) -> None:
        dropped_records = dropped_segments = 0
        while self._sealed and sum(self._sizes.values()) > self.max_bytes:
            oldest = self._sealed.pop(0)
            del self._sizes[oldest]
            try:
                dropped_records += len(_records(oldest, oldest.read_bytes()))
                oldest.unlink()
            except FileNotFoundError:
                continue  # delivered and removed meanwhile
            dropped_segments += 1
        if dropped_records:
            DROPPED_RECORDS.labels(self.name).inc(dropped_records)
            log.warning(
                "spool over its bound: dropped the oldest records unsent",
                extra={"spool": self.name, "records": dropped_records, "segments": dropped_segments},
            )

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


def _line(record: bytes) -> bytes:
    if b"\n" in record:
        raise ValueError("a spool record is one line: it must not contain a newline")
    return b"%08x %s\n" % (zlib.crc32(record), record)


def _records(segment: Path, data: bytes) -> list[bytes]:
    records, offset = [], 0
    while (end := data.find(b"\n", offset)) != -1:
        crc, _, record = data[offset:end].partition(b" ")
        if _stored_crc(crc) != zlib.crc32(record):
            break
        records.append(record)
        offset = end + 1
    if offset < len(data):
        log.warning("spool segment %s: torn record at byte %d skipped (never acknowledged)", segment, offset)
    return records


def _stored_crc(prefix: bytes) -> int | None:
    try:
        return int(prefix, 16) if len(prefix) == 8 else None
    except ValueError:
        return None
