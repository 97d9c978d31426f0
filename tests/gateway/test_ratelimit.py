"""Token buckets in memory and in a real redis-server: limits, refill, retry-after, atomicity, replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis

from inkloop import errors
from inkloop_gateway.admission.auth import Principal
from inkloop_gateway.admission.keys import Role
from inkloop_gateway.admission.ratelimit import (
    Charge,
    MemoryRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    RateLimits,
    RedisRateLimiter,
    limiter_from_url,
    request_cost,
)

SLOW = 0.001  # tokens/s: no measurable refill during a test


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        made: RateLimiter = MemoryRateLimiter()
    else:
        made = RedisRateLimiter(request.getfixturevalue("redis_url"))
    yield made
    await made.aclose()


async def _refused(limiter: RateLimiter, bucket: str, **kwargs: float) -> errors.ResourceExhausted:
    with pytest.raises(errors.ResourceExhausted) as caught:
        await limiter.acquire(bucket, **kwargs)  # type: ignore[arg-type]
    return caught.value


async def test_burst_passes_then_the_next_is_refused(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.acquire("b", cost=1, rate=SLOW, burst=3)
    error = await _refused(limiter, "b", cost=1, rate=SLOW, burst=3)
    assert error.subject == "b"
    assert error.retry_after_s is not None and error.retry_after_s > 0


async def test_a_refusal_takes_nothing(limiter: RateLimiter) -> None:
    await limiter.acquire("b", cost=3, rate=SLOW, burst=5)
    await _refused(limiter, "b", cost=3, rate=SLOW, burst=5)  # 2 left: refused ...
    await limiter.acquire("b", cost=2, rate=SLOW, burst=5)  # ... and the 2 are still there


async def test_retry_after_says_when_the_tokens_are_back(limiter: RateLimiter) -> None:
    await limiter.acquire("b", cost=2, rate=10, burst=2)
    error = await _refused(limiter, "b", cost=1, rate=10, burst=2)
    assert error.retry_after_s == pytest.approx(0.1, abs=0.03)
    await asyncio.sleep(error.retry_after_s + 0.02)
    await limiter.acquire("b", cost=1, rate=10, burst=2)


async def test_buckets_refill_at_their_rate_up_to_the_burst(limiter: RateLimiter) -> None:
    await limiter.acquire("b", cost=4, rate=20, burst=4)
    await asyncio.sleep(0.11)  # ~2.2 tokens back
    await limiter.acquire("b", cost=2, rate=20, burst=4)
    await _refused(limiter, "b", cost=2, rate=20, burst=4)
    await asyncio.sleep(0.5)  # would be 10 tokens, capped at 4
    await limiter.acquire("b", cost=4, rate=20, burst=4)
    await _refused(limiter, "b", cost=1, rate=20, burst=4)


async def test_concurrent_acquires_admit_exactly_the_burst(limiter: RateLimiter) -> None:
    outcomes = await asyncio.gather(
        *(limiter.acquire("b", cost=1, rate=SLOW, burst=10) for _ in range(60)), return_exceptions=True
    )
    assert sum(outcome is None for outcome in outcomes) == 10
    assert all(isinstance(o, errors.ResourceExhausted) for o in outcomes if o is not None)


async def test_a_cost_above_the_burst_is_refused_without_retry_info(limiter: RateLimiter) -> None:
    error = await _refused(limiter, "b", cost=11, rate=5, burst=10)
    assert error.retry_after_s is None
    await limiter.acquire("b", cost=10, rate=5, burst=10)  # nothing was taken


async def test_acquire_many_is_all_or_nothing(limiter: RateLimiter) -> None:
    await limiter.acquire("second", cost=1, rate=SLOW, burst=1)
    with pytest.raises(errors.ResourceExhausted) as caught:
        await limiter.acquire_many(
            [Charge("first", 1, SLOW, 1, quota="one"), Charge("second", 1, SLOW, 1, quota="two")]
        )
    assert (caught.value.subject, caught.value.quota) == ("second", "two")
    await limiter.acquire("first", cost=1, rate=SLOW, burst=1)  # "first" was not charged


async def test_refusal_reports_the_bucket_that_frees_up_last(limiter: RateLimiter) -> None:
    await limiter.acquire_many([Charge("fast", 1, 100, 1), Charge("slow", 1, 1, 1)])
    with pytest.raises(errors.ResourceExhausted) as caught:
        await limiter.acquire_many([Charge("fast", 1, 100, 1), Charge("slow", 1, 1, 1)])
    assert caught.value.subject == "slow"
    assert caught.value.retry_after_s == pytest.approx(1.0, abs=0.05)


async def test_two_redis_limiters_share_a_bucket_like_two_replicas(redis_url: str) -> None:
    replica_a, replica_b = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    try:
        outcomes = await asyncio.gather(
            *(
                (replica_a if i % 2 else replica_b).acquire("tenant:acme", cost=1, rate=SLOW, burst=7)
                for i in range(30)
            ),
            return_exceptions=True,
        )
        assert sum(outcome is None for outcome in outcomes) == 7
        await _refused(replica_a, "tenant:acme", cost=1, rate=SLOW, burst=7)
        await _refused(replica_b, "tenant:acme", cost=1, rate=SLOW, burst=7)
    finally:
        await replica_a.aclose()
        await replica_b.aclose()


async def test_redis_buckets_expire_once_they_would_be_full_again(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    try:
        await limiter.acquire("b", cost=1, rate=2, burst=10)
    finally:
        await limiter.aclose()
    with redis.Redis.from_url(redis_url) as client:
        ttl_ms = client.pttl(RedisRateLimiter.KEY_PREFIX + "b")
    assert 0 < ttl_ms <= 1_500  # 0.5 s to refill one token, plus a second of slack


async def test_redis_down_is_unavailable_not_unlimited() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(errors.Unavailable):
            await limiter.acquire("b", cost=1, rate=1, burst=1)
    finally:
        await limiter.aclose()


async def test_memory_limiter_forgets_idle_buckets() -> None:
    limiter = MemoryRateLimiter()
    for i in range(500):
        await limiter.acquire(f"user-{i}", cost=1, rate=1000, burst=2)
    await asyncio.sleep(0.01)  # every bucket is full again: indistinguishable from a new one
    for i in range(200):
        await limiter.acquire(f"other-{i}", cost=1, rate=1000, burst=2)
    assert len(limiter) < 250


async def test_memory_limiter_has_a_hard_cap() -> None:
    limiter = MemoryRateLimiter(max_buckets=100)
    for i in range(1_000):
        await limiter.acquire(f"user-{i}", cost=1, rate=SLOW, burst=2)
    assert len(limiter) <= 101


def test_request_cost_is_megapixels_times_steps_times_images() -> None:
    assert request_cost(1000, 1000, 50, 2) == pytest.approx(100.0)
    assert request_cost(1024, 1024, 50, 0) == pytest.approx(1.048576 * 50)  # 0 images = 1
    assert request_cost(2048, 2048, 100, 4) < RateLimits().tenant_cost_burst


def test_limiter_from_url_picks_the_backend(redis_url: str) -> None:
    assert isinstance(limiter_from_url(None), MemoryRateLimiter)
    assert isinstance(limiter_from_url(""), MemoryRateLimiter)
    assert isinstance(limiter_from_url(redis_url), RedisRateLimiter)


LIMITS = RateLimits(
    key_requests_per_s=SLOW,
    key_requests_burst=3,
    tenant_requests_per_s=SLOW,
    tenant_requests_burst=5,
    tenant_cost_per_s=SLOW,
    tenant_cost_burst=100,
)


async def test_policy_limits_each_key_and_the_tenant(limiter: RateLimiter) -> None:
    policy = RateLimitPolicy(limiter, LIMITS)
    alice, bob, carol = (Principal(k, "acme", Role.USER) for k in ("alice", "bob", "carol"))
    for _ in range(3):
        await policy.check(alice, 1)
    with pytest.raises(errors.ResourceExhausted) as caught:
        await policy.check(alice, 1)
    assert caught.value.subject == "key:alice:requests"
    assert "per API key" in caught.value.quota
    await policy.check(bob, 1)
    await policy.check(bob, 1)  # the tenant's 5 requests are used up now
    with pytest.raises(errors.ResourceExhausted) as caught:
        await policy.check(carol, 1)
    assert caught.value.subject == "tenant:acme:requests"
    await policy.check(Principal("dave", "other", Role.USER), 1)  # other tenants are not affected


async def test_policy_refused_on_cost_charges_no_request_bucket(limiter: RateLimiter) -> None:
    policy = RateLimitPolicy(limiter, LIMITS)
    alice = Principal("alice", "acme", Role.USER)
    await policy.check(alice, 90)
    for _ in range(5):  # more attempts than the key's burst of 3: refusals never charge it
        with pytest.raises(errors.ResourceExhausted) as caught:
            await policy.check(alice, 20)
        assert caught.value.subject == "tenant:acme:cost"
    await policy.check(alice, 10)
    await policy.check(alice, 0)
    with pytest.raises(errors.ResourceExhausted):
        await policy.check(alice, 0)  # 3 admitted requests: the key's burst


def test_rate_limits_from_settings() -> None:
    from inkloop_gateway.settings import GatewaySettings

    settings = GatewaySettings(rate_key_requests_per_s=2, rate_tenant_cost_burst=5000)
    limits = RateLimits.from_settings(settings)
    assert (limits.key_requests_per_s, limits.tenant_cost_burst) == (2, 5000)


async def test_memory_limiter_stays_fast() -> None:
    limiter, started = MemoryRateLimiter(), time.perf_counter()
    for i in range(10_000):
        await limiter.acquire(f"k{i % 100}", cost=1, rate=1e9, burst=1e9)
    assert time.perf_counter() - started < 2.0
