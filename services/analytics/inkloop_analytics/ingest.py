"""Ingest: validate each event, drop duplicates, hand the rest to the writer, acknowledge one by one.

    ingestor = Ingestor(store, writer, IngestConfig(policy=PrivacyPolicy(salt="…")))
    result = await ingestor.ingest(request.frontend, request.backend, request.batch_id)

Duplicates are recognised three ways: repeated within the batch, accepted recently by this process
(a bounded in-memory set), or already stored in ClickHouse (looked up by id within the batch's time
span). While ClickHouse is unreachable only the first two apply; an event stored twice that way is
still counted once, because the tables deduplicate by event_id and every query counts distinct ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, overload

from inkloop.errors import InkloopError
from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2
from inkloop_analytics import metrics
from inkloop_analytics.batch_validation import backend_rows, frontend_rows, id_list_text, parse_event_ids
from inkloop_analytics.storage import QueryError
from inkloop_analytics.store import EventStore
from inkloop_analytics.tables import BACKEND_TABLE, FRONTEND_TABLE, Row, Rows
from inkloop_analytics.validation import Limits, Rejection, rejected_row
from inkloop_analytics.writer import Writer

log = logging.getLogger(__name__)

AckStatus = Literal["accepted", "duplicate", "rejected"]

# Ids of the batch that are already stored. The time bounds let ClickHouse skip the partitions and
# granules outside the batch's span (the tables are ordered by tenant, day, event_id). The ids come as
# one comma-separated string: the server parses that several times faster than a list of literals.
STORED_IDS = """
SELECT DISTINCT materialize('{stream}') AS stream, event_id FROM {table}
WHERE tenant_id IN %({stream}_tenants)s
    AND time >= toDateTime(%({stream}_start)s, 'UTC') AND time <= toDateTime(%({stream}_end)s, 'UTC')
    AND event_id IN (SELECT toUUID(arrayJoin(splitByChar(',', %({stream}_ids)s))))
"""
# Both streams of a batch are looked up in one round trip (UNION ALL of one STORED_IDS per stream).
STREAM_TABLES = {"frontend": FRONTEND_TABLE, "backend": BACKEND_TABLE}
# Ids per lookup query: 37 bytes each, this keeps a query under ClickHouse's max_query_size (256 KiB).
LOOKUP_CHUNK_IDS = 5000


class Ack(NamedTuple):
    """One event's acknowledgement."""

    event_id: str
    status: AckStatus
    reason: str = ""
    field: str = ""


class Acks(Sequence[Ack]):
    """One stream's acknowledgements, in request order. Kept as parallel lists (ids as sent, statuses,
    rejections by index): an Ack object per event would be among the costliest allocations of a batch.
    An Ack is made only when one is read."""

    def __init__(self, event_ids: list[str]) -> None:
        self.event_ids = event_ids
        self.statuses: list[AckStatus] = ["accepted"] * len(event_ids)
        self.rejections: dict[int, Rejection] = {}

    def reject(self, index: int, rejection: Rejection) -> None:
        self.statuses[index] = "rejected"
        self.rejections[index] = rejection

    def __len__(self) -> int:
        return len(self.event_ids)

    @overload
    def __getitem__(self, index: int) -> Ack: ...

    @overload
    def __getitem__(self, index: slice) -> list[Ack]: ...

    def __getitem__(self, index: int | slice) -> Ack | list[Ack]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indexes, and IndexError past the end
        rejection = self.rejections.get(index)
        if rejection is None:
            return Ack(self.event_ids[index], self.statuses[index])
        return Ack(self.event_ids[index], "rejected", rejection.reason, rejection.field)


@dataclass
class IngestResult:
    batch_id: str
    frontend: Acks = field(default_factory=lambda: Acks([]))
    backend: Acks = field(default_factory=lambda: Acks([]))
    spooled: bool = False

    def count(self, status: AckStatus) -> int:
        return self.frontend.statuses.count(status) + self.backend.statuses.count(status)


@dataclass(frozen=True)
class IngestConfig:
    policy: PrivacyPolicy
    limits: Limits = field(default_factory=Limits)
    recent_ids: int = 1_000_000  # ids remembered in memory for duplicate detection
    lookup_stored_ids: bool = True  # also ask ClickHouse whether ids of a batch are already stored
    stream_window: int = 16  # requests of one ingest stream in progress at once


