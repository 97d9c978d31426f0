"""Durable webhook deliveries, in the job store's database: SQLite (one gateway) or Redis (replicas).

A delivery is planned when its job is submitted (before the job exists, so a crash can lose neither),
due at once, and claimed with a lease by one replica at a time; while its job runs it is put off
without counting an attempt. Its id is the `webhook-id` of every attempt, so a receiver that gets a
retry after a lost answer sees the same id (at-least-once). A job ends once, so its deliveries report
one outcome however often they are tried.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from redis.exceptions import RedisError

from inkloop import errors
from inkloop_gateway import redis_client

PENDING, DELIVERED, FAILED, SKIPPED = "pending", "delivered", "failed", "skipped"


@dataclass(frozen=True)
class Attempt:
    at: float
    http_status: int
    error: str
    duration_s: float


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    tenant_id: str
    job_id: str
    endpoint_id: str  # "" = the job's own webhook URL
    url: str
    created_at: float
    next_attempt_at: float
    state: str = PENDING
    event_type: str = ""
    attempts: tuple[Attempt, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Delivery:
        data = json.loads(text)
        data["attempts"] = tuple(Attempt(**attempt) for attempt in data["attempts"])
        return cls(**data)

    def tried(self, attempt: Attempt, state: str, next_attempt_at: float, event_type: str) -> Delivery:
        return replace(
            self,
            attempts=(*self.attempts, attempt),
            state=state,
            next_attempt_at=next_attempt_at,
            event_type=event_type,
        )


#: `list[Delivery]`, spelled so inside classes whose `list` method shadows the builtin.
DeliveryList = list[Delivery]
Rows = Sequence[tuple[object, ...]]


class Outbox(Protocol):
    async def add(self, deliveries: DeliveryList) -> None:
        """Stores new deliveries; one whose id is known is left as it is."""
        ...

    async def claim(self, now: float, owner: str, lease_s: float, limit: int) -> DeliveryList:
        """Due pending deliveries, leased to `owner` for `lease_s`."""
        ...

    async def save(self, delivery: Delivery) -> None:
        """Writes a claimed delivery back and ends its lease."""
        ...

    async def list(self, tenant_id: str, job_id: str, limit: int) -> DeliveryList:
        """Newest first."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_tenant ON webhook_deliveries (tenant_id, created_at);
"""
_CLAIM = """
UPDATE webhook_deliveries SET lease_until = ?
WHERE delivery_id IN (
    SELECT delivery_id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= ? AND lease_until < ?
    ORDER BY next_attempt_at LIMIT ?
)
RETURNING data
"""


_SAVE = "UPDATE webhook_deliveries SET state = ?, next_attempt_at = ?, lease_until = 0, data = ? WHERE delivery_id = ?"
_INSERT = """
INSERT OR IGNORE INTO webhook_deliveries (delivery_id, tenant_id, job_id, created_at, state, next_attempt_at, data)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


