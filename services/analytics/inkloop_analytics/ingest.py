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
from typing import Any, Literal, NamedTuple

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
SELECT DISTINCT materialize('{stream}') AS stream, event_id FROM {table}
WHERE tenant_id IN %({stream}_tenants)s
    AND time >= toDateTime(%({stream}_start)s, 'UTC') AND time <= toDateTime(%({stream}_end)s, 'UTC')
    AND event_id IN %({stream}_ids)s
"""
# Both streams of a batch are looked up in one round trip (UNION ALL of one STORED_IDS per stream).
STREAM_TABLES = {"frontend": FRONTEND_TABLE, "backend": BACKEND_TABLE}


class Ack(NamedTuple):
    """One event's acknowledgement (a named tuple: one is built per event on the hot path)."""

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
        # Keyed by the UUID's integer: its hash is computed in C, a UUID's in Python.
        self._ids: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, event_id: uuid.UUID) -> bool:
        return event_id.int in self._ids

    def add_all(self, event_ids: Iterable[uuid.UUID]) -> None:
        self._ids.update(dict.fromkeys([event_id.int for event_id in event_ids]))
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def discard_all(self, event_ids: Iterable[uuid.UUID]) -> None:
        for event_id in event_ids:
            self._ids.pop(event_id.int, None)


# An event that passed validation, before the duplicate check: (index in its stream, row). The row
# starts with event_id, tenant_id, time (both event tables).
_Candidate = tuple[int, Row]


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
        fresh = [row[0] for _, row in (*front, *back)]
        self.recent.add_all(fresh)  # before any await, so a concurrent batch sees them
        try:
            front, back = await self._drop_stored(front, back, result)

            # 3. Write what is left and the rejections; acknowledge once durable.
            rows.frontend = [row for _, row in front]
            rows.backend = [row for _, row in back]
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
        limits, policy = self.config.limits, self.config.policy
        candidates: list[_Candidate] = []
        for index, event in enumerate(events):
            text = event.event_id
            parsed = parse_event_id(text)
            row = parsed if isinstance(parsed, Rejection) else make_row(event, parsed, now, limits, policy)
            if isinstance(row, Rejection):
                acks[index] = Ack(text, "rejected", row.reason, row.field)
                rejected.append(rejected_row(stream, text, event.tenant_id, batch_id, row, event.ByteSize(), now))
                continue
            acks[index] = Ack(text, "accepted")
            candidates.append((index, row))
        return candidates

    def _drop_repeats(self, candidates: list[_Candidate], acks: list[Ack]) -> list[_Candidate]:
        kept, seen, recent = [], set(), self.recent
        for candidate in candidates:
            index, row = candidate
            key = row[0].int
            if key in seen or row[0] in recent:
                acks[index] = Ack(acks[index].event_id, "duplicate")
                continue
            seen.add(key)
            kept.append(candidate)
        return kept

    async def _drop_stored(
        self, front: list[_Candidate], back: list[_Candidate], result: IngestResult
    ) -> tuple[list[_Candidate], list[_Candidate]]:
        if not (front or back) or not self.config.lookup_stored_ids or not self.store.ready:
            return front, back
        selects, params = [], {}
        for stream, candidates in (("frontend", front), ("backend", back)):
            if not candidates:
                continue
            rows = [row for _, row in candidates]
            times = [row[2] for row in rows]
            params[f"{stream}_tenants"] = tuple({row[1] for row in rows})
            params[f"{stream}_start"] = min(times)
            params[f"{stream}_end"] = max(times)
            params[f"{stream}_ids"] = tuple(row[0] for row in rows)
            selects.append(STORED_IDS.format(stream=stream, table=STREAM_TABLES[stream]))
        sql = " UNION ALL ".join(selects)
        try:
            found = await asyncio.to_thread(self.store.ch.query, sql, params)
        except (InkloopError, QueryError) as error:  # accept: the writer spools; queries dedupe anyway
            log.info("duplicate lookup skipped: %s", error)
            return front, back
        if not found:
            return front, back
        stored = {(stream, event_id.int) for stream, event_id in found}
        return (
            self._mark_stored("frontend", front, result.frontend, stored),
            self._mark_stored("backend", back, result.backend, stored),
        )

    @staticmethod
    def _mark_stored(
        stream: str, candidates: list[_Candidate], acks: list[Ack], stored: set[tuple[str, int]]
    ) -> list[_Candidate]:
        kept = []
        for candidate in candidates:
            index, row = candidate
            if (stream, row[0].int) in stored:
                acks[index] = Ack(acks[index].event_id, "duplicate")
            else:
                kept.append(candidate)
        return kept
