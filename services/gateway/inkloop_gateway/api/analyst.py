"""Analysts' queries on behalf of a key: the tenant scoped by the key, forwarded to analytics.

The analytics service trusts whatever `tenant_id` it is sent, so its port is for the gateway only;
every analyst (`inkloop analytics …`, the dashboard, any gRPC client of AnalyticsQueryService) comes
through here. One rule for all of them: an analyst or admin key, the key's own tenant when the request
names none, and another tenant only for an admin.
"""

from __future__ import annotations

from typing import Protocol

import grpc
from google.protobuf.message import Message

from inkloop import errors
from inkloop.rpc.client import open_channel
from inkloop.rpc.status import domain_error
from inkloop.v1 import analytics_pb2_grpc
from inkloop_gateway.admission.auth import Principal
from inkloop_gateway.admission.keys import Role

#: The queries an analyst may run: AnalyticsQueryService's methods, each AnalyticsService's namesake.
QUERIES = (
    "Funnel",
    "Discrepancy",
    "PromptInsights",
    "FeatureAdoption",
    "CompareVariants",
    "Outcomes",
    "RetryLoops",
    "ListAlertRules",
    "ListAlerts",
)

_DEFAULT_TIMEOUT_S = 30.0


class TenantScoped(Protocol):
    tenant_id: str


def scope_tenant(principal: Principal, requested: str) -> str:
    """The tenant a query of `principal` counts: its own unless an admin names another."""
    if not requested or requested == principal.tenant_id:
        return principal.tenant_id
    if principal.role != Role.ADMIN:
        raise errors.PermissionDenied(
            f"this key may query only its own tenant {principal.tenant_id!r}; another tenant needs an admin key"
        )
    return requested


class AnalyticsClient:
    """The gateway's channel to analytics, opened on first use (inside the event loop)."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._target = target
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> analytics_pb2_grpc.AnalyticsServiceStub:
        if self._channel is None:
            self._channel = open_channel(self._target, credentials=self._credentials)
        return analytics_pb2_grpc.AnalyticsServiceStub(self._channel)

    async def query(
        self, principal: Principal, method: str, request: Message, *, timeout_s: float | None = None
    ) -> Message:
        """Runs one of `QUERIES` for `principal`; upstream errors come back as domain errors."""
        if method not in QUERIES:
            raise errors.NotFound(f"no analytics query named {method!r}")
        if not principal.role.allows(Role.ANALYST):
            raise errors.PermissionDenied(
                f"analytics queries need the analyst role; the key has {principal.role.value}"
            )
        if "tenant_id" in request.DESCRIPTOR.fields_by_name:
            scoped: TenantScoped = request  # type: ignore[assignment]
            scoped.tenant_id = scope_tenant(principal, scoped.tenant_id)
        call = getattr(self.stub, method)
        try:
            reply: Message = await call(request, timeout=timeout_s or _DEFAULT_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise domain_error(error, "analytics") from None
        return reply

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
