"""Batched, durable writes: rows go to ClickHouse in batches by size and time, or to the spool.

    writer = Writer(store, spool, WriterConfig())
    writer.start()
    spooled = await writer.write(rows)   # returns once the rows are in ClickHouse or fsync'ed in the spool

Order is kept: while the spool holds anything, new batches are appended to it too, and the replayer
re-inserts segments oldest first; only when the spool is empty do batches go straight to ClickHouse.
A row ClickHouse refuses for its values never comes back to the spool or the replayer: the store
sets it aside in rejected_events on either path (EventStore.insert); what does come back is an
outage or another error of the store's state, retried every `retry_interval_s`.
Memory is bounded: `write` waits while too many rows are pending or the spool is full, and gives up
with ResourceExhausted (with a retry delay) after `backpressure_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from inkloop.errors import ResourceExhausted
from inkloop.spool import Spool
from inkloop_analytics import metrics
from inkloop_analytics.spooled_rows import SpoolFormatError, decode, encode
from inkloop_analytics.store import EventStore
from inkloop_analytics.tables import Rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterConfig:
    # Under load batches fill and go at once; when quiet, rows wait at most the interval. ClickHouse
    # wants few, large inserts (each one is a part to merge): ~10k rows or ~5 inserts/s at most.
    batch_rows: int = 10_000  # flush as soon as this many rows are pending
    flush_interval_s: float = 0.2  # … or when the oldest pending row has waited this long
    max_pending_rows: int = 200_000  # admission stops above this (memory bound)
    backpressure_timeout_s: float = 5.0  # how long `write` waits for room before giving up
    retry_interval_s: float = 1.0  # replayer's pause after ClickHouse refused a record


class Writer:
    def __init__(self, store: EventStore, spool: Spool, config: WriterConfig) -> None:
        self.store = store
        self.spool = spool
        self.config = config
        self._pending: list[tuple[Rows, asyncio.Future[bool]]] = []
        self._pending_rows = 0
        self._has_pending = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._room = asyncio.Event()  # set whenever pending rows or spool bytes went down
        self._spool_grew = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Records of the oldest segment already re-inserted, so a retry resumes where it failed.
        self._replayed: dict[str, int] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_loop()), asyncio.create_task(self._replay_loop())]

    async def stop(self) -> None:
        """Flushes what is pending (to ClickHouse or the spool), then stops both tasks."""
        if not self._tasks:
            return
        flusher, replayer = self._tasks
        self._stopping = True
        self._has_pending.set()
        await flusher
        replayer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replayer
        self._tasks = []
        self.spool.close()

    async def write(self, rows: Rows) -> bool:
        """Durably stores `rows`; True when they went to the spool."""
        await self._admit()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        self._pending_rows += len(rows)
        self._has_pending.set()
        if self._pending_rows >= self.config.batch_rows:
            self._batch_full.set()
        return await future

    def wake_replayer(self) -> None:
        """Called when the database became ready: replay what was spooled meanwhile."""
        self._spool_grew.set()

    async def _admit(self) -> None:
        deadline = time.monotonic() + self.config.backpressure_timeout_s
        while self._pending_rows >= self.config.max_pending_rows or (not self.spool.empty() and self.spool.full()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResourceExhausted(
                    "analytics ingest is backed up: ClickHouse is unavailable and the spool is full",
                    retry_after_s=self.config.retry_interval_s * 5,
                    subject="analytics spool",
                    quota=f"{self.spool.max_bytes} bytes",
                )
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), min(remaining, self.config.retry_interval_s))

    async def _flush_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            if not self._stopping:
                # Wait for a full batch, but no longer than the flush interval.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), self.config.flush_interval_s)
            await self._flush_once()
            if self._stopping and not self._pending:
                return

    async def _flush_once(self) -> None:
        taken, self._pending, self._pending_rows = self._pending, [], 0
        self._has_pending.clear()
        self._batch_full.clear()
        self._room.set()
        if not taken:
            return
        merged = Rows()
        for rows, _ in taken:
            merged.extend(rows)
        try:
            spooled = await self._persist(merged)
        except BaseException as error:  # the spool itself failed (disk full): nothing was acknowledged
            for _, future in taken:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else RuntimeError(str(error)))
            if not isinstance(error, Exception):
                raise
            log.exception("could not write a batch to ClickHouse or to the spool")
            return
        for _, future in taken:
            if not future.done():
                future.set_result(spooled)

    async def _persist(self, rows: Rows) -> bool:
        if self.store.ready and self.spool.empty():
            try:
                with metrics.INSERT_SECONDS.time():
                    await asyncio.to_thread(self.store.insert, rows)
                return False
            except Exception as error:  # Unavailable, or another error of the store's state: retry later
                log.warning("ClickHouse insert failed, spooling %d rows: %s", len(rows), error)
        await asyncio.to_thread(self.spool.append, encode(rows))
        metrics.ROWS_SPOOLED.inc(len(rows))
        self._spool_grew.set()
        return True

    async def _replay_loop(self) -> None:
        while True:
            if self.spool.empty() or not self.store.ready:
                self._spool_grew.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._spool_grew.wait(), self.config.retry_interval_s)
                continue
            if not await self._replay_oldest():
                await asyncio.sleep(self.config.retry_interval_s)

    async def _replay_oldest(self) -> bool:
        """Re-inserts the oldest segment record by record; False when ClickHouse refused one."""
        segment = self.spool.oldest()
        if segment is None:
            return True
        try:
            records = [decode(record) for record in await asyncio.to_thread(self.spool.read, segment)]
        except SpoolFormatError:
            kept = await asyncio.to_thread(self.spool.set_aside, segment)
            log.exception("spool segment %s cannot be read by this version; kept as %s", segment.name, kept.name)
            return True
        except OSError:
            log.exception("reading spool segment %s failed; retrying", segment.name)
            return False
        done = self._replayed.get(segment.name, 0)
        for position in range(done, len(records)):
            try:
                await asyncio.to_thread(self.store.insert, records[position])
            except Exception as error:
                log.warning("spool replay of %s paused at record %d: %s", segment.name, position, error)
                return False
            self._replayed[segment.name] = position + 1
            metrics.ROWS_REPLAYED.inc(len(records[position]))
        self.spool.remove(segment)
        self._replayed.pop(segment.name, None)
        self._room.set()
        log.info("replayed spool segment %s (%d records)", segment.name, len(records))
        return True
