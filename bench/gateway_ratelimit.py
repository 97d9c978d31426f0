"""Behaviour at 10x the rate limit: the accepted rate stays at the limit, every refusal is
RESOURCE_EXHAUSTED, and memory stays flat.

    .venv/bin/python bench/gateway_ratelimit.py [--seconds 5] [--limit 20] [--redis-url redis://...]

Drives `RateLimitPolicy` on the in-memory limiter and on Redis (a private redis-server from the test
harness unless --redis-url is given), first with one API key at 10x its request limit, then with a
churn of distinct keys (each new key's bucket must be forgotten once idle, or memory would grow).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from inkloop import errors
from inkloop_gateway.admission.auth import Principal
from inkloop_gateway.admission.keys import Role
from inkloop_gateway.admission.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    RateLimits,
    RedisRateLimiter,
)

TICK_S = 0.01
TESTS_DIR = str(Path(__file__).resolve().parent.parent / "tests")  # for the test harness's redis-server


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(policy: RateLimitPolicy, principals: list[Principal], rate: float, seconds: float) -> dict:
    """Calls `policy.check` at `rate` per second for `seconds`, cycling through `principals`."""
    outcomes: Counter[str] = Counter()
    accepted_after_first_s = 0
    per_tick = rate * TICK_S
    started = time.monotonic()
    sent, tick = 0, 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(per_tick * (tick + 1)) - int(per_tick * tick)
        tick += 1
        batch = [principals[(sent + i) % len(principals)] for i in range(due)]
        sent += due
        results = await asyncio.gather(*(policy.check(p, 1.0) for p in batch), return_exceptions=True)
        for result in results:
            if result is None:
                outcomes["accepted"] += 1
                accepted_after_first_s += elapsed >= 1.0
            elif isinstance(result, errors.ResourceExhausted):
                outcomes["resource_exhausted"] += 1
            else:
                outcomes[f"other:{type(result).__name__}"] += 1
        await asyncio.sleep(max(0.0, started + tick * TICK_S - time.monotonic()))
    duration = time.monotonic() - started
    return {
        "sent": sent,
        "duration": duration,
        "outcomes": outcomes,
        "steady_rate": accepted_after_first_s / max(duration - 1.0, 1e-9),
    }


async def run_backend(name: str, limiter: RateLimiter, limit: float, seconds: float) -> None:
    limits = RateLimits(
        key_requests_per_s=limit,
        key_requests_burst=limit,
        tenant_requests_per_s=limit * 1000,
        tenant_requests_burst=limit * 1000,
        tenant_cost_per_s=limit * 1000,
        tenant_cost_burst=limit * 1000,
    )
    policy = RateLimitPolicy(limiter, limits)
    one = [Principal("bench-key", "bench", Role.USER)]
    churn = [Principal(f"key-{i}", f"tenant-{i % 100}", Role.USER) for i in range(200_000)]

    rss_before = rss_mib()
    single = await drive(policy, one, rate=limit * 10, seconds=seconds)
    rss_mid = rss_mib()
    many = await drive(policy, churn, rate=4_000, seconds=seconds)
    rss_after = rss_mib()

    outcomes = single["outcomes"]
    others = sum(v for k, v in outcomes.items() if k.startswith("other")) + sum(
        v for k, v in many["outcomes"].items() if k.startswith("other")
    )
    print(
        f"[{name}] one key at 10x: limit {limit:g}/s (burst {limit:g}), "
        f"offered {single['sent'] / single['duration']:.0f}/s"
    )
    print(
        f"  accepted {outcomes['accepted']} in {single['duration']:.2f} s "
        f"(= {outcomes['accepted'] / single['duration']:.1f}/s incl. the burst; "
        f"{single['steady_rate']:.1f}/s after the first second)"
    )
    print(f"  refused {outcomes['resource_exhausted']} with RESOURCE_EXHAUSTED; other errors: {others}")
    print(
        f"  key churn: {many['sent']} checks over {len(churn):,} distinct keys at "
        f"{many['sent'] / many['duration']:.0f}/s, accepted {many['outcomes']['accepted']}"
    )
    if isinstance(limiter, MemoryRateLimiter):
        print(f"  buckets held in memory after the churn: {len(limiter)}")
    if isinstance(limiter, RedisRateLimiter):
        keys_now = await limiter._redis.dbsize()
        await asyncio.sleep(1.5)  # buckets expire once they would be full again (+1 s)
        print(f"  bucket keys in Redis after the churn: {keys_now}, 1.5 s later: {await limiter._redis.dbsize()}")
    print(f"  RSS MiB: before {rss_before:.1f}, after 10x {rss_mid:.1f}, after churn {rss_after:.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--limit", type=float, default=20.0, help="requests/s per key")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()

    await run_backend("memory", MemoryRateLimiter(), args.limit, args.seconds)
    if args.redis_url:
        limiter = RedisRateLimiter(args.redis_url)
        await run_backend("redis", limiter, args.limit, args.seconds)
        await limiter.aclose()
        return
    sys.path.insert(0, TESTS_DIR)
    from harness.redis import RedisServer

    with tempfile.TemporaryDirectory() as directory, RedisServer(Path(directory)) as server:
        limiter = RedisRateLimiter(server.url)
        await run_backend(f"redis {server.url}", limiter, args.limit, args.seconds)
        await limiter.aclose()


if __name__ == "__main__":
    asyncio.run(main())
