"""Dispatch: a bounded number of worker slots per gateway replica runs jobs on inference replicas.

A job submitted here while a slot is free and nothing is queued starts at once: the store records it
RUNNING under this replica's lease in the same write that stores it. Otherwise it is queued, and a
claim loop takes queued jobs from the store (tenants take turns) whenever a slot frees up or a job
is queued (elsewhere: the change relay wakes it; polling is the safety net). A running job calls its
variant's inference target on the least-loaded healthy replica and streams the steps to this
replica's watchers through the hub; the store gets the newest progress at most every
`progress_persist_s`, in the background, so that watchers on other replicas see it too (a job
shorter than that never writes progress before it ends, and its end records the last step).

Inference outages are waited out within the job's deadline. UNAVAILABLE (or a call the server
cancelled) marks the replica down and moves the job to another healthy one at once; when there is
none, or inference answers RESOURCE_EXHAUSTED, the job goes back to the queue held by its worker
(`JobStore.wait`: QUEUED with the reason, counted in queue positions) and tries again after an
exponential backoff with jitter, or after the delay inference's RetryInfo asks for, or as soon as a
replica comes back (the pool's probes see it). A job that loses its replica mid-run goes back to the
queue too and reruns from the start: its task holds its seed, so the images are the same bytes. Only
the deadline (the failure says what it waited for), cancellation, or another status ends it.

A heartbeat keeps this replica's leases alive, learns of cancellations requested through other
replicas, and recovers jobs whose replica died. Cancelling a job cancels its inference call, which
stops the denoising loop at the next step. On stop, running and waiting jobs go back to the queue for
the next replica or restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from inkloop import tracing
from inkloop.logs import request_id_var
from inkloop.rpc.status import field_violations, retry_delay_s
from inkloop.v1 import common_pb2
from inkloop_gateway import metrics
from inkloop_gateway.admission.image_safety import Action, ImageSafety, Review, blurred
from inkloop_gateway.events.sender import EventFacts, EventSender, EventType
from inkloop_gateway.jobs.replicas import Pools, Replica, ReplicaPool
from inkloop_gateway.jobs.store import Failure, Job, JobState, JobStore, Lease
from inkloop_gateway.jobs.watch import Hub
from inkloop_gateway.media.images import ImageStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Why a job waits in the queue (the reason its `Queued` events carry), and its metrics label.
NO_REPLICA = "waiting for an inference replica"
BUSY = "waiting for inference capacity (inference is busy)"
_REASON_LABELS = {NO_REPLICA: "no_replica", BUSY: "busy"}
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)


class ResultSink(Protocol):
    async def put(self, key: str, value: bytes) -> None: ...


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _Lost(Exception):
    """The store no longer has the job as this replica's (cancelled while queued, or recovered elsewhere)."""


@dataclass
class _Retry:
    """A call to inference that the job makes again."""

    code: grpc.StatusCode
    message: str
    #: What inference's RetryInfo asked for, if it did.
    retry_after_s: float | None


@dataclass
class Backoff:
    """Waits between a job's tries: exponential with jitter, or what inference asked for."""

    initial_s: float
    max_s: float
    tries: int = 0

    def next_s(self, asked_s: float | None = None) -> float:
        if asked_s is not None:
            # As gRPC's own retries do with server pushback: follow it, and start the exponential over.
            self.tries = 0
            return max(asked_s, self.initial_s) * random.uniform(1.0, 1.25)
        ceiling = min(self.max_s, self.initial_s * 2**self.tries)
        self.tries += 1
        # Equal jitter: jobs that failed together (a replica died under them) spread out, none retries at 0.
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class _Running:
    job: Job
    call: grpc.aio.UnaryStreamCall | None = None
    cancelled: bool = False
    steps: int = 0
    total_steps: int = 0
    #: Writes the newest progress to the store now and then; started at the first step.
    persister: asyncio.Task[None] | None = None
    #: Announces the newest step to other replicas (one announcement in flight at a time).
    announcer: asyncio.Task[None] | None = None
    #: Set by a cancellation or a replica coming up: a waiting job looks again at once.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why the job waits in the queue, held by this worker ("": it runs).
    held: str = ""
    #: time.monotonic() since inference last served the job (a step), while it is not served.
    unserved_since: float | None = None
    #: The last status inference answered this job with, for the failure at its deadline.
    last_error: str = ""
    last_code: grpc.StatusCode | None = None


