"""An on-disk FIFO of event batches: where back-end events wait while analytics is unreachable.

One file per batch (a serialized IngestRequest), named so that lexical order is arrival order, written
to a temporary name and renamed so a crash never leaves half a batch. Replay reads oldest first and
deletes a file only once analytics acknowledged it; event ids never change, so a batch sent twice
(acknowledged, then the process died before the delete) is deduplicated by analytics.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".batch"


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        # An upper bound on the bytes on disk: the last scan plus what was appended since. Replayed
        # files are deleted elsewhere, which only makes it higher than the truth; the directory is
        # scanned (and the oldest batches dropped) only once it passes `max_bytes`.
        self._estimate = self._scan()[1]

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def __len__(self) -> int:
        return len(self.files())

    def append(self, batch: bytes) -> None:
        name = f"{time.time_ns():020d}-{next(self._counter):08d}{SUFFIX}"
        temporary = self.directory / f".{name}.{secrets.token_hex(4)}.tmp"
        temporary.write_bytes(batch)
        temporary.replace(self.directory / name)
        self._estimate += len(batch)
        if self._estimate > self.max_bytes:
            self._bound()

    def _scan(self) -> tuple[list[tuple[Path, int]], int]:
        found: list[tuple[Path, int]] = []
        for path in self.files():
            try:
                found.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue  # replayed and deleted meanwhile
        return found, sum(size for _path, size in found)

    def _bound(self) -> None:
        found, total = self._scan()
        files = [path for path, _size in found]
        sizes = [size for _path, size in found]
        dropped = 0
        # Bounded disk beats unbounded growth during a long outage: the oldest batches go first.
        for path, size in zip(files, sizes, strict=True):
            if total <= self.max_bytes or len(files) - dropped <= 1:
                break
            path.unlink(missing_ok=True)
            total -= size
            dropped += 1
        self._estimate = total
        if dropped:
            log.warning("event spool over its bound; dropped the oldest batches", extra={"batches": dropped})
