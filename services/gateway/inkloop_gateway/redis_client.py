"""The one way the gateway opens Redis: bounded waits, and a retry across a server restart.

Every store on Redis (jobs, result cache, rate limits, variants) shares these rules. A Redis that
stops answering (not just refusing) must fail calls within seconds, never hang them; after a
restart every pooled connection is dead, so a command that meets one is sent again on a new
connection. The scripts and commands the stores send are safe to send twice: their checks see the
first run's change.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

#: What redis-py raises while the server is unreachable, restarting or loading its data.
OUTAGE_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError)
OUTAGE_MESSAGE = "the gateway's shared store (Redis) is unreachable or restarting; try again shortly"

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0


def connect(url: str, *, command_timeout_s: float = COMMAND_TIMEOUT_S) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=min(CONNECT_TIMEOUT_S, command_timeout_s),
        socket_timeout=command_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
    )
