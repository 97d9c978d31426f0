"""Result cache: a finished generation's serialized `GenerationResult`, keyed by everything that
decides its pixels.

The key (`cache_key`) covers the variant and model revision, the kind, the NORMALISED prompt and
negative prompt, every parameter including the seed and output format, and the SHA-256 of any input
image and mask. Normalising means prompts differing only in whitespace or character width share an
entry; `ValidatedTask.to_task_pb` sends inference that same normalised text, so they would also have
produced the same image.

Two stores: `SqliteResultCache` (one gateway, embedded; LRU within a byte budget plus a TTL) and
`RedisResultCache` (shared by replicas; Redis's own maxmemory LRU bounds the size, SET EX the age).
A cache is an optimisation: the Redis store logs and ignores Redis errors rather than failing a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from redis.exceptions import RedisError

from inkloop_gateway import redis_client
from inkloop_gateway.admission.validation import ValidatedTask

log = logging.getLogger("inkloop.gateway.cache")

#: Bumped when the key's encoding changes, so old entries are simply never hit again.
KEY_VERSION = 1


def cache_key(variant: str, model_revision: str, task: ValidatedTask, seed: int) -> str:
    """Hex SHA-256 of a canonical JSON encoding of everything that decides the result's bytes."""
    extension = task.extension
    fields = {
        "v": KEY_VERSION,
        "variant": variant,
        "revision": model_revision,
        "kind": int(task.kind),
        "prompt": task.normalized_prompt(),
        "negative_prompt": task.normalized_negative_prompt(),
        "width": task.width,
        "height": task.height,
        "steps": task.steps,
        # float32 on the wire; repr of the float64 it widens to is exact and stable
        "true_cfg_scale": repr(float(task.true_cfg_scale)),
        "seed": int(seed),
        "num_images": task.num_images,
        "output_format": int(task.output_format),
        "feather_px": task.feather_px,
        "extension": None if extension is None else [extension.left, extension.top, extension.right, extension.bottom],
        "image": hashlib.sha256(task.image).hexdigest() if task.image else "",
        "mask": hashlib.sha256(task.mask).hexdigest() if task.mask else "",
    }
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


