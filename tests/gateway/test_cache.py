"""The result cache: keys that change with every input that decides the pixels, SQLite and Redis stores."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from PIL import Image

from inkloop.v1 import common_pb2
from inkloop_gateway.admission.validation import Extension, ValidatedTask
from inkloop_gateway.jobs.cache import (
    RedisResultCache,
    ResultCache,
    SqliteResultCache,
    cache_from_settings,
    cache_key,
)


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


TASK = ValidatedTask(
    kind=common_pb2.GENERATION_KIND_INPAINT,
    prompt="a red hat",
    negative_prompt="blurry",
    width=64,
    height=64,
    steps=20,
    true_cfg_scale=4.0,
    seed=None,
    num_images=1,
    output_format=common_pb2.IMAGE_FORMAT_PNG,
    image=png((1, 2, 3)),
    mask=png((255, 255, 255)),
    feather_px=0,
)
KEY = cache_key("control", "rev1", TASK, 7)


@pytest.mark.parametrize(
    "changed",
    [
        lambda: cache_key("candidate", "rev1", TASK, 7),
        lambda: cache_key("control", "rev2", TASK, 7),
        lambda: cache_key("control", "rev1", TASK, 8),
        lambda: cache_key("control", "rev1", replace(TASK, prompt="a blue hat"), 7),
        lambda: cache_key("control", "rev1", replace(TASK, negative_prompt=""), 7),
        lambda: cache_key("control", "rev1", replace(TASK, width=128), 7),
        lambda: cache_key("control", "rev1", replace(TASK, height=128), 7),
        lambda: cache_key("control", "rev1", replace(TASK, steps=21), 7),
        lambda: cache_key("control", "rev1", replace(TASK, true_cfg_scale=4.5), 7),
        lambda: cache_key("control", "rev1", replace(TASK, num_images=2), 7),
        lambda: cache_key("control", "rev1", replace(TASK, output_format=common_pb2.IMAGE_FORMAT_WEBP), 7),
        lambda: cache_key("control", "rev1", replace(TASK, image=png((1, 2, 4))), 7),
        lambda: cache_key("control", "rev1", replace(TASK, mask=png((255, 255, 254))), 7),
        lambda: cache_key("control", "rev1", replace(TASK, feather_px=4), 7),
        lambda: cache_key("control", "rev1", replace(TASK, kind=common_pb2.GENERATION_KIND_OUTPAINT), 7),
        lambda: cache_key("control", "rev1", replace(TASK, extension=Extension(16, 0, 0, 0)), 7),
    ],
    ids=[
        "variant",
        "revision",
        "seed",
        "prompt",
        "negative",
        "width",
        "height",
        "steps",
        "cfg",
        "images",
        "format",
        "image",
        "mask",
        "feather",
        "kind",
        "extension",
    ],
)
def test_the_key_changes_with_every_input(changed) -> None:
    assert changed() != KEY


@pytest.mark.parametrize("prompt", ["  a red hat ", "a  red\that", "a\u3000red hat", "ａ ｒｅｄ ｈａｔ", "a red\nhat"])
def test_the_key_ignores_whitespace_and_character_width(prompt: str) -> None:
    assert cache_key("control", "rev1", replace(TASK, prompt=prompt, negative_prompt=" ｂｌｕｒｒｙ"), 7) == KEY


def test_the_key_ignores_the_requests_own_seed_field() -> None:
    # The seed that counts is the one the job runs with (assigned when the request had none).
    assert cache_key("control", "rev1", replace(TASK, seed=99), 7) == KEY


def test_the_key_is_a_stable_sha256() -> None:
    assert len(KEY) == 64 and int(KEY, 16) >= 0
    assert cache_key("control", "rev1", TASK, 7) == KEY


@pytest.fixture(params=["sqlite", "redis"])
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResultCache]:
    made: ResultCache
    if request.param == "sqlite":
        made = SqliteResultCache(tmp_path / "cache.db", max_bytes=1 << 20, ttl_s=60)
    else:
        made = RedisResultCache(request.getfixturevalue("redis_url"), ttl_s=60, max_entry_bytes=1 << 20)
    yield made
    await made.aclose()


async def test_miss_then_hit(cache: ResultCache) -> None:
    result = common_pb2.GenerationResult(model_id="tiny", images=[common_pb2.Image(data=b"\x89PNG", seed=7)])
    assert await cache.get(KEY) is None
    await cache.put(KEY, result.SerializeToString())
    stored = await cache.get(KEY)
    assert stored is not None and common_pb2.GenerationResult.FromString(stored) == result


async def test_put_replaces(cache: ResultCache) -> None:
    await cache.put("k", b"one")
    await cache.put("k", b"two")
    assert await cache.get("k") == b"two"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_entries_expire_after_the_ttl(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cache: ResultCache
    if kind == "sqlite":
        cache = SqliteResultCache(tmp_path / "cache.db", max_bytes=1 << 20, ttl_s=0.2)
    else:
        cache = RedisResultCache(request.getfixturevalue("redis_url"), ttl_s=0.2, max_entry_bytes=1 << 20)
    try:
        await cache.put("k", b"value")
        assert await cache.get("k") == b"value"
        await asyncio.sleep(0.3)
        assert await cache.get("k") is None
    finally:
        await cache.aclose()


async def test_sqlite_evicts_the_least_recently_used_beyond_the_size_bound(tmp_path: Path) -> None:
    cache = SqliteResultCache(tmp_path / "cache.db", max_bytes=3_000, ttl_s=60)
    cache.TOUCH_GRANULARITY_S = 0.0  # exact LRU order for the test
    try:
        for name in ("a", "b", "c"):
            await cache.put(name, name.encode() * 1_000)
            await asyncio.sleep(0.01)
        assert await cache.get("a") is not None  # "a" is now the most recently used
        await asyncio.sleep(0.01)
        await cache.put("d", b"d" * 1_000)
        assert await cache.get("b") is None  # the least recently used went
        assert all([await cache.get(name) for name in ("a", "c", "d")])
        assert cache.total_bytes == 3_000
    finally:
        await cache.aclose()


async def test_sqlite_skips_entries_larger_than_the_whole_cache(tmp_path: Path) -> None:
    cache = SqliteResultCache(tmp_path / "cache.db", max_bytes=100, ttl_s=60)
    try:
        await cache.put("small", b"x" * 50)
        await cache.put("huge", b"x" * 101)
        assert await cache.get("huge") is None
        assert await cache.get("small") is not None
    finally:
        await cache.aclose()


async def test_sqlite_cache_survives_a_restart_with_its_size_accounted(tmp_path: Path) -> None:
    first = SqliteResultCache(tmp_path / "cache.db", max_bytes=1_000, ttl_s=60)
    await first.put("k", b"v" * 400)
    await first.aclose()
    second = SqliteResultCache(tmp_path / "cache.db", max_bytes=1_000, ttl_s=60)
    try:
        assert await second.get("k") == b"v" * 400
        assert second.total_bytes == 400
    finally:
        await second.aclose()


async def test_sqlite_cache_serves_concurrent_callers(tmp_path: Path) -> None:
    cache = SqliteResultCache(tmp_path / "cache.db", max_bytes=1 << 20, ttl_s=60)
    try:
        await asyncio.gather(*(cache.put(f"k{i}", bytes([i]) * 100) for i in range(50)))
        values = await asyncio.gather(*(cache.get(f"k{i}") for i in range(50)))
        assert values == [bytes([i]) * 100 for i in range(50)]
    finally:
        await cache.aclose()


async def test_redis_sets_a_ttl_and_skips_oversized_entries(redis_url: str) -> None:
    cache = RedisResultCache(redis_url, ttl_s=30, max_entry_bytes=10)
    try:
        await cache.put("k", b"small")
        await cache.put("big", b"x" * 11)
        assert await cache.get("big") is None
    finally:
        await cache.aclose()
    with redis.Redis.from_url(redis_url) as client:
        assert 29_000 < client.pttl(RedisResultCache.KEY_PREFIX + "k") <= 30_000


async def test_redis_outage_is_a_miss_not_an_error() -> None:
    cache = RedisResultCache("redis://127.0.0.1:1/0", ttl_s=30, max_entry_bytes=100)
    try:
        await cache.put("k", b"v")
        assert await cache.get("k") is None
    finally:
        await cache.aclose()


async def test_cache_from_settings_picks_the_backend(redis_url: str, tmp_path: Path) -> None:
    embedded = cache_from_settings(None, tmp_path, 1 << 20, 60)
    shared = cache_from_settings(redis_url, tmp_path, 1 << 20, 60)
    try:
        assert isinstance(embedded, SqliteResultCache) and (tmp_path / "result-cache.db").exists()
        assert isinstance(shared, RedisResultCache)
    finally:
        await embedded.aclose()
        await shared.aclose()
