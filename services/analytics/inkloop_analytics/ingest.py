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
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from inkloop.errors import InkloopError
from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2
from inkloop_analytics.storage import QueryError
from inkloop_analytics.store import EventStore
from inkloop_analytics.tables import BACKEND_TABLE, FRONTEND_TABLE, Row, Rows
from inkloop_analytics.validation import Limits, Rejection, backend_row, frontend_row, parse_event_id, rejected_row
from inkloop_analytics.writer import Writer

log = logging.getLogger(__name__)

AckStatus = Literal["accepted", "duplicate", "rejected"]

# Ids of the batch that are already stored. The time bounds let ClickHouse skip the partitions and
# granules outside the batch's span (the tables are ordered by tenant, day, event_id).
STORED_IDS = """
SELECT DISTINCT event_id FROM {table}
WHERE tenant_id IN %(tenants)s
    AND time >= toDateTime(%(start)s, 'UTC') AND time <= toDateTime(%(end)s, 'UTC') AND event_id IN %(ids)s
"""


@dataclass(frozen=True)
class Ack:
    event_id: str
    status: AckStatus
    reason: str = ""
    field: str = ""


@dataclass
class IngestResult:
    batch_id: str
    frontend: list[Ack] = field(default_factory=list)
    backend: list[Ack] = field(default_factory=list)
    spooled: bool = False

    def count(self, status: AckStatus) -> int:
        return sum(1 for ack in (*self.frontend, *self.backend) if ack.status == status)


@dataclass(frozen=True)
class IngestConfig:
    policy: PrivacyPolicy
    limits: Limits = field(default_factory=Limits)
    recent_ids: int = 1_000_000  # ids remembered in memory for duplicate detection
    lookup_stored_ids: bool = True  # also ask ClickHouse whether ids of a batch are already stored


class RecentIds:
    """A bounded set of event ids, forgetting the oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[uuid.UUID, None] = OrderedDict()

    def __contains__(self, event_id: uuid.UUID) -> bool:
        return event_id in self._ids

    def add_all(self, event_ids: Iterable[uuid.UUID]) -> None:
        for event_id in event_ids:
            self._ids[event_id] = None
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def discard_all(self, event_ids: Iterable[uuid.UUID]) -> None:
        for event_id in event_ids:
            self._ids.pop(event_id, None)


@dataclass
class _Candidate:
    """An event that passed validation, before the duplicate check."""

    index: int
    event_id: uuid.UUID
    tenant_id: str
    time: datetime
    row: Row


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
        result = IngestResult(batch_id, [Ack("", "accepted")] * len(frontend), [Ack("", "accepted")] * len(backend))
        rows = Rows()
        front = self._validate("frontend", frontend, now, batch_id, result.frontend, rows.rejected)
        back = self._validate("backend", backend, now, batch_id, result.backend, rows.rejected)

        # 2. Drop duplicates: within the batch, recently seen, or already in ClickHouse.
        front = self._drop_repeats(front, result.frontend)
        back = self._drop_repeats(back, result.backend)
        fresh = [candidate.event_id for candidate in (*front, *back)]
        self.recent.add_all(fresh)  # before any await, so a concurrent batch sees them
        try:
            front = await self._drop_stored(FRONTEND_TABLE, front, result.frontend)
            back = await self._drop_stored(BACKEND_TABLE, back, result.backend)

            # 3. Write what is left and the rejections; acknowledge once durable.
            rows.frontend = [candidate.row for candidate in front]
            rows.backend = [candidate.row for candidate in back]
            if rows:
                result.spooled = await self.writer.write(rows)
        except BaseException:
            self.recent.discard_all(fresh)  # not acknowledged: a retry must be accepted
            raise
        return result

    def _validate(
        self,
        stream: Literal["frontend", "backend"],
        events: Sequence[Any],  # FrontendEvent or BackendEvent, as `stream` says
        now: datetime,
        batch_id: str,
        acks: list[Ack],
        rejected: list[Row],
    ) -> list[_Candidate]:
        make_row = frontend_row if stream == "frontend" else backend_row
        time_column = 2  # `time` is the third column of both event tables
        candidates = []
        for index, event in enumerate(events):
            parsed = parse_event_id(event.event_id)
            row = (
                parsed
                if isinstance(parsed, Rejection)
                else make_row(event, parsed, now, self.config.limits, self.config.policy)
            )
            if isinstance(row, Rejection):
                acks[index] = Ack(event.event_id, "rejected", row.reason, row.field)
                rejected.append(
                    rejected_row(stream, event.event_id, event.tenant_id, batch_id, row, event.ByteSize(), now)
                )
                continue
            assert isinstance(parsed, uuid.UUID)
            acks[index] = Ack(event.event_id, "accepted")
            candidates.append(_Candidate(index, parsed, event.tenant_id, row[time_column], row))
        return candidates

    def _drop_repeats(self, candidates: list[_Candidate], acks: list[Ack]) -> list[_Candidate]:
        kept, seen = [], set()
        for candidate in candidates:
            if candidate.event_id in seen or candidate.event_id in self.recent:
                acks[candidate.index] = Ack(acks[candidate.index].event_id, "duplicate")
                continue
            seen.add(candidate.event_id)
            kept.append(candidate)
        return kept

    async def _drop_stored(self, table: str, candidates: list[_Candidate], acks: list[Ack]) -> list[_Candidate]:
        if not candidates or not self.config.lookup_stored_ids or not self.store.ready:
            return candidates
        params = {
            "tenants": tuple({candidate.tenant_id for candidate in candidates}),
            "start": min(candidate.time for candidate in candidates),
            "end": max(candidate.time for candidate in candidates),
            "ids": tuple(candidate.event_id for candidate in candidates),
        }
        try:
            found = await asyncio.to_thread(self.store.ch.query, STORED_IDS.format(table=table), params)
        except (InkloopError, QueryError) as error:  # accept: the writer spools; queries dedupe anyway
            log.info("duplicate lookup skipped: %s", error)
            return candidates
        stored = {event_id for (event_id,) in found}
        kept = []
        for candidate in candidates:
            if candidate.event_id in stored:
                acks[candidate.index] = Ack(acks[candidate.index].event_id, "duplicate")
            else:
                kept.append(candidate)
        return kept
