"""Sends due webhook deliveries: signed as Standard Webhooks says, retried on a schedule for about a day.

An attempt succeeds on a 2xx answer. Anything else (another status, a redirect, which is never
followed, a timeout, a refused target) is recorded with what went wrong and tried again after the
next interval of `retry_schedule_s` (Standard Webhooks' own: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h);
after the last the delivery is FAILED. The body is the same on every attempt (only the timestamp and
so the signature change); a receiver deduplicates by `webhook-id`. Reading the answer stops after
`MAX_RESPONSE_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks.webhooks import Webhook

from inkloop import errors, tracing
from inkloop_gateway.metrics import WEBHOOK_ATTEMPTS
from inkloop_gateway.webhooks.endpoints import EndpointBook
from inkloop_gateway.webhooks.outbox import DELIVERED, FAILED, PENDING, SKIPPED, Attempt, Delivery, Outbox
from inkloop_gateway.webhooks.targets import PinnedResolver, RefusedTarget, Targets

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
#: A delivery whose job does not exist this long after it was planned: the submission failed.
NEVER_CREATED_S = 120.0


@dataclass(frozen=True)
class Outcome:
    """What a delivery reports: the job's end (`event_type`, e.g. "job.succeeded") and its data."""

    event_type: str
    ended_at: float
    data: dict[str, Any]
    #: The job's trace: a delivery continues it, so a receiver's spans join the job's trace.
    traceparent: str = ""


#: job id, tenant -> the job's outcome, None while it runs; NotFound when there is no such job.
DescribeJob = Callable[[str, str], Awaitable[Outcome | None]]


@dataclass(frozen=True)
class DeliverySettings:
    retry_schedule_s: Sequence[float] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    poll_interval_s: float = 0.5
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    lease_s: float = 60.0
    batch: int = 16
    owner: str = ""


class WebhookDeliverer:
    def __init__(
        self,
        outbox: Outbox,
        endpoints: EndpointBook,
        describe: DescribeJob,
        targets: Targets,
        settings: DeliverySettings,
    ) -> None:
        self.outbox = outbox
        self.endpoints = endpoints
        self.describe = describe
        self.targets = targets
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                due = await self.outbox.claim(
                    time.time(), self.settings.owner, self.settings.lease_s, self.settings.batch
                )
                await asyncio.gather(*(self._handle(delivery) for delivery in due))
            except Exception:  # the store is down, say: the schedule goes on
                log.warning("webhook round failed", exc_info=True)
                due = []
            if len(due) < self.settings.batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)

    async def _handle(self, delivery: Delivery) -> None:
        now = time.time()
        try:
            outcome = await self.describe(delivery.job_id, delivery.tenant_id)
        except errors.NotFound:
            if now - delivery.created_at > NEVER_CREATED_S:
                await self.outbox.save(replace(delivery, state=SKIPPED))
            else:
                await self.outbox.save(replace(delivery, next_attempt_at=now + 1.0))
            return
        if outcome is None:  # still running: look again shortly, no attempt counted
            await self.outbox.save(replace(delivery, next_attempt_at=now + 1.0))
            return
        secret = await self._secret(delivery, outcome.event_type)
        if secret is None:  # the endpoint was removed, or does not want this outcome
            await self.outbox.save(replace(delivery, state=SKIPPED, event_type=outcome.event_type))
            WEBHOOK_ATTEMPTS.labels("skipped").inc()
            return
        attempt = await self._attempt(delivery, outcome, secret)
        if 200 <= attempt.http_status < 300:
            state, next_at = DELIVERED, 0.0
        elif len(delivery.attempts) < len(self.settings.retry_schedule_s):
            state, next_at = PENDING, time.time() + self.settings.retry_schedule_s[len(delivery.attempts)]
        else:
            state, next_at = FAILED, 0.0
        WEBHOOK_ATTEMPTS.labels("delivered" if state == DELIVERED else "failed").inc()
        await self.outbox.save(delivery.tried(attempt, state, next_at, outcome.event_type))

    async def _secret(self, delivery: Delivery, event_type: str) -> str | None:
        """The signing secret, or None when the delivery is not to be made."""
        if not delivery.endpoint_id:
            return await self.endpoints.job_secret(delivery.tenant_id)
        endpoint = await self.endpoints.get(delivery.tenant_id, delivery.endpoint_id)
        return endpoint.secret if endpoint is not None and endpoint.wants(event_type) else None

    async def _attempt(self, delivery: Delivery, outcome: Outcome, secret: str) -> Attempt:
        started = time.time()
        body = json.dumps(
            {
                "type": outcome.event_type,
                "timestamp": datetime.fromtimestamp(outcome.ended_at, UTC).isoformat().replace("+00:00", "Z"),
                "data": outcome.data,
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        moment = datetime.fromtimestamp(int(started), UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "inkloop-webhooks/1",
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(int(started)),
            "webhook-signature": Webhook(secret).sign(delivery.delivery_id, moment, body),
        }
        tracing.inject_headers(headers, outcome.traceparent)
        try:
            addresses = await self.targets.resolve(delivery.url)
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s, connect=self.settings.connect_timeout_s)
            connector = aiohttp.TCPConnector(resolver=PinnedResolver(addresses), force_close=True)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.post(delivery.url, data=body.encode(), headers=headers, allow_redirects=False) as reply,
            ):
                await reply.content.read(MAX_RESPONSE_BYTES)
                status = reply.status
        except RefusedTarget as refused:
            return Attempt(started, 0, f"refused: {refused}", time.time() - started)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return Attempt(started, 0, f"{type(error).__name__}: {error}"[:300], time.time() - started)
        return Attempt(started, status, "" if 200 <= status < 300 else f"HTTP {status}", time.time() - started)