@dataclass
class DispatchSettings:
    workers: int
    lease_s: float
    poll_interval_s: float
    max_attempts: int
    #: First wait before a job tries inference again; doubles per try up to `retry_max_s`.
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    #: Single replica on its own store (SQLite): at start every running job is an orphan.
    sole_replica: bool = False
    #: Seconds between writes of a running job's progress to the store (for other replicas' watchers).
    progress_persist_s: float = 0.5
    owner: str = field(default_factory=lambda: f"gw-{uuid.uuid4().hex[:12]}")


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        pools: Pools,
        images: ImageStore,
        events: EventSender,
        hub: Hub,
        cache: ResultSink | None,
        settings: DispatchSettings,
        image_safety: ImageSafety | None = None,
    ) -> None:
        self.image_safety = image_safety
        self.store = store
        self.pools = pools
        self.images = images
        self.events = events
        self.hub = hub
        self.cache = cache
        self.settings = settings
        self._running: dict[str, _Running] = {}
        #: Worker slots promised to a claim or a local start in flight (counted as busy).
        self._reserved = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        s = self.settings
        if s.sole_replica:
            self._announce(await self.store.recover(s.max_attempts, all_running_except=s.owner))
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="claims"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._runs]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    async def submit(self, job: Job) -> tuple[Job, bool]:
        """Stores a new job (see `JobStore.submit`). When a worker slot is free here and no job is
        queued before it, the store starts it at once under this replica's lease and it runs here
        without a claim round trip; otherwise it is queued and a worker is woken."""
        lease = None
        if self._free_slots() > 0 and self._can_start(job.target):
            self._reserved += 1
            lease = Lease(self.settings.owner, self.settings.lease_s)
        try:
            stored, created = await self.store.submit(job, lease=lease)
        finally:
            if lease is not None:
                self._reserved -= 1
        if created and stored.state == JobState.RUNNING:
            self._start(stored)
        elif created:
            self._wake.set()
        return stored, created

    def wake(self) -> None:
        """Makes the claim loop look for queued jobs now (one was queued through another replica)."""
        self._wake.set()

    def cancel_local(self, job_id: str) -> bool:
        """Stops the inference call of a job running (or waiting) on this replica; False when it runs elsewhere."""
        running = self._running.get(job_id)
        if running is None:
            return False
        running.cancelled = True
        running.wake.set()
        if running.call is not None:
            running.call.cancel()
        return True

    def queue_reason(self, job: Job) -> str:
        """Why a queued job waits, for its `Queued` events: what its worker waits for, else no healthy replica
        of its variant (as this replica sees it); "" when it only waits for its turn."""
        if job.waiting:
            return job.waiting
        pool = self.pools.known(job.target)
        return NO_REPLICA if pool is not None and not pool.any_healthy else ""

    def _free_slots(self) -> int:
        return self.settings.workers - len(self._running) - self._reserved

    def _can_start(self, target: str) -> bool:
        """Whether a job for `target` may start at submission: not while no replica of it is healthy (it
        would only wait; queued, it says so from the start)."""
        pool = self.pools.known(target)
        return pool is None or pool.any_healthy

    async def _claim_loop(self) -> None:
        """Claims queued jobs from the store while this replica has free worker slots."""
        outage = Backoff(self.settings.poll_interval_s, max(self.settings.poll_interval_s, 2.0))
        while True:
            self._wake.clear()
            job = None
            if self._free_slots() > 0:
                self._reserved += 1
                try:
                    job = await self.store.claim(self.settings.owner, self.settings.lease_s)
                    outage.tries = 0
                except Exception:  # the store is down (a Redis restart): try again, less and less often
                    log.warning("claiming a job failed", exc_info=outage.tries == 0)
                    await asyncio.sleep(outage.next_s())
                finally:
                    self._reserved -= 1
            if job is None:
                # Woken by a submission (here, or elsewhere through the change relay) or a freed slot, else
                # polls. asyncio.timeout, not wait_for: no extra task, so a wake-up is not a loop turn late.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.hub.poll_interval_s(self.settings.poll_interval_s)):
                        await self._wake.wait()
                continue
            self._start(job)
            self.hub.publish_all()  # queue positions moved

    def _start(self, job: Job) -> None:
        """Runs a job this replica now holds (RUNNING under its lease) in a worker slot."""
        self.hub.track(job)
        self._running[job.job_id] = _Running(job, cancelled=job.cancel_requested)
        metrics.JOBS_RUNNING.inc()
        # A fresh context: a job started inside a call (a submission while a slot is free) must not take
        # that call's deadline, request id or trace along (`_run` sets the job's own).
        task = asyncio.create_task(self._run(job), name=f"job-{job.job_id}", context=contextvars.Context())
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run(self, job: Job) -> None:
        with tracing.span_in(job.traceparent, "job", job_id=job.job_id, variant=job.variant):
            tracing.record_past("queue wait", job.created_at, job.started_at or time.time(), attempts=job.attempts)
            await self._run_traced(job)

    async def _run_traced(self, job: Job) -> None:
        token = request_id_var.set(job.request_id)
        running = self._running[job.job_id]
        facts = EventFacts.of_job(job)
        try:
            self.events.emit(facts.event(EventType.BACKEND_EVENT_TYPE_STARTED))
            self.hub.publish(job.job_id)
            result = await self._attempts(job, running)
            await self._succeed(job, result, facts)
        except _Failed as failed:
            await self._end(job, JobState.FAILED, facts, failure=failed.failure)
        except _Lost:
            self.hub.untrack(job.job_id)  # its watchers read the outcome from the store from now on
            self.hub.publish(job.job_id)
        except asyncio.CancelledError:
            if not running.cancelled:  # this replica is stopping: another run picks it up
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.release(job.job_id, self.settings.owner))
                raise
            await self._end(job, JobState.CANCELLED, facts)
        except Exception:
            log.exception("job failed unexpectedly", extra={"job_id": job.job_id})
            await self._end(job, JobState.FAILED, facts, failure=Failure("INTERNAL", "internal error"))
        finally:
            self._stop_persisting(running)
            self._running.pop(job.job_id, None)
            _gauge(running.held).dec()
            self.hub.untrack(job.job_id)
            self._wake.set()  # a worker slot is free
            request_id_var.reset(token)

    async def _attempts(self, job: Job, running: _Running) -> common_pb2.GenerationResult:
        """Runs the job on inference until it succeeds, waiting out outages and full queues (see above)."""
        pool = await self.pools.get(job.target)
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        tried: set[str] = set()
        while True:
            self._check_live(job, running, pool)
            replica = pool.pick(tried)
            if replica is None:
                tried.clear()
                if not pool.any_healthy:
                    await self._wait(job, running, NO_REPLICA, backoff.next_s(), pool)
                continue
            try:
                await self._resume(job, running)
                return await self._call(replica, job, running)
            except grpc.aio.AioRpcError as error:
                retry = self._retry_of(error, running)
            tried.add(replica.address)
            self._note_retry(job, running, pool, replica, retry)
            if pool.pick(tried) is not None:  # another replica may take it now
                if running.steps:
                    # It lost its replica mid-run: back to the queue, to run from the start after a jittered
                    # pause, so the jobs of a replica that died do not all land on the next one at once.
                    await self._wait(job, running, NO_REPLICA, backoff.next_s(), pool)
                continue
            tried.clear()
            reason = BUSY if retry.code == grpc.StatusCode.RESOURCE_EXHAUSTED else NO_REPLICA
            await self._wait(job, running, reason, backoff.next_s(retry.retry_after_s), pool)

    def _check_live(self, job: Job, running: _Running, pool: ReplicaPool) -> None:
        """Raises when the job must not try again: cancelled, or its deadline passed."""
        if running.cancelled:
            raise asyncio.CancelledError
        remaining = job.remaining_s()
        if remaining is not None and remaining <= 0:
            raise _Failed(Failure("DEADLINE_EXCEEDED", _deadline_message(job, running, pool)))

    @staticmethod
    def _retry_of(error: grpc.aio.AioRpcError, running: _Running) -> _Retry:
        """The retry a failed call calls for; raises when it ends the job instead."""
        code = error.code()
        if code == grpc.StatusCode.CANCELLED and running.cancelled:
            raise asyncio.CancelledError from None
        if code not in _RETRYABLE:  # CANCELLED not by us: the server stopped under the call
            raise _Failed(_failure_of(error)) from None
        asked = retry_delay_s(error) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
        return _Retry(code, error.details() or code.name, asked)

    @staticmethod
    def _note_retry(job: Job, running: _Running, pool: ReplicaPool, replica: Replica, retry: _Retry) -> None:
        metrics.INFERENCE_RETRIES.labels(retry.code.name).inc()
        running.last_error = f"{retry.code.name}: {retry.message}"
        running.last_code = retry.code
        if running.unserved_since is None:
            running.unserved_since = time.monotonic()
        if retry.code != grpc.StatusCode.RESOURCE_EXHAUSTED:  # a full queue is a healthy replica
            pool.mark_down(replica)
        log.info(
            "job will try inference again",
            extra={"job_id": job.job_id, "code": retry.code.name, "replica": replica.address},
        )

    async def _wait(self, job: Job, running: _Running, reason: str, delay_s: float, pool: ReplicaPool) -> None:
        """Holds the job in the queue for `reason` (see `JobStore.wait`) for up to `delay_s`: less when its
        deadline comes first, a replica comes up or it is cancelled."""
        if running.held != reason:
            waiting = await self._durably(job, lambda: self.store.wait(job.job_id, self.settings.owner, reason))
            if waiting is None:
                raise _Lost
            self._stop_persisting(running)
            running.steps = running.total_steps = 0
            self.hub.track(waiting)
            self.hub.publish_all()  # queue positions moved
            _move_gauge(running, reason)
            log.info("job waits in the queue", extra={"job_id": job.job_id, "reason": reason})
        if running.unserved_since is None:
            running.unserved_since = time.monotonic()
        remaining = job.remaining_s()
        if remaining is not None:
            delay_s = min(delay_s, max(remaining, 0.0))
        running.wake.clear()
        if delay_s <= 0 or running.cancelled:
            return
        with pool.wakes(running.wake), contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await running.wake.wait()

    async def _resume(self, job: Job, running: _Running) -> None:
        """A job held in the queue is RUNNING again, about to call inference."""
        if not running.held:
            return
        resumed = await self._durably(job, lambda: self.store.resume(job.job_id, self.settings.owner))
        if resumed is None:
            raise _Lost
        self.hub.track(resumed)
        self.hub.publish_all()  # queue positions moved
        _move_gauge(running, "")

    async def _call(self, replica: Replica, job: Job, running: _Running) -> common_pb2.GenerationResult:
        task = common_pb2.GenerationTask.FromString(job.task)
        which = task.WhichOneof("kind")
        assert which is not None, "tasks are validated before they are stored"
        methods = {
            "text_to_image": replica.stub.TextToImage,
            "inpaint": replica.stub.Inpaint,
            "outpaint": replica.stub.Outpaint,
            "edit": replica.stub.Edit,
        }
        method = methods[which]
        replica.in_flight += 1
        result: common_pb2.GenerationResult | None = None
        try:
            call = method(getattr(task, which), timeout=job.remaining_s())
            running.call = call
            # Read to the end of the stream (it ends right after the result): the call, and its client
            # span, are complete only then.
            async for event in call:
                if event.HasField("step"):
                    running.unserved_since = None
                    running.steps = event.step.step
                    running.total_steps = event.step.total_steps
                    self.hub.progress(job.job_id, running.steps, running.total_steps, event.step.preview)
                    if running.persister is None:
                        running.persister = asyncio.create_task(self._persist_progress(job.job_id, running))
                    if self.store.announces_progress and (running.announcer is None or running.announcer.done()):
                        running.announcer = asyncio.create_task(self._announce_steps(job.job_id, running))
                elif event.HasField("result"):
                    result = event.result
        finally:
            replica.in_flight -= 1
            running.call = None
            self._stop_persisting(running)
        if result is None:
            raise _Failed(Failure("INTERNAL", "inference ended the stream without a result"))
        return result

    async def _persist_progress(self, job_id: str, running: _Running) -> None:
        """Every `progress_persist_s` while the job runs, the newest progress (if it moved) to the store."""
        written = (0, 0)
        while True:
            await asyncio.sleep(self.settings.progress_persist_s)
            newest = (running.steps, running.total_steps)
            if newest == written:
                continue
            try:
                await self.store.progress(job_id, *newest)
                written = newest
            except Exception:  # progress is advisory: the next write catches up
                log.warning("persisting progress failed", exc_info=True, extra={"job_id": job_id})

    async def _announce_steps(self, job_id: str, running: _Running) -> None:
        """Announces the newest step until the announcements caught up (steps that came meanwhile merge)."""
        announced = 0
        while running.steps != announced:
            announced = running.steps
            try:
                await self.store.announce_progress(job_id, announced, running.total_steps)
            except Exception:  # advisory: the store's own progress and the end still reach every replica
                log.debug("announcing progress failed", exc_info=True, extra={"job_id": job_id})
                return

    @staticmethod
    def _stop_persisting(running: _Running) -> None:
        for task in (running.persister, running.announcer):
            if task is not None:
                task.cancel()
        running.persister = running.announcer = None

    async def _succeed(self, job: Job, result: common_pb2.GenerationResult, facts: EventFacts) -> None:
        if self.image_safety is not None:
            review = await asyncio.to_thread(self.image_safety.review, job.tenant_id, [i.data for i in result.images])
            if review.found:
                await self._act_on(job, result, facts, review)
                return
        if self.cache is not None and job.cache_key:
            try:
                await self.cache.put(job.cache_key, result.SerializeToString())
            except Exception:  # a cache outage must not fail a finished job
                log.exception("caching a result failed")
        await self._store_and_end(job, result, facts)

    async def _store_and_end(self, job: Job, result: common_pb2.GenerationResult, facts: EventFacts) -> None:
        """Saves the images in the image store and ends the job SUCCEEDED with them."""
        origin = {"job_id": job.job_id, "request_id": job.request_id, "user_id": job.user_id, "variant": job.variant}
        kept: dict[str, bytes] = {}
        for image in result.images:
            image.image_id = await self.images.save(job.tenant_id, image.data, image.format, origin)
            kept[image.image_id] = image.data
            image.data = b""
        self.hub.keep_images(job.job_id, kept)  # this replica's watchers send them without reading them back
        await self._end(job, JobState.SUCCEEDED, facts, result=result.SerializeToString())

    async def _act_on(self, job: Job, result: common_pb2.GenerationResult, facts: EventFacts, review: Review) -> None:
        """A result with unsafe images: the tenant's action (if it has one), an event per image found, and
        no caching."""
        assert self.image_safety is not None
        policy, action = self.image_safety.policy, review.action
        if action is None:
            await self._store_and_end(job, result, facts)
            return
        done = {Action.BLOCK: "blocked", Action.BLUR: "blurred", Action.FLAG: "flagged"}[action]
        for image, findings in zip(result.images, review.findings, strict=True):
            if findings:
                self.events.emit(
                    facts.event(EventType.BACKEND_EVENT_TYPE_IMAGE_FLAGGED, error_code=done, policy=policy)
                )
                if action == Action.BLUR:
                    image.data = await asyncio.to_thread(blurred, image.data, image.format)
        if action == Action.BLOCK:
            failure = Failure(
                "FAILED_PRECONDITION", f"an image was refused by the image safety policy {policy!r}", policy=policy
            )
            await self._end(job, JobState.FAILED, facts, failure=failure)
            return
        await self._store_and_end(job, result, facts)

    async def _end(
        self, job: Job, state: JobState, facts: EventFacts, *, result: bytes = b"", failure: Failure | None = None
    ) -> None:
        running = self._running.get(job.job_id)
        progress = None
        if running is not None:
            self._stop_persisting(running)  # no progress write after the end
            if running.steps:
                progress = (running.steps, running.total_steps)
        try:
            ended = await self._durably(
                job,
                lambda: self.store.finish(
                    job.job_id, self.settings.owner, state, result=result, failure=failure, progress=progress
                ),
            )
        except _Lost:
            ended = None  # its lease ran out while the store was down: whoever recovers it runs it again
        if ended is None:
            self.hub.untrack(job.job_id)  # its watchers read the outcome from the store from now on
            self.hub.publish(job.job_id)
            return  # the job was recovered by another replica meanwhile: its outcome is theirs
        self.hub.ended(ended)
        self._announce([ended])

    async def _durably(self, job: Job, write: Callable[[], Awaitable[_T]]) -> _T:
        """A store write about a job this replica holds, tried again while the store does not take it (a
        Redis restart), for as long as the job's lease lasts; `_Lost` after that: the lease is over, and
        the job another replica's (or this one's) to recover and run again."""
        give_up_at = time.monotonic() + self.settings.lease_s
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                return await write()
            except Exception:
                delay_s = backoff.next_s()
                if time.monotonic() + delay_s > give_up_at:
                    log.exception("the job store did not take a write; leaving the job", extra={"job_id": job.job_id})
                    raise _Lost from None
                log.warning("the job store did not take a write; trying again", extra={"job_id": job.job_id})
                await asyncio.sleep(delay_s)

    def _announce(self, jobs: list[Job]) -> None:
        """Events and wake-ups for jobs that reached their end."""
        kinds = {
            JobState.SUCCEEDED: EventType.BACKEND_EVENT_TYPE_SUCCEEDED,
            JobState.FAILED: EventType.BACKEND_EVENT_TYPE_FAILED,
            JobState.CANCELLED: EventType.BACKEND_EVENT_TYPE_CANCELLED,
        }
        for job in jobs:
            code = job.failure.code if job.failure else ""
            self.events.emit(EventFacts.of_job(job).event(kinds[job.state], error_code=code))
            self.hub.publish(job.job_id)

    async def _heartbeat(self) -> None:
        s = self.settings
        interval = min(s.lease_s / 3, max(s.poll_interval_s, 0.05) * 2.5)
        while True:
            await asyncio.sleep(interval)
            try:
                stop = await self.store.heartbeat(s.owner, list(self._running), s.lease_s)
                for job_id in stop:
                    self.cancel_local(job_id)
                self._announce(await self.store.recover(s.max_attempts))
            except Exception:
                log.exception("heartbeat failed")


