"""Dispatch: a bounded number of worker slots per gateway replica runs jobs on inference replicas.

A job submitted here while a slot is free and nothing is queued starts at once: the store records it
RUNNING under this replica's lease in the same write that stores it. Otherwise it is queued, and a
claim loop takes queued jobs from the store (tenants take turns) whenever a slot frees up or a job
is queued (elsewhere: the change relay wakes it; polling is the safety net). A running job calls its
variant's inference target on the least-loaded healthy replica and streams the steps to this
replica's watchers through the hub; the store gets the newest progress at most every
`progress_persist_s`, in the background, so that watchers on other replicas see it too (a job
shorter than that never writes progress before it ends, and its end records the last step).
UNAVAILABLE moves the job to another replica, a bounded number of times; the job's deadline bounds
the call. A heartbeat keeps this replica's leases alive, learns of cancellations requested through
other replicas, and recovers jobs whose replica died. Cancelling a job cancels its inference call,
which stops the denoising loop at the next step. On stop, running jobs go back to the queue for the
next replica or restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from inkloop.logs import request_id_var
from inkloop.rpc.status import field_violations
from inkloop.v1 import common_pb2
from inkloop_gateway import metrics
from inkloop_gateway.events import EventFacts, EventSender, EventType
from inkloop_gateway.images import ImageStore
from inkloop_gateway.jobs import Failure, Job, JobState, JobStore, Lease
from inkloop_gateway.replicas import Pools, ReplicaPool
from inkloop_gateway.watch import Hub

log = logging.getLogger(__name__)


class ResultSink(Protocol):
    async def put(self, key: str, value: bytes) -> None: ...


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


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


@dataclass
class DispatchSettings:
    workers: int
    lease_s: float
    poll_interval_s: float
    inference_retries: int
    max_attempts: int
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
    ) -> None:
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
        if self._free_slots() > 0:
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
        """Stops the inference call of a job running on this replica; False when it runs elsewhere."""
        running = self._running.get(job_id)
        if running is None:
            return False
        running.cancelled = True
        if running.call is not None:
            running.call.cancel()
        return True

    def _free_slots(self) -> int:
        return self.settings.workers - len(self._running) - self._reserved

    async def _claim_loop(self) -> None:
        """Claims queued jobs from the store while this replica has free worker slots."""
        while True:
            self._wake.clear()
            job = None
            if self._free_slots() > 0:
                self._reserved += 1
                try:
                    job = await self.store.claim(self.settings.owner, self.settings.lease_s)
                except Exception:  # the store is down: try again shortly
                    log.exception("claiming a job failed")
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
        task = asyncio.create_task(self._run(job), name=f"job-{job.job_id}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run(self, job: Job) -> None:
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
            metrics.JOBS_RUNNING.dec()
            self.hub.untrack(job.job_id)
            self._wake.set()  # a worker slot is free
            request_id_var.reset(token)

    async def _attempts(self, job: Job, running: _Running) -> common_pb2.GenerationResult:
        pool = await self.pools.get(job.target)
        tried: set[str] = set()
        for attempt in range(self.settings.inference_retries + 1):
            if running.cancelled:
                raise asyncio.CancelledError
            remaining = job.remaining_s()
            if remaining is not None and remaining <= 0:
                raise _Failed(Failure("DEADLINE_EXCEEDED", "the job's deadline passed before it finished"))
            replica = pool.pick(tried)
            tried.add(replica.address)
            try:
                return await self._call(pool, replica.address, job, running, remaining)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code == grpc.StatusCode.CANCELLED and running.cancelled:
                    raise asyncio.CancelledError from None
                retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
                if code == grpc.StatusCode.UNAVAILABLE:
                    pool.mark_down(replica)
                if retryable and attempt < self.settings.inference_retries:
                    log.info("retrying job on another replica", extra={"job_id": job.job_id, "code": code.name})
                    continue
                fields = field_violations(error)
                raise _Failed(
                    Failure(code.name, error.details() or code.name, fields[0][0] if fields else "")
                ) from None
        raise AssertionError("unreachable")

    async def _call(
        self, pool: ReplicaPool, address: str, job: Job, running: _Running, remaining_s: float | None
    ) -> common_pb2.GenerationResult:
        replica = pool.replicas[address]
        task = common_pb2.GenerationTask.FromString(job.task)
        which = task.WhichOneof("kind")
        method = {"text_to_image": replica.stub.TextToImage, "inpaint": replica.stub.Inpaint}.get(
            which or "", replica.stub.Outpaint
        )
        replica.in_flight += 1
        try:
            call = method(getattr(task, which or "outpaint"), timeout=remaining_s)
            running.call = call
            async for event in call:
                if event.HasField("step"):
                    running.steps = event.step.step
                    running.total_steps = event.step.total_steps
                    self.hub.progress(job.job_id, running.steps, running.total_steps)
                    if running.persister is None:
                        running.persister = asyncio.create_task(self._persist_progress(job.job_id, running))
                    if self.store.announces_progress and (running.announcer is None or running.announcer.done()):
                        running.announcer = asyncio.create_task(self._announce_steps(job.job_id, running))
                elif event.HasField("result"):
                    return event.result
        finally:
            replica.in_flight -= 1
            running.call = None
            self._stop_persisting(running)
        raise _Failed(Failure("INTERNAL", "inference ended the stream without a result"))

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
        if self.cache is not None and job.cache_key:
            try:
                await self.cache.put(job.cache_key, result.SerializeToString())
            except Exception:  # a cache outage must not fail a finished job
                log.exception("caching a result failed")
        origin = {"job_id": job.job_id, "request_id": job.request_id, "user_id": job.user_id, "variant": job.variant}
        kept: dict[str, bytes] = {}
        for image in result.images:
            image.image_id = await self.images.save(job.tenant_id, image.data, image.format, origin)
            kept[image.image_id] = image.data
            image.data = b""
        self.hub.keep_images(job.job_id, kept)  # this replica's watchers send them without reading them back
        await self._end(job, JobState.SUCCEEDED, facts, result=result.SerializeToString())

    async def _end(
        self, job: Job, state: JobState, facts: EventFacts, *, result: bytes = b"", failure: Failure | None = None
    ) -> None:
        running = self._running.get(job.job_id)
        progress = None
        if running is not None:
            self._stop_persisting(running)  # no progress write after the end
            if running.steps:
                progress = (running.steps, running.total_steps)
        ended = await self.store.finish(
            job.job_id, self.settings.owner, state, result=result, failure=failure, progress=progress
        )
        if ended is None:
            self.hub.untrack(job.job_id)  # its watchers read the outcome from the store from now on
            self.hub.publish(job.job_id)
            return  # the job was recovered by another replica meanwhile: its outcome is theirs
        self.hub.ended(ended)
        self._announce([ended])

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