class RecentIds:
    """A bounded set of event ids (as the UUID's integer, hashed in C): the latest `capacity` / 2 at
    least, `capacity` at most (plus the last batch, if one batch brings more than half). Two generations
    of sets, the older dropped whole, cost less than forgetting one id at a time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._current: set[int] = set()
        self._previous: set[int] = set()

    def __contains__(self, key: int) -> bool:
        return key in self._current or key in self._previous

    def isdisjoint(self, keys: Iterable[int]) -> bool:
        return self._current.isdisjoint(keys) and self._previous.isdisjoint(keys)

    def add_all(self, keys: Iterable[int]) -> None:
        if self.capacity <= 0:
            return
        self._current.update(keys)
        if len(self._current) >= max(self.capacity // 2, 1):
            self._previous, self._current = self._current, set()

    def discard_all(self, keys: Iterable[int]) -> None:
        for key in keys:
            self._current.discard(key)
            self._previous.discard(key)


@dataclass
class _Candidates:
    """One stream's events that passed validation, before the duplicate checks: index in the stream
    and row, in parallel lists (the rows of both event tables start with event_id, tenant_id, time)."""

    stream: Literal["frontend", "backend"]
    acks: Acks
    indexes: list[int]
    rows: list[Row]

    def keys(self) -> list[int]:
        return [row[0].int for row in self.rows]

    def lookup_part(self, start: int, stop: int) -> tuple[list[Row], str]:
        """Rows [start, stop) and their ids as one comma-separated text, for the duplicate lookup."""
        sent, rows = self.acks.event_ids, self.rows[start:stop]
        return rows, id_list_text([sent[index] for index in self.indexes[start:stop]], [row[0] for row in rows])

    def keep(self, kept: list[int]) -> None:
        """Keeps the candidates at these positions; the others are acknowledged as duplicates."""
        if len(kept) == len(self.rows):
            return
        kept_positions, statuses = set(kept), self.acks.statuses
        for position, index in enumerate(self.indexes):
            if position not in kept_positions:
                statuses[index] = "duplicate"
        self.indexes = [self.indexes[position] for position in kept]
        self.rows = [self.rows[position] for position in kept]


class Ingestor:
    def __init__(
        self, store: EventStore, writer: Writer, config: IngestConfig, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.store = store
        self.writer = writer
        self.config = config
        self.recent = RecentIds(config.recent_ids)
        self._clock = clock or (lambda: datetime.now(UTC))

    async def ingest(
        self,
        frontend: Sequence[analytics_pb2.FrontendEvent],
        backend: Sequence[analytics_pb2.BackendEvent],
        batch_id: str = "",
    ) -> IngestResult:
        # 1. Validate every event on its own; invalid ones become rejected rows.
        now = self._clock().replace(microsecond=0)
        rows = Rows()
        front = self._validate("frontend", frontend, now, batch_id, rows.rejected)
        back = self._validate("backend", backend, now, batch_id, rows.rejected)
        result = IngestResult(batch_id, front.acks, back.acks)

        # 2. Drop duplicates: within the batch, recently seen, or already in ClickHouse.
        fresh = self._drop_repeats(front) + self._drop_repeats(back)
        self.recent.add_all(fresh)  # before any await, so a concurrent batch sees them
        try:
            await self._drop_stored(front, back)

            # 3. Write what is left and the rejections; acknowledge once durable.
            rows.frontend = front.rows
            rows.backend = back.rows
            if rows:
                result.spooled = await self.writer.write(rows)
        except BaseException:
            self.recent.discard_all(fresh)  # not acknowledged: a retry must be accepted
            raise
        for stream, acks in (("frontend", result.frontend), ("backend", result.backend)):
            for status in ("accepted", "duplicate", "rejected"):
                if count := acks.statuses.count(status):
                    metrics.EVENTS.labels(stream, status).inc(count)
        return result

    async def ingest_stream(self, requests: AsyncIterable[analytics_pb2.IngestRequest]) -> AsyncIterator[IngestResult]:
        """One result per request, in order, each once its batch is durable (as `ingest` gives it).

        Up to `stream_window` requests are in progress at once: later batches are validated and looked
        up while earlier ones are being written, and the writer gets fewer, larger inserts. No more is
        read while the window is full, so a stream's memory stays bounded (backpressure).
        """
        window = asyncio.Semaphore(self.config.stream_window)
        # Tasks in request order; then None at the end of the requests, or the error that ended them.
        in_progress: asyncio.Queue[asyncio.Task[IngestResult] | BaseException | None] = asyncio.Queue()

        async def read() -> None:
            try:
                iterator = aiter(requests)
                while True:
                    await window.acquire()
                    request = await anext(iterator, None)
                    if request is None:
                        break
                    batch = self.ingest(request.frontend, request.backend, request.batch_id)
                    in_progress.put_nowait(asyncio.create_task(batch))
            except Exception as error:
                in_progress.put_nowait(error)
            else:
                in_progress.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await in_progress.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                result = await item
                window.release()
                yield result
        finally:
            # If the stream ended early (failed batch, client gone), the batches still in progress are never
            # acknowledged, so their ids leave the recent set; rows of theirs stored anyway are deduplicated.
            unanswered: list[asyncio.Task[Any]] = [reader]
            while not in_progress.empty():
                if isinstance(left := in_progress.get_nowait(), asyncio.Task):
                    unanswered.append(left)
            for task in unanswered:
                task.cancel()
            await asyncio.gather(*unanswered, return_exceptions=True)

    def _validate(
        self,
        stream: Literal["frontend", "backend"],
        events: Sequence[Any],  # FrontendEvent or BackendEvent, as `stream` says
        now: datetime,
        batch_id: str,
        rejected: list[Row],
    ) -> _Candidates:
        make_rows = frontend_rows if stream == "frontend" else backend_rows
        events = list(events)  # a protobuf repeated field makes each element's wrapper again on every pass
        texts = [event.event_id for event in events]
        results = make_rows(events, parse_event_ids(texts), now, self.config.limits, self.config.policy)
        acks = Acks(texts)
        refused = [index for index, row in enumerate(results) if isinstance(row, Rejection)]
        if not refused:
            return _Candidates(stream, acks, list(range(len(results))), results)  # type: ignore[arg-type]
        for index in refused:
            problem: Rejection = results[index]  # type: ignore[assignment]
            acks.reject(index, problem)
            event = events[index]
            rejected.append(
                rejected_row(stream, texts[index], event.tenant_id, batch_id, problem, event.ByteSize(), now)
            )
        refused_set = set(refused)
        indexes = [index for index in range(len(results)) if index not in refused_set]
        return _Candidates(stream, acks, indexes, [results[index] for index in indexes])  # type: ignore[misc]

    def _drop_repeats(self, candidates: _Candidates) -> list[int]:
        """Drops ids repeated within the batch or seen recently; returns the ids of the others."""
        keys = candidates.keys()
        if len(set(keys)) == len(keys) and self.recent.isdisjoint(keys):
            return keys  # the common case, checked in C
        kept, seen, recent = [], set(), self.recent
        for position, key in enumerate(keys):
            if key not in seen and key not in recent:
                seen.add(key)
                kept.append(position)
        candidates.keep(kept)
        return [keys[position] for position in kept]

    async def _drop_stored(self, front: _Candidates, back: _Candidates) -> None:
        if not (front.rows or back.rows) or not self.config.lookup_stored_ids or not self.store.ready:
            return
        try:
            stored = await asyncio.to_thread(self._stored_ids, front, back)
        except (InkloopError, QueryError) as error:  # accept: the writer spools; queries dedupe anyway
            log.info("duplicate lookup skipped: %s", error)
            return
        for candidates in (front, back):
            if stored[candidates.stream]:
                ids = stored[candidates.stream]
                candidates.keep([position for position, key in enumerate(candidates.keys()) if key not in ids])

    def _stored_ids(self, front: _Candidates, back: _Candidates) -> dict[str, set[int]]:
        """Per stream, the ids (as int) of the candidates already in ClickHouse; a few thousand per query."""
        lookups, half = self.store.lookups, LOOKUP_CHUNK_IDS // 2
        stored: dict[str, set[int]] = {"frontend": set(), "backend": set()}
        for start in range(0, max(len(front.rows), len(back.rows)), half):
            parts: dict[str, tuple[list[Row], str]] = {
                candidates.stream: candidates.lookup_part(start, start + half) for candidates in (front, back)
            }
            sql, params = _stored_ids_query(parts)
            for stream, event_id in lookups.query(sql, params):
                stored[stream].add(event_id.int)
        return stored


def _stored_ids_query(parts: dict[str, tuple[list[Row], str]]) -> tuple[str, dict[str, Any]]:
    selects: list[str] = []
    params: dict[str, Any] = {}
    for stream, (rows, ids) in parts.items():
        if not rows:
            continue
        times = [row[2] for row in rows]
        params[f"{stream}_tenants"] = tuple({row[1] for row in rows})
        params[f"{stream}_start"] = min(times)
        params[f"{stream}_end"] = max(times)
        params[f"{stream}_ids"] = ids
        selects.append(STORED_IDS.format(stream=stream, table=STREAM_TABLES[stream]))
    return " UNION ALL ".join(selects), params