class ResultCache(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The serialized GenerationResult stored under `key`, or None."""
        ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    size       INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_used ON results (used_at);
CREATE INDEX IF NOT EXISTS results_expires ON results (expires_at);
"""
SELECT_ENTRY = "SELECT value, used_at FROM results WHERE key = ? AND expires_at > ?"
TOUCH_ENTRY = "UPDATE results SET used_at = ? WHERE key = ?"
UPSERT_ENTRY = (
    "INSERT INTO results (key, value, size, expires_at, used_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, size = excluded.size, "
    "expires_at = excluded.expires_at, used_at = excluded.used_at"
)
DELETE_EXPIRED = "DELETE FROM results WHERE expires_at <= ?"
TOTAL_SIZE = "SELECT COALESCE(SUM(size), 0) FROM results"
EXPIRED_SIZE = "SELECT COALESCE(SUM(size), 0) FROM results WHERE expires_at <= ?"
ENTRY_SIZE = "SELECT size FROM results WHERE key = ?"
OLDEST_USED = "SELECT key, size FROM results ORDER BY used_at LIMIT ?"
DELETE_ENTRY = "DELETE FROM results WHERE key = ?"


class SqliteResultCache:
    """Results in a SQLite file: least recently used entries go beyond `max_bytes`, all after `ttl_s`.

    One gateway process owns the file (it keeps the byte total in memory). Operations run one at a
    time under a lock. A read is one indexed SELECT (tens of microseconds): it runs on the event loop
    when the lock is free, and in a worker thread only when a write (`put`, evictions) holds it, so
    the loop never waits for a write. Writes always run in a worker thread. A hit rewrites its "last
    used" time at most once per `TOUCH_GRANULARITY_S`, so a hot entry costs reads, not a write per
    hit; LRU order is exact to that granularity.
    """

    TOUCH_GRANULARITY_S = 1.0
    _EVICT_BATCH = 64

    def __init__(self, path: Path, *, max_bytes: int, ttl_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost cache entry after power loss is fine
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._db.execute(DELETE_EXPIRED, (time.time(),))
        self._total = int(self._db.execute(TOTAL_SIZE).fetchone()[0])

    @property
    def total_bytes(self) -> int:
        return self._total

    async def get(self, key: str) -> bytes | None:
        if self._lock.acquire(blocking=False):
            try:
                return self._read(key)
            finally:
                self._lock.release()
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, value: bytes) -> None:
        await asyncio.to_thread(self._put, key, value)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            return self._read(key)

    def _read(self, key: str) -> bytes | None:
        """A hit's value (touching its last-used time when due); the caller holds the lock."""
        now = time.time()
        row = self._db.execute(SELECT_ENTRY, (key, now)).fetchone()
        if row is None:
            return None
        value, used_at = row
        if now - used_at >= self.TOUCH_GRANULARITY_S:
            self._db.execute(TOUCH_ENTRY, (now, key))
        return bytes(value)

    def _put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return  # would evict everything and still not fit
        now = time.time()
        with self._lock:
            total = self._total
            self._db.execute("BEGIN IMMEDIATE")
            try:
                total -= int(self._db.execute(EXPIRED_SIZE, (now,)).fetchone()[0])
                self._db.execute(DELETE_EXPIRED, (now,))
                replaced = self._db.execute(ENTRY_SIZE, (key,)).fetchone()
                total += len(value) - (replaced[0] if replaced else 0)
                self._db.execute(UPSERT_ENTRY, (key, value, len(value), now + self.ttl_s, now))
                while total > self.max_bytes:
                    for oldest, size in self._db.execute(OLDEST_USED, (self._EVICT_BATCH,)).fetchall():
                        if oldest == key:
                            continue  # the entry just stored is the newest; it fits on its own
                        self._db.execute(DELETE_ENTRY, (oldest,))
                        total -= size
                        if total <= self.max_bytes:
                            break
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._total = total


class RedisResultCache:
    """Results in Redis, shared by replicas. Entries expire after `ttl_s`; the size bound is Redis's
    `maxmemory` with an LRU policy (`allkeys-lru`), configured on the server. Entries larger than
    `max_entry_bytes` are not stored (one huge result should not flush many small ones)."""

    KEY_PREFIX = "inkloop:result:"

    def __init__(self, url: str, *, ttl_s: float, max_entry_bytes: int) -> None:
        self._redis = redis_client.connect(url)
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self.max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self.KEY_PREFIX + key)
        except RedisError as error:
            log.warning("result cache read failed", extra={"error": str(error)})
            return None
        return value if isinstance(value, bytes) else None  # the client returns raw bytes (no decoding)

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_entry_bytes:
            return
        try:
            await self._redis.set(self.KEY_PREFIX + key, value, px=self.ttl_ms)
        except RedisError as error:
            log.warning("result cache write failed", extra={"error": str(error)})

    async def aclose(self) -> None:
        await self._redis.aclose()


#: Largest single entry the Redis cache stores (four 2048² PNGs fit well within it).
REDIS_MAX_ENTRY_BYTES = 64 * 1024 * 1024


def cache_from_settings(redis_url: str | None, data_dir: Path, max_bytes: int, ttl_s: float) -> ResultCache:
    """Redis when a URL is configured (several replicas), else SQLite in `data_dir/result-cache.db`."""
    if redis_url:
        return RedisResultCache(redis_url, ttl_s=ttl_s, max_entry_bytes=min(max_bytes, REDIS_MAX_ENTRY_BYTES))
    return SqliteResultCache(data_dir / "result-cache.db", max_bytes=max_bytes, ttl_s=ttl_s)
