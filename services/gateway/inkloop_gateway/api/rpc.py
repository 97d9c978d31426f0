"""gRPC glue of the gateway: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from inkloop.v1 import analytics_pb2, gateway_pb2, gateway_pb2_grpc
from inkloop_gateway.admission.auth import current_principal
from inkloop_gateway.admission.keys import KeyStore
from inkloop_gateway.api import protocol
from inkloop_gateway.api.analyst import AnalyticsClient
from inkloop_gateway.jobs.service import JobService
from inkloop_gateway.jobs.store import Job
from inkloop_gateway.nudges.experiments import ExperimentBook
from inkloop_gateway.nudges.templates import TemplateBook
from inkloop_gateway.webhooks.endpoints import EndpointBook
from inkloop_gateway.webhooks.outbox import Outbox


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    async def SubmitJob(
        self, request: gateway_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitJobResponse:
        job = await protocol.submit(self.jobs, current_principal(), request)
        return gateway_pb2.SubmitJobResponse(job=await self._job(job))

    async def GetJob(
        self, request: gateway_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetJobResponse:
        job = await self.jobs.get(current_principal(), request.job_id)
        reply = gateway_pb2.GetJobResponse(job=await self._job(job, include_images=request.include_images))
        if request.include_images:
            self.jobs.record_downloads(job, len(reply.job.result.images))
        return reply

    async def WatchJob(
        self, request: gateway_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.JobEvent]:
        # A progress stream, not a request for the file: watchers are not counted as downloads.
        async for event in self.jobs.watch(current_principal(), request.job_id):
            yield event

    async def CancelJob(
        self, request: gateway_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CancelJobResponse:
        job = await self.jobs.cancel(current_principal(), request.job_id)
        return gateway_pb2.CancelJobResponse(job=await self._job(job))

    async def ListJobs(
        self, request: gateway_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListJobsResponse:
        state = protocol.state_filter(request.state)
        page = await self.jobs.list(
            current_principal(), state, protocol.page_size(request.page_size), request.page_token
        )
        jobs = [await self._job(job) for job in page.jobs]
        return gateway_pb2.ListJobsResponse(jobs=jobs, next_page_token=page.next_page_token)

    async def Generate(
        self, request: gateway_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.JobEvent]:
        job = await protocol.submit(self.jobs, current_principal(), request)
        async for event in self.jobs.follow(job):
            yield event
            if event.HasField("succeeded"):  # the call's answer is the file: each image is a download
                self.jobs.record_downloads(job, len(event.succeeded.images))

    async def _job(self, job: Job, *, include_images: bool = False) -> gateway_pb2.Job:
        return protocol.job_to_pb(
            job,
            queue_position=await self.jobs.position(job),
            result=await self.jobs.result(job, include_images=include_images),
        )


class AdminServicer(gateway_pb2_grpc.AdminServiceServicer):
    """Admin role only: the auth interceptor refuses every other key before these run."""

    def __init__(
        self,
        keys: KeyStore,
        jobs: JobService,
        templates: TemplateBook,
        experiments: ExperimentBook,
        endpoints: EndpointBook,
        outbox: Outbox,
    ) -> None:
        self.keys = keys
        self.jobs = jobs
        self.templates = templates
        self.experiments = experiments
        self.endpoints = endpoints
        self.outbox = outbox

    async def CreateApiKey(
        self, request: gateway_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateApiKeyResponse:
        key, secret = self.keys.create(request.tenant_id, protocol.role_from_pb(request.role), request.name)
        return gateway_pb2.CreateApiKeyResponse(key=protocol.api_key_to_pb(key), secret=secret)

    async def ListApiKeys(
        self, request: gateway_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListApiKeysResponse:
        keys = self.keys.list(request.tenant_id, include_revoked=request.include_revoked)
        return gateway_pb2.ListApiKeysResponse(keys=[protocol.api_key_to_pb(key) for key in keys])

    async def RevokeApiKey(
        self, request: gateway_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RevokeApiKeyResponse:
        return gateway_pb2.RevokeApiKeyResponse(key=protocol.api_key_to_pb(self.keys.revoke(request.key_id)))

    async def ListVariants(
        self, request: gateway_pb2.ListVariantsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListVariantsResponse:
        return gateway_pb2.ListVariantsResponse(
            variants=[protocol.variant_to_pb(v) for v in await self.jobs.variants.list()]
        )

    async def SetVariants(
        self, request: gateway_pb2.SetVariantsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SetVariantsResponse:
        in_force = await self.jobs.set_variants([protocol.variant_from_pb(v) for v in request.variants])
        return gateway_pb2.SetVariantsResponse(variants=[protocol.variant_to_pb(v) for v in in_force])

    async def ListTemplates(
        self, request: gateway_pb2.ListTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListTemplatesResponse:
        templates = await self.templates.list(_tenant(request.tenant_id))
        return gateway_pb2.ListTemplatesResponse(templates=[protocol.template_to_pb(t) for t in templates])

    async def PutTemplate(
        self, request: gateway_pb2.PutTemplateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PutTemplateResponse:
        stored = await self.templates.put(_tenant(request.tenant_id), protocol.template_from_pb(request.template))
        return gateway_pb2.PutTemplateResponse(template=protocol.template_to_pb(stored))

    async def DeleteTemplate(
        self, request: gateway_pb2.DeleteTemplateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteTemplateResponse:
        await self.templates.delete(_tenant(request.tenant_id), request.template_id)
        return gateway_pb2.DeleteTemplateResponse()

    async def CreateExperiment(
        self, request: gateway_pb2.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateExperimentResponse:
        draft = await self.experiments.create(
            _tenant(request.tenant_id), protocol.experiment_from_pb(request.experiment)
        )
        return gateway_pb2.CreateExperimentResponse(experiment=protocol.experiment_to_pb(draft))

    async def StartExperiment(
        self, request: gateway_pb2.StartExperimentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.StartExperimentResponse:
        running = await self.experiments.start(_tenant(request.tenant_id), request.name)
        return gateway_pb2.StartExperimentResponse(experiment=protocol.experiment_to_pb(running))

    async def StopExperiment(
        self, request: gateway_pb2.StopExperimentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.StopExperimentResponse:
        stopped = await self.experiments.stop(_tenant(request.tenant_id), request.name)
        return gateway_pb2.StopExperimentResponse(experiment=protocol.experiment_to_pb(stopped))

    async def ListExperiments(
        self, request: gateway_pb2.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListExperimentsResponse:
        experiments = await self.experiments.list(_tenant(request.tenant_id))
        return gateway_pb2.ListExperimentsResponse(experiments=[protocol.experiment_to_pb(e) for e in experiments])

    async def CreateWebhookEndpoint(
        self, request: gateway_pb2.CreateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateWebhookEndpointResponse:
        tenant = _tenant(request.tenant_id)
        types = protocol.webhook_event_types_from_pb(request.event_types)
        endpoint = await self.endpoints.create(tenant, request.url, types)
        return gateway_pb2.CreateWebhookEndpointResponse(
            endpoint=protocol.endpoint_to_pb(tenant, endpoint, with_secret=True)
        )

    async def ListWebhookEndpoints(
        self, request: gateway_pb2.ListWebhookEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListWebhookEndpointsResponse:
        tenant = _tenant(request.tenant_id)
        endpoints = await self.endpoints.list(tenant)
        return gateway_pb2.ListWebhookEndpointsResponse(
            endpoints=[protocol.endpoint_to_pb(tenant, endpoint) for endpoint in endpoints]
        )

    async def DeleteWebhookEndpoint(
        self, request: gateway_pb2.DeleteWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteWebhookEndpointResponse:
        await self.endpoints.delete(_tenant(request.tenant_id), request.endpoint_id)
        return gateway_pb2.DeleteWebhookEndpointResponse()

    async def GetJobWebhookSecret(
        self, request: gateway_pb2.GetJobWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetJobWebhookSecretResponse:
        return gateway_pb2.GetJobWebhookSecretResponse(
            secret=await self.endpoints.job_secret(_tenant(request.tenant_id))
        )

    async def ListWebhookDeliveries(
        self, request: gateway_pb2.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListWebhookDeliveriesResponse:
        limit = protocol.page_size(request.page_size)
        deliveries = await self.outbox.list(_tenant(request.tenant_id), request.job_id, limit)
        return gateway_pb2.ListWebhookDeliveriesResponse(deliveries=[protocol.delivery_to_pb(d) for d in deliveries])


def _tenant(requested: str) -> str:
    """An admin request's tenant: the one named, else the admin key's own."""
    return requested or current_principal().tenant_id


class AnalyticsQueryServicer(gateway_pb2_grpc.AnalyticsQueryServiceServicer):
    """Analyst role and up (the auth interceptor checks it); each call is the caller's scoped query."""

    def __init__(self, analytics: AnalyticsClient) -> None:
        self.analytics = analytics

    async def _query(self, method: str, request: Message, context: grpc.aio.ServicerContext) -> Any:
        return await self.analytics.query(current_principal(), method, request, timeout_s=context.time_remaining())

    async def Funnel(self, request: analytics_pb2.FunnelRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._query("Funnel", request, context)

    async def Discrepancy(self, request: analytics_pb2.DiscrepancyRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._query("Discrepancy", request, context)

    async def PromptInsights(
        self, request: analytics_pb2.PromptInsightsRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("PromptInsights", request, context)

    async def FeatureAdoption(
        self, request: analytics_pb2.FeatureAdoptionRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("FeatureAdoption", request, context)

    async def CompareVariants(
        self, request: analytics_pb2.CompareVariantsRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("CompareVariants", request, context)

    async def Outcomes(self, request: analytics_pb2.OutcomesRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._query("Outcomes", request, context)

    async def RetryLoops(self, request: analytics_pb2.RetryLoopsRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._query("RetryLoops", request, context)

    async def ListAlertRules(
        self, request: analytics_pb2.ListAlertRulesRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("ListAlertRules", request, context)

    async def ListAlerts(self, request: analytics_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._query("ListAlerts", request, context)

    async def RecommendTemplates(
        self, request: analytics_pb2.RecommendTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("RecommendTemplates", request, context)

    async def ExperimentResults(
        self, request: analytics_pb2.ExperimentResultsRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("ExperimentResults", request, context)

    async def FunnelCorrelation(
        self, request: analytics_pb2.FunnelCorrelationRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("FunnelCorrelation", request, context)
