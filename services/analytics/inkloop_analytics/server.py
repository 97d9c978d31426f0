"""gRPC glue of the analytics service: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import grpc

from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import analytics_pb2_grpc
from inkloop_analytics import protocol
from inkloop_analytics.service import Analytics
from inkloop_analytics.settings import AnalyticsSettings

log = logging.getLogger(__name__)


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics

    async def Ingest(self, request: pb.IngestRequest, context: grpc.aio.ServicerContext) -> pb.IngestResponse:
        result = await self.analytics.ingest(request.frontend, request.backend, request.batch_id)
        return protocol.ingest_result_to_pb(result)

    async def IngestStream(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IngestResponse]:
        # Answers in order, each once its batch is durable; a bounded window of requests is read ahead.
        async for result in self.analytics.ingest_stream(request_iterator):
            yield protocol.ingest_result_to_pb(result)

    async def Funnel(self, request: pb.FunnelRequest, context: grpc.aio.ServicerContext) -> pb.FunnelResponse:
        return protocol.funnel_to_pb(await self.analytics.funnel_report(protocol.funnel_from_pb(request)))

    async def FunnelCorrelation(
        self, request: pb.FunnelCorrelationRequest, context: grpc.aio.ServicerContext
    ) -> pb.FunnelCorrelationResponse:
        query = protocol.correlation_from_pb(request)
        return protocol.correlation_to_pb(await self.analytics.funnel_correlation(query))

    async def Discrepancy(
        self, request: pb.DiscrepancyRequest, context: grpc.aio.ServicerContext
    ) -> pb.DiscrepancyResponse:
        return protocol.discrepancy_to_pb(await self.analytics.discrepancy(protocol.discrepancy_from_pb(request)))

    async def PromptInsights(
        self, request: pb.PromptInsightsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PromptInsightsResponse:
        return protocol.insights_to_pb(await self.analytics.prompt_insights(protocol.insights_from_pb(request)))

    async def FeatureAdoption(
        self, request: pb.FeatureAdoptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.FeatureAdoptionResponse:
        return protocol.adoption_to_pb(await self.analytics.feature_adoption(protocol.adoption_from_pb(request)))

    async def CompareVariants(
        self, request: pb.CompareVariantsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareVariantsResponse:
        return protocol.variants_to_pb(await self.analytics.compare_variants(protocol.variants_from_pb(request)))

    async def Outcomes(self, request: pb.OutcomesRequest, context: grpc.aio.ServicerContext) -> pb.OutcomesResponse:
        query = protocol.outcomes_from_pb(request, self.analytics.outcome_rules)
        return protocol.outcomes_to_pb(await self.analytics.outcomes(query))

    async def RetryLoops(
        self, request: pb.RetryLoopsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryLoopsResponse:
        query = protocol.retry_loops_from_pb(request, self.analytics.outcome_rules)
        return protocol.retry_loops_to_pb(await self.analytics.retry_loops(query))

    async def RecommendTemplates(
        self, request: pb.RecommendTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendTemplatesResponse:
        strength = self.analytics.settings.template_prior_strength
        query = protocol.recommend_templates_from_pb(request, self.analytics.outcome_rules, strength)
        return protocol.recommend_templates_to_pb(await self.analytics.recommend_templates(query))

    async def ExperimentResults(
        self, request: pb.ExperimentResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentResultsResponse:
        query = protocol.experiment_results_from_pb(request, self.analytics.outcome_rules)
        return protocol.experiment_results_to_pb(await self.analytics.experiment_results(query))

    async def ListAlertRules(
        self, request: pb.ListAlertRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertRulesResponse:
        return protocol.rules_to_pb(self.analytics.alert_rules)

    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertsResponse:
        return protocol.alerts_to_pb(await self.analytics.list_alerts(protocol.list_alerts_from_pb(request)))


class AnalyticsApp:
    """Ingest is served from the moment the port is bound (into the spool while ClickHouse is away);
    `start` returns, and health turns SERVING, once ClickHouse is reachable and migrated."""

    service_names: Sequence[str] = ("inkloop.v1.AnalyticsService",)
    # Callers are authenticated by the gateway, which fills in tenant_id; none of our own.
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()

    def __init__(self, settings: AnalyticsSettings) -> None:
        self.settings = settings
        self.analytics = Analytics(settings)

    def register(self, server: grpc.aio.Server) -> None:
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsServicer(self.analytics), server)

    async def start(self) -> None:
        await self.analytics.open()
        await self.analytics.connect()

    async def stop(self) -> None:
        await self.analytics.close()
