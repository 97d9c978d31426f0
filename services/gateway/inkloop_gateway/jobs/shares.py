"""How a tenant's jobs queue: the class it may use and its weight in the fair share of that class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from inkloop_gateway.jobs.store import PRIORITY_RANK, Priority


@dataclass(frozen=True)
class QueueShares:
    #: Tenant -> weight (default 1): with the queue full, tenants are served in proportion.
    weights: Mapping[str, float] = field(default_factory=dict)
    #: Tenant -> the highest class its jobs may use: a tenant capped to batch never runs interactive.
    max_priority: Mapping[str, Priority] = field(default_factory=dict)

    def place(self, tenant_id: str, asked: Priority) -> tuple[Priority, float]:
        cap = self.max_priority.get(tenant_id, Priority.INTERACTIVE)
        priority = asked if PRIORITY_RANK[asked] >= PRIORITY_RANK[cap] else cap
        return priority, self.weights.get(tenant_id, 1.0)
