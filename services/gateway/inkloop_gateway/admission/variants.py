"""A/B and canary: model variants with traffic weights, and a sticky assignment of users to them.

`assign` hashes the user key to a fixed point u in [0, 1) and walks the variants' cumulative
weights in their configured order. The same user gets the same variant in every process and after
restarts, as long as the weights stay put. When weights change, only users whose u lies between an
old and a new boundary move; everyone else keeps their variant. With a canary listed LAST, raising
its weight only moves users into it and lowering it only moves users out (a user once in the canary
stays there while it grows). Reordering the list reshuffles many users: append, don't reorder.

Stores: `SqliteVariantStore` (one gateway) and `RedisVariantStore` (shared by replicas). Until an
admin sets variants, both serve the configured default. Readers cache for `cache_s` (1 s), so a
change made on any replica is in force everywhere within that, without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from redis.exceptions import RedisError

from inkloop import errors
from inkloop.errors import FieldViolation, InvalidArgument
from inkloop_gateway import redis_client
from inkloop_gateway.jobs.replicas import target_problem

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class Variant:
    """A model variant: its name (on jobs, results and events), its inference target and weight."""

    name: str
    target: str
    weight: int
    #: The inference-side variant (LoRA set, schedule, defaults) this A/B variant runs; "" = the default.
    model: str = ""


#: `list[Variant]`, spelled so inside classes whose `list` method shadows the builtin.
VariantList = list[Variant]


def validate_variants(variants: Sequence[Variant]) -> list[Variant]:
    """The variants, or `InvalidArgument` naming each bad field (`variants[i].name` …)."""
    problems: list[FieldViolation] = []
    seen: set[str] = set()
    for i, variant in enumerate(variants):
        if not _NAME.match(variant.name):
            problems.append(FieldViolation(f"variants[{i}].name", "must be 1-64 characters of A-Z a-z 0-9 . _ -"))
        elif variant.name in seen:
            problems.append(FieldViolation(f"variants[{i}].name", f"duplicate name {variant.name!r}"))
        seen.add(variant.name)
        target_error = target_problem(variant.target)
        if target_error is not None:
            problems.append(FieldViolation(f"variants[{i}].target", target_error))
        if variant.weight < 0:
            problems.append(FieldViolation(f"variants[{i}].weight", f"must be >= 0, got {variant.weight}"))
    if not any(variant.weight > 0 for variant in variants):
        problems.append(FieldViolation("variants", "at least one variant needs a weight > 0"))
    if problems:
        raise InvalidArgument.of(problems)
    return list(variants)


def assign(variants: Sequence[Variant], user_key: str) -> Variant:
    """The variant of `user_key`: sticky, proportional to weight, zero weight gets nobody."""
    if not any(variant.weight > 0 for variant in variants):
        raise errors.FailedPrecondition("no model variant has traffic weight")
    return variants[sticky_choice([variant.weight for variant in variants], user_key)]


def sticky_choice(weights: Sequence[int], key: str) -> int:
    """The index `key` falls on when [0, 1) is cut into `weights` in order (some weight must be > 0)."""
    total = sum(weight for weight in weights if weight > 0)
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    point = (digest * total) >> 64  # = floor(u * total) with u = digest / 2**64, exact in integers
    for index, weight in enumerate(weights):
        if weight <= 0:
            continue
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable: point < total")


class VariantStore(Protocol):
    async def list(self) -> VariantList:
        """The variants in force (at most `cache_s` old)."""
        ...

    async def set(self, variants: VariantList) -> None:
        """Validates and replaces the variants for every replica."""
        ...

    async def aclose(self) -> None: ...


def _encode(variants: Sequence[Variant]) -> str:
    return json.dumps([[v.name, v.target, v.weight, v.model] for v in variants], separators=(",", ":"))


def _decode(text: str | bytes) -> VariantList:
    # Lists of three were written before variants named an inference-side variant.
    return [
        Variant(str(item[0]), str(item[1]), int(item[2]), str(item[3]) if len(item) > 3 else "")
        for item in json.loads(text)
    ]


class _Cached:
    """The last variants read, for `cache_s`: a job submission should not cost a store read."""

    def __init__(self, cache_s: float) -> None:
        self.cache_s = cache_s
        self.value: VariantList | None = None
        self.read_at = 0.0

    def fresh(self) -> VariantList | None:
        if self.value is not None and time.monotonic() - self.read_at < self.cache_s:
            return list(self.value)
        return None

    def update(self, value: VariantList) -> VariantList:
        self.value, self.read_at = list(value), time.monotonic()
        return list(value)


CREATE_VARIANTS = "CREATE TABLE IF NOT EXISTS variants (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL)"
SELECT_VARIANTS = "SELECT data FROM variants WHERE id = 1"
UPSERT_VARIANTS = "INSERT INTO variants (id, data) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data"


class SqliteVariantStore:
    """Variants in a SQLite file (one row holding the list, so a change is one atomic write)."""

    def __init__(self, path: Path, default: VariantList, *, cache_s: float = 1.0) -> None:
        self.default = validate_variants(default)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(CREATE_VARIANTS)
        self._lock = threading.Lock()
        self._cache = _Cached(cache_s)

    async def list(self) -> VariantList:
        cached = self._cache.fresh()
        if cached is not None:
            return cached
        return self._cache.update(await asyncio.to_thread(self._read))

    async def set(self, variants: VariantList) -> None:
        variants = validate_variants(variants)
        await asyncio.to_thread(self._write, _encode(variants))
        self._cache.update(variants)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self) -> VariantList:
        with self._lock:
            row = self._db.execute(SELECT_VARIANTS).fetchone()
        return _decode(row[0]) if row else list(self.default)

    def _write(self, data: str) -> None:
        with self._lock:
            self._db.execute(UPSERT_VARIANTS, (data,))


class RedisVariantStore:
    """Variants in one Redis key, shared by every replica using that Redis."""

    KEY = "inkloop:variants"

    def __init__(self, url: str, default: VariantList, *, cache_s: float = 1.0) -> None:
        self.default = validate_variants(default)
        self._redis = redis_client.connect(url)
        self._cache = _Cached(cache_s)

    async def list(self) -> VariantList:
        cached = self._cache.fresh()
        if cached is not None:
            return cached
        try:
            data = await self._redis.get(self.KEY)
        except RedisError as error:
            if self._cache.value is not None:
                return list(self._cache.value)  # keep serving the last known split through an outage
            raise errors.Unavailable("variant store unavailable") from error
        return self._cache.update(_decode(data) if data else list(self.default))

    async def set(self, variants: VariantList) -> None:
        variants = validate_variants(variants)
        try:
            await self._redis.set(self.KEY, _encode(variants))
        except RedisError as error:
            raise errors.Unavailable("variant store unavailable") from error
        self._cache.update(variants)

    async def aclose(self) -> None:
        await self._redis.aclose()


def variant_store_from_settings(
    redis_url: str | None, data_dir: Path, default: VariantList, *, cache_s: float = 1.0
) -> VariantStore:
    """Redis when a URL is configured (several replicas), else SQLite in `data_dir/variants.db`."""
    if redis_url:
        return RedisVariantStore(redis_url, default, cache_s=cache_s)
    return SqliteVariantStore(data_dir / "variants.db", default, cache_s=cache_s)
