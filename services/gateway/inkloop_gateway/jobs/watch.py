"""Following jobs: an in-process wake-up hub, and the WatchJob stream built on store snapshots.

Every state transition goes to the store first; the hub only wakes this replica's watchers so they
re-read it at once. Two exceptions: the hub holds the latest snapshot of every job running on this
replica (its dispatcher updates it on each denoising step; the store gets progress only now and then),
and the end of a job that ended here, as the store recorded it; this replica's watchers read those
from the hub. Changes made on other
replicas (Redis) reach the hub through the store's change notifications (`notify.ChangeRelay`), so a
watcher on any replica follows any job at once. Polling is the safety net for notifications lost while
the relay was not subscribed: every `poll_interval_s` while notifications do not flow (and with SQLite),
every `notified_poll_interval_s` while they do. A watcher emits an event whenever the state, the step
the queue position or the reason a queued job waits changes, and stops after the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from inkloop.v1 import common_pb2, gateway_pb2
from inkloop_gateway import metrics
from inkloop_gateway.api.protocol import job_event
from inkloop_gateway.jobs.store import Job, JobState, JobStore

#: Image bytes of the results that finished most recently on this replica, kept for its watchers.
_KEPT_IMAGE_BYTES = 16 << 20
#: Jobs that ended most recently on this replica, kept for its watchers (an ended job never changes).
_KEPT_ENDED_JOBS = 1024
#: Jobs of other replicas whose latest announced step is kept.
_KEPT_ANNOUNCED_JOBS = 4096


class Hub:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        #: Jobs running on this replica, with their latest progress (newer than the store's).
        self._running: dict[str, Job] = {}
        #: The latest live preview (step, JPEG) of jobs running here that asked for previews.
        self._previews: dict[str, tuple[int, bytes]] = {}
        self._ended: OrderedDict[str, Job] = OrderedDict()
        #: (step, total) of jobs running on other replicas, as they announced them (newer than the store's).
        self._announced: OrderedDict[str, tuple[int, int]] = OrderedDict()
        #: job id -> {image id: bytes} of recent results, so watchers here need not read them back.
        self._images: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._images_size = 0
        #: Poll interval while a relay pushes other replicas' changes here; None while nothing does.
        self._notified_poll_interval_s: float | None = None

    def notified(self, poll_interval_s: float | None) -> None:
        """Other replicas' changes are now pushed here (polling every `poll_interval_s` is then enough), or
        no longer (None); wakes every watcher either way, to re-read the store and take up the new interval."""
        self._notified_poll_interval_s = poll_interval_s
        self.publish_all()

    def poll_interval_s(self, configured_s: float) -> float:
        """How long to wait for a wake-up before re-reading the store: `configured_s`, or the longer
        notified interval while changes are pushed here."""
        notified_s = self._notified_poll_interval_s
        return configured_s if notified_s is None else max(configured_s, notified_s)

    def keep_images(self, job_id: str, images: dict[str, bytes]) -> None:
        """Keeps a just-stored result's images (by id) for a while; the oldest go past a byte budget."""
        self._images[job_id] = images
        self._images_size += sum(len(data) for data in images.values())
        while self._images_size > _KEPT_IMAGE_BYTES and self._images:
            _job_id, dropped = self._images.popitem(last=False)
            self._images_size -= sum(len(data) for data in dropped.values())
        metrics.KEPT_IMAGE_BYTES.set(self._images_size)

    def kept_image(self, job_id: str, image_id: str) -> bytes | None:
        """The bytes of an image of a recent result of this replica, or None (read it from the image store)."""
        return self._images.get(job_id, {}).get(image_id)

    def track(self, job: Job) -> None:
        """`job` (RUNNING) now runs on this replica: its progress is read from here until `untrack`."""
        self._running[job.job_id] = job

    def untrack(self, job_id: str) -> None:
        """The job stopped running here: the store holds its state (call after its transition committed)."""
        self._running.pop(job_id, None)
        self._previews.pop(job_id, None)

    def ended(self, job: Job) -> None:
        """`job` ended on this replica and the store recorded it so: its watchers here get the end from
        memory, without reading it back."""
        self._running.pop(job.job_id, None)
        self._previews.pop(job.job_id, None)
        self._ended[job.job_id] = job
        while len(self._ended) > _KEPT_ENDED_JOBS:
            self._ended.popitem(last=False)
        self.publish(job.job_id)

    def announced(self, job_id: str, step: int, total_steps: int) -> None:
        """A step another replica announced for a job it runs: watchers here show it without a store write."""
        if job_id in self._running or step <= self._announced.get(job_id, (0, 0))[0]:
            return  # runs here (the local snapshot is newer), or an older announcement arrived late
        self._announced[job_id] = (step, total_steps)
        self._announced.move_to_end(job_id)
        while len(self._announced) > _KEPT_ANNOUNCED_JOBS:
            self._announced.popitem(last=False)
        self.publish(job_id)

    def requeued(self, job_id: str) -> None:
        """The job went back to the queue: its next run counts its steps from 1 again."""
        self._announced.pop(job_id, None)

    def progress(self, job_id: str, step: int, total_steps: int, preview: bytes = b"") -> None:
        """Records a step of a job running here (and its live preview, if it has one) and wakes its watchers."""
        job = self._running.get(job_id)
        if job is not None:
            self._running[job_id] = job.with_(step=step, total_steps=total_steps)
            if preview:
                self._previews[job_id] = (step, preview)
        self.publish(job_id)

    def preview(self, job_id: str, step: int) -> bytes:
        """The live preview of a job running here at `step`; b"" when there is none (or on another replica)."""
        kept = self._previews.get(job_id)
        return kept[1] if kept is not None and kept[0] == step else b""

    def latest(self, job_id: str) -> Job | None:
        """The newest snapshot of a job running on this replica or just ended here; None: read the store."""
        return self._running.get(job_id) or self._ended.get(job_id)

    def current(self, job: Job) -> Job:
        """`job` as read from the store, with newer progress when this replica runs it or another announced it."""
        if job.state != JobState.RUNNING:
            return job
        live = self._running.get(job.job_id)
        step, total = (live.step, live.total_steps) if live is not None else self._announced.get(job.job_id, (0, 0))
        return job.with_(step=step, total_steps=total) if step > job.step else job

    def publish(self, job_id: str) -> None:
        for waiter in self._waiters.get(job_id, ()):
            waiter.set()

    def publish_all(self) -> None:
        """Wakes every watcher (queue positions moved)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        waiter = asyncio.Event()
        self._waiters[job_id].add(waiter)
        try:
            yield waiter
        finally:
            self._waiters[job_id].discard(waiter)
            if not self._waiters[job_id]:
                del self._waiters[job_id]


async def watch(
    store: JobStore,
    hub: Hub,
    job: Job,
    result_of: Callable[[Job], Awaitable[common_pb2.GenerationResult]],
    poll_interval_s: float,
    queue_reason: Callable[[Job], str] = lambda job: job.waiting,
) -> AsyncIterator[gateway_pb2.JobEvent]:
    """Events of `job` from its current state to its end; `result_of` gives the result with images,
    `queue_reason` why a queued job waits."""
    last: tuple[object, ...] | None = None
    with hub.subscribe(job.job_id) as changed:
        while True:
            queued = job.state == JobState.QUEUED
            position = await store.queue_position(job) if queued else 0
            reason = queue_reason(job) if queued else ""
            key = (job.state, job.step, position, reason)
            if key != last:
                last = key
                if job.state == JobState.SUCCEEDED:
                    yield job_event(job, result=await result_of(job))
                elif job.state != JobState.RUNNING or job.step > 0:
                    event = job_event(job, queue_position=position, queue_reason=reason)
                    if job.state == JobState.RUNNING:
                        event.running.preview = hub.preview(job.job_id, job.step)
                    yield event
            if job.state.terminal:
                return
            # asyncio.timeout, not wait_for: no extra task, so a wake-up is not a loop turn late.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hub.poll_interval_s(poll_interval_s)):
                    await changed.wait()
            changed.clear()
            job = hub.latest(job.job_id) or hub.current(await store.get(job.job_id))
