"""When a failed call is tried again: which statuses, after how long, and within which deadline.

Only `UNAVAILABLE` (the gateway is down, restarting or draining) and `RESOURCE_EXHAUSTED` (a rate
limit or a full queue) are retried. A status with a `google.rpc.RetryInfo` is tried again no sooner
than its delay (plus up to `jitter` of it, so refused clients do not all return at once); without one
the wait grows exponentially from `initial_backoff_s` up to `max_backoff_s`, ±`jitter`. A retry that
could not start before the call's deadline is not made: the last error is raised.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

RETRYABLE_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first try (1 = never retry)."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delay_s(self, attempt: int, code: str, retry_info_s: float | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1` after attempt `attempt` ended with `code`, or
        None when it is not tried again."""
        if attempt >= self.max_attempts or code not in RETRYABLE_CODES:
            return None
        if retry_info_s is not None:
            return max(retry_info_s, 0.0) * (1 + random.uniform(0, self.jitter))
        backoff = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return backoff * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class Retry:
    """One retry about to happen, as `on_retry` callbacks see it."""

    #: The attempt that failed (1 = the first).
    attempt: int
    code: str
    message: str
    #: How long the client waits before the next attempt.
    delay_s: float
    #: The server's RetryInfo delay, when it sent one.
    retry_info_s: float | None


OnRetry = Callable[[Retry], None]


class Deadline:
    """The end of a call, retries included; None = no deadline."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"deadline_s must be positive, got {seconds}")
        self._at = None if seconds is None else time.monotonic() + seconds

    def remaining_s(self) -> float | None:
        """Seconds left (at least 0), or None without a deadline: the timeout of the next attempt."""
        return None if self._at is None else max(self._at - time.monotonic(), 0.0)

    def allows(self, delay_s: float) -> bool:
        """True when an attempt after waiting `delay_s` would still start before the deadline."""
        return self._at is None or time.monotonic() + delay_s < self._at
