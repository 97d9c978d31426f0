"""The one place that wires the gateway: its parts built from the settings, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc

from inkloop import errors
from inkloop.prompts import PrivacyPolicy
from inkloop.rpc.client import channel_credentials
from inkloop.v1 import gateway_pb2_grpc
from inkloop_gateway.admission.auth import AuthInterceptor
from inkloop_gateway.admission.image_safety import image_safety_from_settings
from inkloop_gateway.admission.keys import key_store_from_settings
from inkloop_gateway.admission.ratelimit import RateLimitPolicy, RateLimits, limiter_from_url
from inkloop_gateway.admission.safety import SafetyFilter
from inkloop_gateway.admission.variants import Variant, variant_store_from_settings
from inkloop_gateway.api.analyst import AnalyticsClient
from inkloop_gateway.api.http import HttpServer, build_app, routes
from inkloop_gateway.api.outages import StoreOutageInterceptor
from inkloop_gateway.api.rpc import AdminServicer, AnalyticsQueryServicer, GatewayServicer
from inkloop_gateway.events.sender import EventSender
from inkloop_gateway.jobs.cache import cache_from_settings
from inkloop_gateway.jobs.dispatch import Dispatcher, DispatchSettings
from inkloop_gateway.jobs.notify import ChangeRelay
from inkloop_gateway.jobs.replicas import Pools
from inkloop_gateway.jobs.service import Admission, JobService
from inkloop_gateway.jobs.shares import QueueShares
from inkloop_gateway.jobs.store import JobStore, Priority
from inkloop_gateway.jobs.store_redis import RedisJobStore
from inkloop_gateway.jobs.store_sqlite import SqliteJobStore
from inkloop_gateway.jobs.watch import Hub
from inkloop_gateway.media.images import ImageStore, load_or_create_secret
from inkloop_gateway.nudges.documents import document_store_from_settings
from inkloop_gateway.nudges.experiments import ExperimentBook
from inkloop_gateway.nudges.templates import TemplateBook
from inkloop_gateway.settings import GatewaySettings
from inkloop_gateway.webhooks.deliverer import DeliverySettings, WebhookDeliverer
from inkloop_gateway.webhooks.endpoints import EndpointBook
from inkloop_gateway.webhooks.outbox import outbox_from_settings
from inkloop_gateway.webhooks.planner import WebhookPlanner
from inkloop_gateway.webhooks.targets import Targets

log = logging.getLogger(__name__)

_RETIRE_INTERVAL_S = 30.0
# Each part's stop: far above what any takes. A part still stopping past it is reported with where
# it waits and left behind, so the gateway's stop always ends (seen once in CI: a stop that never did).
_STOP_STEP_S = 15.0


async def _stop_within(name: str, stopping: Coroutine[Any, Any, Any], timeout_s: float) -> None:
    """Awaits one part's stop for at most `timeout_s`; never raises. Not `wait_for`, which would wait
    for the cancellation of a part that does not take it (redis-py can swallow one while it closes)."""
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.error(
            "stopping the gateway's %s took over %.0f s; going on without it. It waits in %s",
            name,
            timeout_s,
            _awaited_chain(task.get_coro()),
        )
        task.cancel()
        return
    if not task.cancelled() and task.exception() is not None:
        log.error("stopping the gateway's %s failed", name, exc_info=task.exception())


def _awaited_chain(coroutine: Any) -> str:
    """Where a suspended coroutine waits: each coroutine it awaits in turn, innermost last."""
    places = []
    while coroutine is not None and getattr(coroutine, "cr_frame", None) is not None:
        code = coroutine.cr_code
        places.append(f"{code.co_name} ({code.co_filename}:{coroutine.cr_frame.f_lineno})")
        coroutine = coroutine.cr_await
    return " -> ".join(places) or "(no coroutine frame)"


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
        self.documents = document_store_from_settings(s.redis_url or None, s.data_dir)
        self.templates = TemplateBook(self.documents)
        self.experiments = ExperimentBook(self.documents)
        self.analytics = AnalyticsClient(
            s.analytics_target, upstream, templates=self.templates, experiments=self.experiments
        )
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
            templates=self.templates,
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
            image_safety_from_settings(
                s.image_safety, s.image_safety_action, s.image_safety_tenant_actions, s.image_safety_threshold
            ),
        )
        # Other replicas' job changes, pushed; SQLite means one replica, whose changes the hub sees anyway.
        self.changes = (
            ChangeRelay(s.redis_url, self.hub, self.dispatcher, notified_poll_interval_s=s.notified_poll_interval_s)
            if s.redis_url
            else None
        )
        targets = Targets(s.webhook_allowed_hosts)
        self.endpoints = EndpointBook(self.documents, targets)
        self.outbox = outbox_from_settings(s.redis_url or None, s.data_dir)
        self.jobs = JobService(
            self.store,
            self.variants,
            self.pools,
            self.dispatcher,
            self.images,
            self.events,
            self.hub,
            admission,
            WebhookPlanner(self.outbox, self.endpoints, targets),
            shares=QueueShares(
                weights=s.tenant_weights, max_priority={t: Priority(p) for t, p in s.tenant_max_priority.items()}
            ),
            job_deadline_s=s.job_deadline_s,
            poll_interval_s=s.poll_interval_s,
            public_base_url=s.public_base_url,
        )
        self.deliverer = WebhookDeliverer(
            self.outbox,
            self.endpoints,
            self.jobs.outcome_of,
            targets,
            DeliverySettings(
                retry_schedule_s=tuple(s.webhook_retry_schedule_s),
                poll_interval_s=max(0.05, min(0.5, s.poll_interval_s * 5)),
                timeout_s=s.webhook_timeout_s,
                owner=self.dispatcher.settings.owner,
            ),
        )
        self.http = HttpServer(s.host, s.http_port)

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(self.jobs), server)
        gateway_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(self.keys, self.jobs, self.templates, self.experiments, self.endpoints, self.outbox), server
        )
        gateway_pb2_grpc.add_AnalyticsQueryServiceServicer_to_server(AnalyticsQueryServicer(self.analytics), server)

    async def start(self) -> None:
        if self.settings.web_builtin_experiments:
            try:
                await self.experiments.ensure_builtin(self.settings.web_tenant_id)
            except errors.Unavailable:  # Redis restarting: serve anyway; the next start creates them
                log.warning("could not create the built-in experiments: the shared store is unreachable")
        await self.events.start()
        await self.dispatcher.start()
        await self.deliverer.start()
        if self.changes is not None:
            await self.changes.start()
        await self.http.start(
            build_app(
                lambda: self.ready,
                routes(self.keys, self.jobs, self.images, self.events, self.analytics, self.settings),
            )
        )
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
        steps = [
            ("http", self.http.stop),
            *([("changes", self.changes.stop)] if self.changes is not None else []),
            ("deliverer", self.deliverer.stop),  # an attempt cut short is made again (its lease runs out)
            ("dispatcher", self.dispatcher.stop),  # running jobs go back to the queue
            ("events", self.events.stop),  # unsent events go to the spool
            ("pools", self.pools.stop),
            ("store", self.store.close),
            ("cache", self.cache.aclose),
            ("variants", self.variants.aclose),
            ("documents", self.documents.aclose),
            ("outbox", self.outbox.aclose),
            ("limiter", self.limiter.aclose),
            ("images", self.images.aclose),
            ("analytics", self.analytics.aclose),
        ]
        for name, step in steps:
            await _stop_within(name, step(), _STOP_STEP_S)
        self.keys.close()
