"""The change relay: the Redis job store's change notifications, handed to this replica's hub and dispatcher.

The store's scripts publish `<change> <job id>` on `inkloop:changes` atomically with each change (see
`jobs_redis`), and the replica running a job announces its steps there. One relay task per replica
listens and wakes the job's watchers (every watcher when queue positions moved; with the announced
step for a step), the claim loop when a job was queued, and the worker of a job whose cancellation
was requested elsewhere. A replica hears its own changes too: that costs a redundant
wake-up at most, and covers the few changes made without a local wake-up (its recovery's requeues).

Pub/sub is at-most-once, so while the relay is not subscribed changes are missed: every (re)subscription
wakes all watchers and the claim loop to re-read the store, and while no subscription is held they poll
every `poll_interval_s` instead of the longer `notified_poll_interval_s` (see `Hub.notified`). The relay
reconnects with capped exponential backoff and never raises into the gateway; a silent connection (no
answer to a ping) counts as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Protocol

import redis.asyncio as aioredis

from inkloop_gateway import metrics
from inkloop_gateway.jobs.store_redis import CHANGES, PREFIX
from inkloop_gateway.jobs.watch import Hub

log = logging.getLogger(__name__)

#: Changes that put a job in the queue (the claim loop looks for it) ...
_QUEUED = frozenset({"submitted", "requeued"})
#: ... and those that move other queued jobs' positions (their watchers re-read them).
_POSITIONS_MOVED = frozenset({"requeued", "dequeued", "waiting"})
# The job runs from the start again: steps announced so far are stale.
_RESTARTED = frozenset({"requeued", "waiting"})


class Claims(Protocol):
    """What the relay needs of the dispatcher."""

    def wake(self) -> None: ...

    def cancel_local(self, job_id: str) -> bool: ...


class ChangeRelay:
    def __init__(
        self,
        url: str,
        hub: Hub,
        claims: Claims,
        *,
        notified_poll_interval_s: float,
        prefix: str = PREFIX,
        ping_interval_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.url = url
        self.hub = hub
        self.claims = claims
        self.channel = f"{prefix}{CHANGES}"
        self.notified_poll_interval_s = notified_poll_interval_s
        self.ping_interval_s = ping_interval_s
        self.backoff_s = backoff_s
        #: Whether a subscription is held, so that notifications flow.
        self.subscribed = False
        #: Subscriptions made so far (reconnects included).
        self.subscriptions = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-relay")

    async def stop(self) -> None:
        if self._task is not None:
            # redis-py may swallow a cancellation while it closes a connection: the flag ends the loop then,
            # and the wait is bounded either way.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5.0)
            self._task = None
        self._set_subscribed(False)

    async def _run(self) -> None:
        first_s, most_s = self.backoff_s
        delay_s = first_s
        while not self._stopping:
            try:
                await self._listen()
            except Exception as error:  # Redis down, connection killed, or a bug: never the gateway's end
                if self.subscribed:
                    log.warning("job change notifications lost; polling until they resume: %r", error)
                else:
                    log.debug("subscribing to job change notifications failed: %r", error)
            if self.subscribed:
                delay_s = first_s  # it was up: the first retry comes quickly
            self._set_subscribed(False)
            # Jitter: replicas that lost Redis together do not all come back in the same instant.
            await asyncio.sleep(delay_s * random.uniform(0.5, 1.0))
            delay_s = min(delay_s * 2, most_s)

    async def _listen(self) -> None:
        """Relays notifications until the connection fails (raises) or stays silent past a ping."""
        async with aioredis.Redis.from_url(self.url) as client, client.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=self.ping_interval_s)
                if message is None:
                    if pinged:
                        raise ConnectionError(f"no answer from Redis for {2 * self.ping_interval_s:g} s")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                if message["type"] == "subscribe":
                    # Also after redis-py reconnected on its own: whatever happened meanwhile was missed.
                    self.subscriptions += 1
                    log.info("subscribed to job change notifications", extra={"channel": self.channel})
                    self._set_subscribed(True)
                elif message["type"] == "message":
                    self._relay(message["data"])

    def _relay(self, data: bytes) -> None:
        change, _, job_id = data.decode(errors="replace").partition(" ")  # a stray publish must not kill the relay
        if change == "step":
            job_id, _, progress = job_id.partition(" ")
            step, _, total = progress.partition("/")
            if step.isdigit() and total.isdigit():
                self.hub.announced(job_id, int(step), int(total))
            return
        if change in _RESTARTED:
            self.hub.requeued(job_id)
        if change in _POSITIONS_MOVED:
            self.hub.publish_all()
        else:
            self.hub.publish(job_id)
        if change in _QUEUED:
            self.claims.wake()
        elif change == "cancelling":
            self.claims.cancel_local(job_id)

    def _set_subscribed(self, subscribed: bool) -> None:
        """Switches watchers and the claim loop between the notified and the plain poll interval, and has them
        re-read the store once: on subscribing, that catches up with what was missed before."""
        if not subscribed and not self.subscribed:
            return  # still down: they poll at the plain interval already
        self.subscribed = subscribed
        metrics.CHANGE_RELAY_SUBSCRIBED.set(1 if subscribed else 0)
        self.hub.notified(self.notified_poll_interval_s if subscribed else None)
        self.claims.wake()
