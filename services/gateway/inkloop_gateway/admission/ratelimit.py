"""Token buckets per API key and per tenant, in memory or in Redis (shared by gateway replicas).

A bucket holds up to `burst` tokens and refills at `rate` tokens per second. A request takes `cost`
tokens, or is refused with `ResourceExhausted` (→ RESOURCE_EXHAUSTED with RetryInfo) and takes
nothing. Three buckets guard each request (see `RateLimitPolicy`): requests per key, requests per
tenant, and compute per tenant, where compute = megapixels × steps × images.

The policy takes its buckets all-or-nothing (`acquire_many`): a request refused by the tenant's
cost bucket leaves nothing charged to its key and tenant request buckets. Refusals do not count, so
a client hammering at 10× its limit gets exactly its limit through and is not starved further.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from inkloop import errors
from inkloop_gateway import redis_client
from inkloop_gateway.admission.auth import Principal

if TYPE_CHECKING:
    from inkloop_gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Charge:
    """`cost` tokens from `bucket`, which refills at `rate`/s up to `burst`."""

    bucket: str
    cost: float
    rate: float
    burst: float
    #: Human-readable limit for the QuotaFailure detail, e.g. "10 requests/s per API key (burst 20)".
    quota: str = ""


class RateLimiter(Protocol):
    async def acquire(self, bucket: str, *, cost: float, rate: float, burst: float) -> None:
        """Takes `cost` tokens from `bucket` or raises `ResourceExhausted` and takes nothing."""
        ...

    async def acquire_many(self, charges: Sequence[Charge]) -> None:
        """Takes every charge, or none of them and raises `ResourceExhausted` for the longest wait."""
        ...

    async def aclose(self) -> None: ...


def _refused(charge: Charge, retry_after_s: float | None) -> errors.ResourceExhausted:
    if retry_after_s is None:
        # More than the bucket can ever hold: waiting does not help, so no RetryInfo.
        message = f"rate limit: this request costs {charge.cost:g}, more than {charge.bucket} can ever hold"
    else:
        message = f"rate limit exceeded for {charge.bucket}; retry in {retry_after_s:.3f} s"
    return errors.ResourceExhausted(message, retry_after_s=retry_after_s, subject=charge.bucket, quota=charge.quota)


def _check_charge(charge: Charge) -> None:
    if not (charge.rate > 0 and charge.burst > 0 and charge.cost >= 0):
        raise ValueError(f"bucket {charge.bucket}: rate and burst must be > 0 and cost >= 0, got {charge}")


def _worst(refusals: list[tuple[Charge, float | None]]) -> errors.ResourceExhausted:
    """The refusal to report: an impossible one first, else the one that frees up last."""
    charge, wait = max(refusals, key=lambda refusal: math.inf if refusal[1] is None else refusal[1])
    return _refused(charge, wait)


class MemoryRateLimiter:
    """Buckets in this process: for a single gateway. Safe across tasks and threads.

    Memory stays bounded by dropping idle buckets: a bucket idle long enough to have refilled
    completely is identical to a new one, so dropping it changes nothing. Buckets are kept in
    least-recently-used order and each call inspects the oldest few, so the sweep is O(1) per call.
    `max_buckets` is a hard cap beyond that; evicting a bucket that is not yet full hands its owner a
    fresh burst early, the price of bounded memory under a flood of distinct keys.
    """

    _SWEEP_PER_CALL = 4

    def __init__(self, *, max_buckets: int = 100_000) -> None:
        self._max_buckets = max_buckets
        # bucket -> (tokens, updated at, rate, burst); oldest use first
        self._buckets: OrderedDict[str, tuple[float, float, float, float]] = OrderedDict()
        self._lock = threading.Lock()  # no await inside: the whole check-and-take is one step

    def __len__(self) -> int:
        return len(self._buckets)

    async def acquire(self, bucket: str, *, cost: float, rate: float, burst: float) -> None:
        await self.acquire_many([Charge(bucket, cost, rate, burst)])

    async def acquire_many(self, charges: Sequence[Charge]) -> None:
        for charge in charges:
            _check_charge(charge)
        now = time.monotonic()
        with self._lock:
            levels = [self._level(charge, now) for charge in charges]
            refusals = [
                (charge, None if charge.cost > charge.burst else (charge.cost - level) / charge.rate)
                for charge, level in zip(charges, levels, strict=True)
                if level < charge.cost
            ]
            if refusals:
                raise _worst(refusals)
            for charge, level in zip(charges, levels, strict=True):
                self._buckets[charge.bucket] = (level - charge.cost, now, charge.rate, charge.burst)
                self._buckets.move_to_end(charge.bucket)
            self._sweep(now)

    async def aclose(self) -> None:
        pass

    def _level(self, charge: Charge, now: float) -> float:
        state = self._buckets.get(charge.bucket)
        if state is None:
            return charge.burst
        tokens, updated, _rate, _burst = state
        return min(charge.burst, tokens + (now - updated) * charge.rate)

    def _sweep(self, now: float) -> None:
        for _ in range(self._SWEEP_PER_CALL):
            if not self._buckets:
                return
            bucket, (tokens, updated, rate, burst) = next(iter(self._buckets.items()))
            if tokens + (now - updated) * rate < burst and len(self._buckets) <= self._max_buckets:
                return  # the oldest is still refilling, so every newer one is too (roughly)
            del self._buckets[bucket]


# Every bucket of a call, checked and taken in one atomic step on the server's clock, so replicas
# with skewed clocks agree. KEYS = buckets; ARGV = cost, rate, burst for each key in turn.
# Returns {} when taken, else a flat list of {key index, wait seconds as a string, "" = never}.
# Numbers are written with string.format: Lua's tostring keeps 14 digits, which would drop the
# microseconds of a Unix time. A key expires once it would have refilled to a full (= new) bucket.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local refusals = {}
for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local level = burst
  if state[1] then
    level = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
  end
  levels[i] = level
  if level < cost then
    table.insert(refusals, i)
    if cost > burst then
      table.insert(refusals, '')
    else
      table.insert(refusals, string.format('%.6f', (cost - level) / rate))
    end
  end
end
if #refusals > 0 then
  return refusals
end
for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local left = levels[i] - cost
  redis.call('HSET', key, 'tokens', string.format('%.9f', left), 'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', key, math.ceil((burst - left) / rate * 1000) + 1000)
end
return {}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every gateway replica using the same Redis.

    Needs one Redis primary (not Cluster: a policy's buckets would live in different slots). If
    Redis cannot be reached the request fails with UNAVAILABLE rather than going unlimited: failing
    closed keeps one broken dependency from turning into an unmetered GPU bill.
    """

    KEY_PREFIX = "inkloop:ratelimit:"

    def __init__(self, url: str) -> None:
        self._redis = redis_client.connect(url)
        self._script = self._redis.register_script(_ACQUIRE_LUA)

    async def acquire(self, bucket: str, *, cost: float, rate: float, burst: float) -> None:
        await self.acquire_many([Charge(bucket, cost, rate, burst)])

    async def acquire_many(self, charges: Sequence[Charge]) -> None:
        for charge in charges:
            _check_charge(charge)
        keys = [self.KEY_PREFIX + charge.bucket for charge in charges]
        args = [repr(float(value)) for charge in charges for value in (charge.cost, charge.rate, charge.burst)]
        try:
            reply = await self._script(keys=keys, args=args)
        except RedisError as error:
            raise errors.Unavailable("rate limiter unavailable") from error
        if reply:
            refusals: list[tuple[Charge, float | None]] = []
            for index, wait in zip(reply[::2], reply[1::2], strict=True):
                text = wait.decode() if isinstance(wait, bytes) else str(wait)
                refusals.append((charges[int(index) - 1], float(text) if text else None))
            raise _worst(refusals)

    async def aclose(self) -> None:
        await self._redis.aclose()


