"""gRPC glue of the gateway: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from inkloop.prompts import PrivacyPolicy
from inkloop.rpc.client import channel_credentials
from inkloop.v1 import analytics_pb2, gateway_pb2, gateway_pb2_grpc
from inkloop_gateway import protocol
from inkloop_gateway.analyst import AnalyticsClient
from inkloop_gateway.auth import AuthInterceptor, current_principal
from inkloop_gateway.cache import cache_from_settings
from inkloop_gateway.dispatch import Dispatcher, DispatchSettings
from inkloop_gateway.events import EventSender
from inkloop_gateway.http import HttpServer
from inkloop_gateway.images import ImageStore, load_or_create_secret
from inkloop_gateway.jobs import Job, JobStore
from inkloop_gateway.jobs_redis import RedisJobStore
from inkloop_gateway.jobs_sqlite import SqliteJobStore
from inkloop_gateway.keys import KeyStore, key_store_from_settings
from inkloop_gateway.notify import ChangeRelay
from inkloop_gateway.outages import StoreOutageInterceptor
from inkloop_gateway.ratelimit import RateLimitPolicy, RateLimits, limiter_from_url
from inkloop_gateway.replicas import Pools
from inkloop_gateway.safety import SafetyFilter
from inkloop_gateway.service import Admission, JobService
from inkloop_gateway.settings import GatewaySettings
from inkloop_gateway.variants import Variant, variant_store_from_settings
from inkloop_gateway.watch import Hub

log = logging.getLogger(__name__)

_RETIRE_INTERVAL_S = 30.0


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    async def SubmitJob(
        self, request: gateway_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitJobResponse:
        job = await self.jobs.submit(current_principal(), request.request_id, request.task, request.user_id)
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
        job = await self.jobs.submit(current_principal(), request.request_id, request.task, request.user_id)
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

    def __init__(self, keys: KeyStore, jobs: JobService) -> None:
        self.keys = keys
        self.jobs = jobs

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

    async def ListAlertRules(
        self, request: analytics_pb2.ListAlertRulesRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._query("ListAlertRules", request, context)

    async def ListAlerts(self, request: analytics_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._query("ListAlerts", request, context)


def _secret(configured: str, path: Path) -> bytes:
    return configured.encode() if configured else load_or_create_secret(path)


class GatewayApp:
    """Wires the gateway's parts from its settings; `start`/`stop` run their background work."""

    service_names: Sequence[str] = (
        "inkloop.v1.GatewayService",
        "inkloop.v1.AdminService",
        "inkloop.v1.AnalyticsQueryService",
    )

    def __init__(self, settings: GatewaySettings) -> None:
        s = settings
        self.settings = s
        self.ready = False
        self._retirer: asyncio.Task[None] | None = None
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.keys = key_store_from_settings(s)
        # With Redis, calls during its outage answer UNAVAILABLE (the outage interceptor wraps auth too).
        auth = AuthInterceptor(self.keys)
        self.interceptors: Sequence[grpc.aio.ServerInterceptor] = (
            (StoreOutageInterceptor(), auth) if s.redis_url else (auth,)
        )
        self.store: JobStore = RedisJobStore(s.redis_url) if s.redis_url else SqliteJobStore(s.data_dir / "jobs.db")
        self.variants = variant_store_from_settings(
            s.redis_url or None, s.data_dir, [Variant("default", s.inference_target, 1)]
        )
        upstream = channel_credentials(s.upstream_tls_ca_file, s.upstream_tls_cert_file, s.upstream_tls_key_file)
        self.pools = Pools(s.health_interval_s, upstream, s.down_probe_interval_s)
        self.images = ImageStore(
            s.image_dir or s.data_dir / "images",
            _secret(s.url_signing_secret, s.data_dir / "url-signing-key"),
            s.download_url_ttl_s,
            inline_write_bytes=s.image_inline_write_bytes,
        )
        self.events = EventSender(
            s.analytics_target,
            s.data_dir / "events-spool",
            batch_size=s.events_batch_size,
            flush_interval_s=s.events_flush_interval_s,
            buffer_size=s.events_buffer_size,
            spool_max_bytes=s.events_spool_max_bytes,
            credentials=upstream,
        )
        self.analytics = AnalyticsClient(s.analytics_target, upstream)
        self.hub = Hub()
        self.cache = cache_from_settings(s.redis_url or None, s.data_dir, s.cache_max_bytes, s.cache_ttl_s)
        self.limiter = limiter_from_url(s.redis_url or None)
        admission = Admission(
            safety=SafetyFilter.from_settings(
                s.safety_lexicon_paths, s.safety_regexes, s.safety_embedding_model, s.safety_semantic_threshold
            ),
            rate_limits=RateLimitPolicy(self.limiter, RateLimits.from_settings(s)),
            cache=self.cache if s.cache_max_bytes > 0 else None,
            privacy=PrivacyPolicy(
                store_text=s.prompt_store_text,
                salt=_secret(s.prompt_hash_salt, s.data_dir / "prompt-hash-salt").decode(),
            ),
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.pools,
            self.images,
            self.events,
            self.hub,
            admission.cache,
            DispatchSettings(
                workers=s.workers,
                lease_s=s.lease_s,
                poll_interval_s=s.poll_interval_s,
                max_attempts=s.max_attempts,
                retry_initial_s=s.retry_initial_s,
                retry_max_s=s.retry_max_s,
                sole_replica=not s.redis_url,
                owner=f"gw-{secrets.token_hex(6)}",
            ),
        )
        # Other replicas' job changes, pushed; SQLite means one replica, whose changes the hub sees anyway.
        self.changes = (
            ChangeRelay(s.redis_url, self.hub, self.dispatcher, notified_poll_interval_s=s.notified_poll_interval_s)
            if s.redis_url
            else None
        )
        self.jobs = JobService(
            self.store,
            self.variants,
            self.pools,
            self.dispatcher,
            self.images,
            self.events,
            self.hub,
            admission,
            job_deadline_s=s.job_deadline_s,
            poll_interval_s=s.poll_interval_s,
        )
        self.http = HttpServer(
            s.host,
            s.http_port,
            lambda: self.ready,
            self.keys,
            self.images,
            self.events,
            jobs=self.jobs,
            settings=s,
            analytics=self.analytics,
        )

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(self.jobs), server)
        gateway_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(self.keys, self.jobs), server)
        gateway_pb2_grpc.add_AnalyticsQueryServiceServicer_to_server(AnalyticsQueryServicer(self.analytics), server)

    async def start(self) -> None:
        await self.events.start()
        await self.dispatcher.start()
        if self.changes is not None:
            await self.changes.start()
        await self.http.start()
        self._retirer = asyncio.create_task(self._retire_unused_targets(), name="retire-targets")
        self.ready = True

    async def _retire_unused_targets(self) -> None:
        """Variants another replica changed: their old targets' pools close here within a minute."""
        while True:
            await asyncio.sleep(_RETIRE_INTERVAL_S)
            try:
                await self.jobs.retire_unused_targets()
            except Exception:  # Redis down: the variants store keeps its last answer; try next round
                log.debug("retiring unused inference targets failed", exc_info=True)

    async def stop(self) -> None:
        self.ready = False
        if self._retirer is not None:
            self._retirer.cancel()
            await asyncio.gather(self._retirer, return_exceptions=True)
        await self.http.stop()
        if self.changes is not None:
            await self.changes.stop()
        await self.dispatcher.stop()  # running jobs go back to the queue
        await self.events.stop()  # unsent events go to the spool
        await self.pools.stop()
        for close in (
            self.store.close,
            self.cache.aclose,
            self.variants.aclose,
            self.limiter.aclose,
            self.images.aclose,
            self.analytics.aclose,
        ):
            try:
                await close()
            except Exception:
                log.exception("closing a gateway resource failed")
        self.keys.close()
