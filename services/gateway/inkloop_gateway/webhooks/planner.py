"""Plans a job's deliveries when it is submitted: one for its own URL, one per registered endpoint."""

from __future__ import annotations

import time

from inkloop_gateway.webhooks.endpoints import EndpointBook
from inkloop_gateway.webhooks.outbox import Delivery, Outbox
from inkloop_gateway.webhooks.targets import Targets


class WebhookPlanner:
    def __init__(self, outbox: Outbox, endpoints: EndpointBook, targets: Targets) -> None:
        self.outbox = outbox
        self.endpoints = endpoints
        self.targets = targets

    def check(self, url: str) -> None:
        """INVALID_ARGUMENT naming `webhook_url` for a URL the gateway would never call."""
        if url:
            self.targets.check_url(url, "webhook_url")

    async def plan(self, tenant_id: str, job_id: str, url: str) -> None:
        now = time.time()
        deliveries = [Delivery(f"msg_{job_id}_job", tenant_id, job_id, "", url, now, now)] if url else []
        deliveries += [
            Delivery(
                f"msg_{job_id}_{endpoint.endpoint_id}", tenant_id, job_id, endpoint.endpoint_id, endpoint.url, now, now
            )
            for endpoint in await self.endpoints.list(tenant_id)
        ]
        if deliveries:
            await self.outbox.add(deliveries)
