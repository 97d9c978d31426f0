"""Small JSON documents every gateway replica shares: one tenant's templates, one tenant's experiments.

A document is written whole (one atomic write) and read through a short cache, like the variants: an
admin change on one replica is in force on all of them within `cache_s`. SQLite for one gateway,
Redis for several. During a Redis outage reads keep serving the last value read; writes fail with
UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from redis.exceptions import RedisError

from inkloop import errors
from inkloop_gateway import redis_client


class DocumentStore(Protocol):
    async def get(self, name: str) -> Any | None:
        """The document's JSON value, or None when it was never written (at most `cache_s` old)."""
        ...

    async def put(self, name: str, value: Any) -> None:
        """Replaces the document for every replica."""
        ...

    async def aclose(self) -> None: ...


class _Cache:
    def __init__(self, cache_s: float) -> None:
        self.cache_s = cache_s
        self.values: dict[str, tuple[float, str | None]] = {}

    def fresh(self, name: str) -> tuple[bool, str | None]:
        read_at, text = self.values.get(name, (-1e18, None))
        return time.monotonic() - read_at < self.cache_s, text

    def last(self, name: str) -> tuple[bool, str | None]:
        known = self.values.get(name)
        return (known is not None, known[1] if known else None)

    def update(self, name: str, text: str | None) -> None:
        self.values[name] = (time.monotonic(), text)


def _decode(text: str | None) -> Any | None:
    return None if text is None else json.loads(text)


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


UPSERT = "INSERT INTO documents (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data"


class SqliteDocumentStore:
    """Documents in one SQLite table of the gateway's data directory."""

    def __init__(self, path: Path, *, cache_s: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, data TEXT NOT NULL)")
        self._lock = threading.Lock()
        self._cache = _Cache(cache_s)

    async def get(self, name: str) -> Any | None:
        fresh, text = self._cache.fresh(name)
        if not fresh:
            text = await asyncio.to_thread(self._read, name)
            self._cache.update(name, text)
        return _decode(text)

    async def put(self, name: str, value: Any) -> None:
        text = _encode(value)
        await asyncio.to_thread(self._write, name, text)
        self._cache.update(name, text)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM documents WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def _write(self, name: str, text: str) -> None:
        with self._lock:
            self._db.execute(UPSERT, (name, text))


class RedisDocumentStore:
    """Documents as Redis keys `inkloop:doc:<name>`, shared by every replica using that Redis."""

    PREFIX = "inkloop:doc:"

    def __init__(self, url: str, *, cache_s: float = 1.0) -> None:
        self._redis = redis_client.connect(url)
        self._cache = _Cache(cache_s)

    async def get(self, name: str) -> Any | None:
        fresh, text = self._cache.fresh(name)
        if fresh:
            return _decode(text)
        try:
            raw = await self._redis.get(self.PREFIX + name)
        except RedisError as error:
            known, text = self._cache.last(name)
            if known:
                return _decode(text)  # keep serving the last value through an outage
            raise errors.Unavailable(redis_client.OUTAGE_MESSAGE) from error
        text = raw.decode() if isinstance(raw, bytes) else raw
        self._cache.update(name, text)
        return _decode(text)

    async def put(self, name: str, value: Any) -> None:
        text = _encode(value)
        try:
            await self._redis.set(self.PREFIX + name, text)
        except RedisError as error:
            raise errors.Unavailable(redis_client.OUTAGE_MESSAGE) from error
        self._cache.update(name, text)

    async def aclose(self) -> None:
        await self._redis.aclose()


def document_store_from_settings(redis_url: str | None, data_dir: Path, *, cache_s: float = 1.0) -> DocumentStore:
    """Redis when a URL is configured (several replicas), else SQLite in `data_dir/documents.db`."""
    if redis_url:
        return RedisDocumentStore(redis_url, cache_s=cache_s)
    return SqliteDocumentStore(data_dir / "documents.db", cache_s=cache_s)
