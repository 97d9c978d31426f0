"""Analysts' queries on behalf of a key: the tenant scoped by the key, forwarded to analytics.

The analytics service trusts whatever `tenant_id` it is sent, so its port is for the gateway only;
every analyst (`inkloop analytics …`, the dashboard, any gRPC client of AnalyticsQueryService) comes
through here. One rule for all of them: an analyst or admin key, the key's own tenant when the request
names none, and another tenant only for an admin.

Analytics knows templates and experiments only as ids in events; their definitions are the gateway's.
So a RecommendTemplates request without candidates gets the tenant's templates (and the answer their
names), and an ExperimentResults request naming only an experiment gets its arms, goals, window and
running time from the tenant's experiment book.
"""

from __future__ import annotations

import time
from typing import Protocol, cast

import grpc
from google.protobuf.message import Message

from inkloop import errors
from inkloop.rpc.client import open_channel
from inkloop.rpc.status import domain_error
from inkloop.v1 import analytics_pb2, analytics_pb2_grpc
from inkloop_gateway.admission.auth import Principal
from inkloop_gateway.admission.keys import Role
from inkloop_gateway.api.protocol import timestamp
from inkloop_gateway.nudges.experiments import ExperimentBook
from inkloop_gateway.nudges.templates import TemplateBook

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
    "RecommendTemplates",
    "ExperimentResults",
    "FunnelCorrelation",
)

_DEFAULT_TIMEOUT_S = 30.0
#: Template records count over this much history when a request names no range.
RECOMMENDATION_HISTORY_S = 30 * 86_400


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

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        templates: TemplateBook,
        experiments: ExperimentBook,
    ) -> None:
        self._target = target
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self.templates = templates
        self.experiments = experiments

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
        if isinstance(request, analytics_pb2.RecommendTemplatesRequest):
            return await self.recommend_templates(request, timeout_s=timeout_s)
        if isinstance(request, analytics_pb2.ExperimentResultsRequest):
            await self._complete_experiment(request)
        return await self._call(method, request, timeout_s)

    async def recommend_templates(
        self, request: analytics_pb2.RecommendTemplatesRequest, *, timeout_s: float | None = None
    ) -> analytics_pb2.RecommendTemplatesResponse:
        """Ranks `request.tenant_id`'s templates (the caller has scoped the tenant), names filled in."""
        known = {template.id: template for template in await self.templates.list(request.tenant_id)}
        if not request.template_ids:
            language = request.language_class
            request.template_ids.extend(
                template.id for template in known.values() if not language or template.language_class == language
            )
        if not request.HasField("range"):
            now = time.time()
            request.range.start.CopyFrom(timestamp(now - RECOMMENDATION_HISTORY_S))
            request.range.end.CopyFrom(timestamp(now + 1))
        reply = cast(
            analytics_pb2.RecommendTemplatesResponse, await self._call("RecommendTemplates", request, timeout_s)
        )
        for recommendation in reply.templates:
            if recommendation.template_id in known:
                recommendation.name = known[recommendation.template_id].name
        return reply

    async def _complete_experiment(self, request: analytics_pb2.ExperimentResultsRequest) -> None:
        """Fills in what a request naming only the experiment leaves out, from the experiment book."""
        if request.arms:
            return
        experiment = await self.experiments.get(request.tenant_id, request.experiment)
        request.arms.extend(analytics_pb2.ExperimentArm(name=arm.name, weight=arm.weight) for arm in experiment.arms)
        if not request.goals:
            request.goals.extend(experiment.goals)
        request.conversion_window_s = request.conversion_window_s or experiment.conversion_window_s
        request.min_exposures = request.min_exposures or experiment.min_exposures
        if not request.HasField("range"):
            if experiment.started_at is None:
                raise errors.FailedPrecondition(f"experiment {experiment.name!r} has not been started")
            request.range.start.CopyFrom(timestamp(experiment.started_at))
            request.range.end.CopyFrom(timestamp((experiment.stopped_at or time.time()) + 1))

    async def _call(self, method: str, request: Message, timeout_s: float | None) -> Message:
        try:
            reply: Message = await getattr(self.stub, method)(request, timeout=timeout_s or _DEFAULT_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise domain_error(error, "analytics") from None
        return reply

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