class SqliteOutbox:
    """Deliveries in a table of the SQLite job store's file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    async def add(self, deliveries: DeliveryList) -> None:
        rows = [
            (d.delivery_id, d.tenant_id, d.job_id, d.created_at, d.state, d.next_attempt_at, d.to_json())
            for d in deliveries
        ]
        await asyncio.to_thread(self._run_many, _INSERT, rows)

    async def claim(self, now: float, owner: str, lease_s: float, limit: int) -> DeliveryList:
        rows = await asyncio.to_thread(self._query, _CLAIM, (now + lease_s, now, now, limit))
        return [Delivery.from_json(str(row[0])) for row in rows]

    async def save(self, delivery: Delivery) -> None:
        await asyncio.to_thread(
            self._run_many,
            _SAVE,
            [(delivery.state, delivery.next_attempt_at, delivery.to_json(), delivery.delivery_id)],
        )

    async def list(self, tenant_id: str, job_id: str, limit: int) -> DeliveryList:
        sql = "SELECT data FROM webhook_deliveries WHERE tenant_id = ?"
        params: tuple[object, ...] = (tenant_id,)
        if job_id:
            sql, params = sql + " AND job_id = ?", (*params, job_id)
        rows = await asyncio.to_thread(
            self._query, sql + " ORDER BY created_at DESC, delivery_id LIMIT ?", (*params, limit)
        )
        return [Delivery.from_json(str(row[0])) for row in rows]

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()

    def _run_many(self, sql: str, rows: Rows) -> None:
        with self._lock:
            self._db.executemany(sql, rows)

    def _query(self, sql: str, params: tuple[object, ...]) -> Rows:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())


class RedisOutbox:
    """Deliveries as Redis keys beside the Redis job store: one per delivery, a due set, a tenant index."""

    PREFIX = "inkloop:webhook:"

    def __init__(self, url: str) -> None:
        self._redis = redis_client.connect(url)

    def _key(self, delivery_id: str) -> str:
        return f"{self.PREFIX}d:{delivery_id}"

    async def add(self, deliveries: DeliveryList) -> None:
        try:
            for delivery in deliveries:
                if await self._redis.set(self._key(delivery.delivery_id), delivery.to_json(), nx=True):
                    async with self._redis.pipeline(transaction=True) as pipe:
                        pipe.zadd(f"{self.PREFIX}due", {delivery.delivery_id: delivery.next_attempt_at})
                        pipe.zadd(f"{self.PREFIX}t:{delivery.tenant_id}", {delivery.delivery_id: delivery.created_at})
                        await pipe.execute()
        except RedisError as error:
            raise errors.Unavailable(redis_client.OUTAGE_MESSAGE) from error

    async def claim(self, now: float, owner: str, lease_s: float, limit: int) -> DeliveryList:
        ids = await self._redis.zrangebyscore(f"{self.PREFIX}due", "-inf", now, start=0, num=limit)
        claimed = []
        for raw_id in ids:
            delivery_id = _text(raw_id)
            if not await self._redis.set(f"{self.PREFIX}lease:{delivery_id}", owner, nx=True, px=int(lease_s * 1000)):
                continue  # another replica is on it
            text = await self._redis.get(self._key(delivery_id))
            if text is None:
                await self._redis.zrem(f"{self.PREFIX}due", delivery_id)
                continue
            delivery = Delivery.from_json(text)
            if delivery.state == PENDING:
                claimed.append(delivery)
        return claimed

    async def save(self, delivery: Delivery) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(delivery.delivery_id), delivery.to_json())
            if delivery.state == PENDING:
                pipe.zadd(f"{self.PREFIX}due", {delivery.delivery_id: delivery.next_attempt_at})
            else:
                pipe.zrem(f"{self.PREFIX}due", delivery.delivery_id)
            pipe.delete(f"{self.PREFIX}lease:{delivery.delivery_id}")
            await pipe.execute()

    async def list(self, tenant_id: str, job_id: str, limit: int) -> DeliveryList:
        try:
            ids = await self._redis.zrevrange(f"{self.PREFIX}t:{tenant_id}", 0, -1 if job_id else limit - 1)
            texts = await self._redis.mget([self._key(_text(i)) for i in ids]) if ids else []
        except RedisError as error:
            raise errors.Unavailable(redis_client.OUTAGE_MESSAGE) from error
        found = [Delivery.from_json(text) for text in texts if text is not None]
        return [d for d in found if not job_id or d.job_id == job_id][:limit]

    async def aclose(self) -> None:
        await self._redis.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def outbox_from_settings(redis_url: str | None, data_dir: Path) -> Outbox:
    """Beside the job store: its Redis, or its SQLite file `data_dir/jobs.db`."""
    if redis_url:
        return RedisOutbox(redis_url)
    return SqliteOutbox(data_dir / "jobs.db")