def limiter_from_url(redis_url: str | None) -> RateLimiter:
    """Redis when a URL is configured (several replicas), else this process's memory."""
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()


def request_cost(width: int, height: int, steps: int, num_images: int) -> float:
    """Compute a request asks for: megapixels × steps × images (1024² × 50 steps × 1 image ≈ 52)."""
    return width * height / 1_000_000 * steps * max(num_images, 1)


@dataclass(frozen=True)
class RateLimits:
    """Per-key and per-tenant budgets. Rates are per second; bursts are the bucket sizes."""

    key_requests_per_s: float = 10.0
    key_requests_burst: float = 20.0
    tenant_requests_per_s: float = 50.0
    tenant_requests_burst: float = 100.0
    #: Megapixel-steps per second, e.g. 100 ≈ two 1024² 50-step images a second.
    tenant_cost_per_s: float = 100.0
    #: At least the largest single request (2048² × 100 steps × 4 images ≈ 1678) or it never passes.
    tenant_cost_burst: float = 2000.0

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RateLimits:
        return cls(
            key_requests_per_s=settings.rate_key_requests_per_s,
            key_requests_burst=settings.rate_key_requests_burst,
            tenant_requests_per_s=settings.rate_tenant_requests_per_s,
            tenant_requests_burst=settings.rate_tenant_requests_burst,
            tenant_cost_per_s=settings.rate_tenant_cost_per_s,
            tenant_cost_burst=settings.rate_tenant_cost_burst,
        )


class RateLimitPolicy:
    """The three buckets of a request, taken together or not at all."""

    def __init__(self, limiter: RateLimiter, limits: RateLimits) -> None:
        self.limiter = limiter
        self.limits = limits

    async def check(self, principal: Principal, cost: float) -> None:
        """Admits one request of `cost` (see `request_cost`) or raises `ResourceExhausted`."""
        await self.limiter.acquire_many(self.charges(principal, cost))

    def charges(self, principal: Principal, cost: float) -> list[Charge]:
        limits = self.limits
        return [
            Charge(
                f"key:{principal.key_id}:requests",
                1.0,
                limits.key_requests_per_s,
                limits.key_requests_burst,
                f"{limits.key_requests_per_s:g} requests/s per API key (burst {limits.key_requests_burst:g})",
            ),
            Charge(
                f"tenant:{principal.tenant_id}:requests",
                1.0,
                limits.tenant_requests_per_s,
                limits.tenant_requests_burst,
                f"{limits.tenant_requests_per_s:g} requests/s per tenant (burst {limits.tenant_requests_burst:g})",
            ),
            Charge(
                f"tenant:{principal.tenant_id}:cost",
                cost,
                limits.tenant_cost_per_s,
                limits.tenant_cost_burst,
                f"{limits.tenant_cost_per_s:g} megapixel-steps/s per tenant (burst {limits.tenant_cost_burst:g})",
            ),
        ]
