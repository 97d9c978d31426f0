"""The jobs API as domain operations: submit (the admission pipeline), get, watch, cancel, list.

Submission runs, in order: idempotency (a known request id returns its job, charging nothing),
A/B assignment, validation against the variant's model limits, the safety filter, the rate limits,
the result cache, then the queue. Every outcome is a back-end event; a rejected prompt is recorded
by its policy and features only, never its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from inkloop import errors, tracing
from inkloop.prompts import PrivacyPolicy, prompt_features
from inkloop.v1 import analytics_pb2, common_pb2, gateway_pb2, inference_pb2
from inkloop_gateway.admission.auth import Principal
from inkloop_gateway.admission.ratelimit import RateLimitPolicy
from inkloop_gateway.admission.safety import PolicyViolation, SafetyFilter
from inkloop_gateway.admission.validation import ValidatedTask, validate_task
from inkloop_gateway.admission.variants import VariantList, VariantStore, assign
from inkloop_gateway.api.protocol import task_parameters
from inkloop_gateway.events.sender import EventFacts, EventSender, EventType
from inkloop_gateway.jobs.cache import ResultCache, cache_key
from inkloop_gateway.jobs.dispatch import Dispatcher
from inkloop_gateway.jobs.replicas import Pools
from inkloop_gateway.jobs.shares import QueueShares
from inkloop_gateway.jobs.store import Job, JobState, JobStore, Page, Priority, new_job_id
from inkloop_gateway.jobs.watch import Hub, watch
from inkloop_gateway.media.images import EXTENSION_OF_FORMAT, ImageStore
from inkloop_gateway.nudges.templates import TemplateBook
from inkloop_gateway.webhooks.deliverer import Outcome
from inkloop_gateway.webhooks.planner import WebhookPlanner

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# How long CancelJob waits for a local worker to stop, so the reply usually says CANCELLED.
_CANCEL_WAIT_S = 1.0


@dataclass
class Admission:
    """The checks a submission passes, in order after validation."""

    safety: SafetyFilter
    rate_limits: RateLimitPolicy
    cache: ResultCache | None
    privacy: PrivacyPolicy
    templates: TemplateBook


class JobService:
    def __init__(
        self,
        store: JobStore,
        variants: VariantStore,
        pools: Pools,
        dispatcher: Dispatcher,
        images: ImageStore,
        events: EventSender,
        hub: Hub,
        admission: Admission,
        webhooks: WebhookPlanner,
        *,
        shares: QueueShares,
        job_deadline_s: float,
        poll_interval_s: float,
        public_base_url: str = "",
    ) -> None:
        self.store = store
        self.variants = variants
        self.pools = pools
        self.dispatcher = dispatcher
        self.images = images
        self.events = events
        self.hub = hub
        self.admission = admission
        self.webhooks = webhooks
        self.shares = shares
        self.job_deadline_s = job_deadline_s
        self.poll_interval_s = poll_interval_s
        self.public_base_url = public_base_url.rstrip("/")

    async def submit(
        self,
        principal: Principal,
        request_id: str,
        task: common_pb2.GenerationTask,
        user_id: str,
        template_id: str = "",
        variant_name: str = "",
        webhook_url: str = "",
        priority: Priority = Priority.INTERACTIVE,
    ) -> Job:
        # 1. Idempotency: a known request id is answered from the store, whatever it asked.
        if request_id and not _REQUEST_ID.match(request_id):
            raise errors.InvalidArgument("request_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        request_id = request_id or uuid.uuid4().hex
        existing = await self.store.find_request(principal.tenant_id, request_id)
        if existing is not None:
            return existing
        user_id = user_id or principal.key_id
        accepted_at = time.time()
        try:
            return await self._admit(
                principal, request_id, task, user_id, accepted_at, template_id, variant_name, webhook_url, priority
            )
        finally:
            tracing.record_past("admission", accepted_at, time.time(), request_id=request_id)

    async def _admit(
        self,
        principal: Principal,
        request_id: str,
        task: common_pb2.GenerationTask,
        user_id: str,
        accepted_at: float,
        template_id: str,
        variant_name: str,
        webhook_url: str,
        priority: Priority,
    ) -> Job:

        # 2. Sticky A/B assignment (unless the client names a variant): it decides the model, hence the limits.
        variants = await self.variants.list()
        if variant_name:
            named = [variant for variant in variants if variant.name == variant_name]
            if not named:
                raise errors.NotFound(f"no model variant {variant_name!r}")
            variant = named[0]
        else:
            variant = assign(variants, user_id)
        pool = await self.pools.get(variant.target)
        info = _with_variant_defaults(await pool.model_info(), variant.model)

        # 3. Validation.
        try:
            await self.admission.templates.require(principal.tenant_id, template_id)
            self.webhooks.check(webhook_url)
            validated = await _validate(task, info)
        except errors.InvalidArgument:
            raw_prompt = task_parameters(task).prompt if task.WhichOneof("kind") else ""
            unchecked = prompt_features(raw_prompt, self.admission.privacy).to_pb()
            unchecked.redacted = ""  # the safety filter has not seen it: keep no text
            rejected = EventFacts.of_task(
                task,
                tenant_id=principal.tenant_id,
                user_id=user_id,
                request_id=request_id,
                variant=variant.name,
                prompt=unchecked.SerializeToString(),
                accepted_at=accepted_at,
            )
            self.events.emit(rejected.event(EventType.BACKEND_EVENT_TYPE_REJECTED, error_code="INVALID_ARGUMENT"))
            raise
        seed = validated.seed if validated.seed is not None else secrets.randbits(63)
        job_task = validated.to_task_pb(seed, model_variant=variant.model)
        features = prompt_features(validated.prompt, self.admission.privacy).to_pb().SerializeToString()
        facts = EventFacts.of_task(
            job_task,
            tenant_id=principal.tenant_id,
            user_id=user_id,
            request_id=request_id,
            job_id=new_job_id(),
            variant=variant.name,
            prompt=features,
        )
        # 4. Safety, then 5. rate limits: each rejection is an event, then the error.
        violation: PolicyViolation | None = None
        try:
            await self.admission.safety.acheck(validated.prompt, validated.negative_prompt)
        except PolicyViolation as refused:
            violation = refused
            # Not even the redacted excerpt is kept: it could hold the very term that was refused.
            hidden = analytics_pb2.PromptFeatures.FromString(features)
            hidden.redacted = ""
            facts = replace(facts, prompt=hidden.SerializeToString())
        base = (
            await asyncio.to_thread(self.images.origin_of, principal.tenant_id, validated.image)
            if validated.image
            else {}
        )
        requested = replace(facts, base_request_id=base.get("request_id", ""), template_id=template_id)
        self.events.emit(requested.event(EventType.BACKEND_EVENT_TYPE_REQUESTED))
        if violation is not None:
            self.events.emit(
                facts.event(
                    EventType.BACKEND_EVENT_TYPE_REJECTED_BY_POLICY,
                    error_code="FAILED_PRECONDITION",
                    policy=violation.policy,
                )
            )
            raise violation
        try:
            await self.admission.rate_limits.check(principal, validated.cost())
        except errors.ResourceExhausted:
            self.events.emit(facts.event(EventType.BACKEND_EVENT_TYPE_REJECTED, error_code="RESOURCE_EXHAUSTED"))
            raise

        # 6. Webhooks (planned before the job exists, so no crash loses them), 7. the cache, 8. the queue
        # in the tenant's class and share.
        await self.webhooks.plan(principal.tenant_id, facts.job_id, webhook_url)
        queue_class, weight = self.shares.place(principal.tenant_id, priority)
        job = Job(
            job_id=facts.job_id,
            tenant_id=principal.tenant_id,
            request_id=request_id,
            user_id=user_id,
            key_id=principal.key_id,
            kind=validated.kind,
            task=job_task.SerializeToString(),
            variant=variant.name,
            target=variant.target,
            created_at=facts.accepted_at,
            cache_key=cache_key(variant.name, _revision_of(info, validated), validated, seed),
            prompt_features=features,
            deadline_at=facts.accepted_at + self.job_deadline_s,
            priority=queue_class,
            weight=weight,
            traceparent=tracing.current_context_carrier(),
        )
        cached = await self._cached(job)
        if cached is not None:
            stored, created = await self.store.submit(cached)
            if created:
                self.events.emit(facts.event(EventType.BACKEND_EVENT_TYPE_CACHE_HIT))
                self.events.emit(facts.event(EventType.BACKEND_EVENT_TYPE_SUCCEEDED))
            return stored
        stored, created = await self.dispatcher.submit(job)
        if created:
            self.events.emit(facts.event(EventType.BACKEND_EVENT_TYPE_QUEUED))
        return stored

    def record_downloads(self, job: Job, images: int) -> None:
        """Image bytes handed to an API client that asked for them: each image is one download."""
        origin = {"job_id": job.job_id, "request_id": job.request_id, "user_id": job.user_id, "variant": job.variant}
        facts = EventFacts.of_download(job.tenant_id, origin)
        for _ in range(images):
            self.events.emit(facts.event(EventType.BACKEND_EVENT_TYPE_DOWNLOADED))

    async def set_variants(self, variants: VariantList) -> VariantList:
        """Replaces the variants (for every replica sharing the store); the variants in force after it."""
        await self.variants.set(variants)
        await self.retire_unused_targets()
        return await self.variants.list()

    async def retire_unused_targets(self) -> None:
        """Closes the replica pools of targets no variant names any more (other replicas: periodically)."""
        await self.pools.retain({variant.target for variant in await self.variants.list()})

    async def main_model_info(self) -> inference_pb2.GetModelInfoResponse:
        """ModelInfo of the variant most traffic goes to: what clients take their defaults from."""
        main = max(await self.variants.list(), key=lambda variant: variant.weight)
        return await (await self.pools.get(main.target)).model_info()

    async def _cached(self, job: Job) -> Job | None:
        """The job already SUCCEEDED from the cache, or None on a miss."""
        if self.admission.cache is None:
            return None
        hit = await self.admission.cache.get(job.cache_key)
        if hit is None:
            return None
        result = common_pb2.GenerationResult.FromString(hit)
        origin = {"job_id": job.job_id, "request_id": job.request_id, "user_id": job.user_id, "variant": job.variant}
        for image in result.images:
            # Entries are shared across tenants (the key has no tenant): store this tenant's own copy.
            known = self.images.has(job.tenant_id, image.data, image.format)
            if known is None:
                known = await self.images.save(job.tenant_id, image.data, image.format, origin)
            image.image_id = known
            image.data = b""
        now = time.time()
        return job.with_(
            state=JobState.SUCCEEDED, cache_hit=True, result=result.SerializeToString(), started_at=now, finished_at=now
        )

    async def get(self, principal: Principal, job_id: str) -> Job:
        return self.hub.current(await self.store.get(job_id, principal.tenant_id))

    async def position(self, job: Job) -> int:
        return await self.store.queue_position(job) if job.state == JobState.QUEUED else 0

    async def list(self, principal: Principal, state: JobState | None, page_size: int, page_token: str) -> Page:
        page = await self.store.list(principal.tenant_id, state, page_size, page_token)
        return Page([self.hub.current(job) for job in page.jobs], page.next_page_token)

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        job = await self.store.cancel(job_id, principal.tenant_id)
        if job.state == JobState.CANCELLED:
            self.events.emit(EventFacts.of_job(job).event(EventType.BACKEND_EVENT_TYPE_CANCELLED))
            self.hub.publish(job_id)
            return job
        if self.dispatcher.cancel_local(job_id):
            # Running here: the call is being cancelled; the worker records the outcome in a moment.
            with self.hub.subscribe(job_id) as changed:
                deadline = time.monotonic() + _CANCEL_WAIT_S
                while not job.state.terminal and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
                    changed.clear()
                    job = await self.store.get(job_id)
        return job

    async def watch(self, principal: Principal, job_id: str) -> AsyncIterator[gateway_pb2.JobEvent]:
        async for event in self.follow(await self.get(principal, job_id)):
            yield event

    def follow(self, job: Job) -> AsyncIterator[gateway_pb2.JobEvent]:
        """Events of a job the caller may see, from its current state to its end."""
        return watch(
            self.store, self.hub, job, self._result_with_images, self.poll_interval_s, self.dispatcher.queue_reason
        )

    async def result(self, job: Job, *, include_images: bool) -> common_pb2.GenerationResult | None:
        """The stored result with image ids, signed download URLs and (when asked) the bytes."""
        if job.state != JobState.SUCCEEDED or not job.result:
            return None
        result = common_pb2.GenerationResult.FromString(job.result)
        for image in result.images:
            extension = EXTENSION_OF_FORMAT.get(image.format, "png")
            image.download_url = self.images.download_url(job.tenant_id, image.image_id, extension)
            if include_images:
                kept = self.hub.kept_image(job.job_id, image.image_id)
                if kept is None:
                    kept = (await asyncio.to_thread(self.images.load, job.tenant_id, image.image_id)).data
                image.data = kept
        return result

    async def outcome_of(self, job_id: str, tenant_id: str) -> Outcome | None:
        """What a webhook reports of a job: None while it runs; NotFound when there is no such job."""
        job = self.hub.current(await self.store.get(job_id, tenant_id))
        if not job.state.terminal:
            return None
        data: dict[str, object] = {
            "job_id": job.job_id,
            "request_id": job.request_id,
            "state": job.state.name,
            "variant": job.variant,
            "cache_hit": job.cache_hit,
        }
        # Paths that a key opens, not signed URLs: a retry hours later must send the same body, and a
        # signed URL would have expired (or changed) by then.
        result = common_pb2.GenerationResult.FromString(job.result) if job.result else common_pb2.GenerationResult()
        data["images"] = [
            {
                "image_id": image.image_id,
                "url": self.public_base_url + _image_path(image),
                "width": image.width,
                "height": image.height,
                "seed": str(image.seed),
            }
            for image in result.images
        ]
        failure = job.failure
        data["failure"] = (
            {"code": failure.code, "message": failure.message, "field": failure.field, "policy": failure.policy}
            if failure
            else None
        )
        return Outcome(f"job.{job.state.name.lower()}", job.finished_at or time.time(), data, job.traceparent)

    async def _result_with_images(self, job: Job) -> common_pb2.GenerationResult:
        return await self.result(job, include_images=True) or common_pb2.GenerationResult()


def _with_variant_defaults(info: inference_pb2.GetModelInfoResponse, model: str) -> inference_pb2.GetModelInfoResponse:
    """ModelInfo with the defaults of the inference-side variant `model` (its steps and CFG) in force."""
    if not model:
        return info
    served = {variant.name: variant for variant in info.variants}
    if model not in served:
        raise errors.FailedPrecondition(
            f"the model variant {model!r} is not served by {info.model_id!r} (it serves {sorted(served)})"
        )
    chosen = inference_pb2.GetModelInfoResponse()
    chosen.CopyFrom(info)
    chosen.defaults.CopyFrom(served[model].defaults)
    return chosen


def _revision_of(info: inference_pb2.GetModelInfoResponse, task: ValidatedTask) -> str:
    """The revision of the weights that will run `task`: an edit runs on the edit model."""
    if task.kind == common_pb2.GENERATION_KIND_EDIT:
        return info.edit_model.model_revision
    return info.model_revision


def _image_path(image: common_pb2.Image) -> str:
    return f"/v1/images/{image.image_id}.{EXTENSION_OF_FORMAT.get(image.format, 'png')}"


async def _validate(task: common_pb2.GenerationTask, info: inference_pb2.GetModelInfoResponse) -> ValidatedTask:
    # Decoding input images is CPU work; a text-to-image task is checked in microseconds.
    if task.WhichOneof("kind") == "text_to_image":
        return validate_task(task, info)
    return await asyncio.to_thread(validate_task, task, info)