def _gauge(held: str) -> Any:
    """The gauge a job of this replica counts in: running, or waiting for its reason."""
    return metrics.JOBS_WAITING.labels(_REASON_LABELS[held]) if held else metrics.JOBS_RUNNING


def _move_gauge(running: _Running, held: str) -> None:
    _gauge(running.held).dec()
    _gauge(held).inc()
    running.held = held


def _failure_of(error: grpc.aio.AioRpcError) -> Failure:
    """The failure a status inference ended a job's call with stands for."""
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:  # the call's timeout is the job's remaining time
        return Failure(code.name, "the job's deadline passed while inference ran it")
    fields = field_violations(error)
    return Failure(code.name, error.details() or code.name, fields[0][0] if fields else "")


def _deadline_message(job: Job, running: _Running, pool: ReplicaPool) -> str:
    """What a job whose deadline passed was waiting for, and for how long."""
    now = time.monotonic()
    if pool.down_since is not None:  # also for a job that waited for a worker all along
        age_s = max(time.time() - job.created_at, 0.0)
        what = f"no inference replica for {min(now - pool.down_since, age_s):.0f} s"
    elif running.unserved_since is not None:
        waited = now - running.unserved_since
        busy = running.last_code == grpc.StatusCode.RESOURCE_EXHAUSTED
        what = f"inference {'stayed busy' if busy else 'could not run it'} for {waited:.0f} s"
    else:
        return "the job's deadline passed before it finished"
    last = f" (last answer: {running.last_error})" if running.last_error else ""
    return f"{what}{last}; the job's deadline passed"
