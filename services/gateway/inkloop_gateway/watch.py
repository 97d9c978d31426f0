"""Following jobs: an in-process wake-up hub, and the WatchJob stream built on store snapshots.

Every change goes to the store first; the hub only wakes this replica's watchers so they re-read
it at once. Changes made on other replicas (Redis) are seen by polling every `poll_interval_s`, so
a watcher on any replica follows any job. A watcher emits an event whenever the state, the step or
the queue position changes, and stops after the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from inkloop.v1 import common_pb2, gateway_pb2
from inkloop_gateway.jobs import Job, JobState, JobStore
from inkloop_gateway.protocol import job_event


class Hub:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

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
) -> AsyncIterator[gateway_pb2.JobEvent]:
    """Events of `job` from its current state to its end; `result_of` gives the result with images."""
    last: tuple[object, ...] | None = None
    with hub.subscribe(job.job_id) as changed:
        while True:
            position = await store.queue_position(job) if job.state == JobState.QUEUED else 0
            key = (job.state, job.step, position)
            if key != last:
                last = key
                if job.state == JobState.SUCCEEDED:
                    yield job_event(job, result=await result_of(job))
                elif job.state != JobState.RUNNING or job.step > 0:
                    yield job_event(job, queue_position=position)
            if job.state.terminal:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), poll_interval_s)
            changed.clear()
            job = await store.get(job.job_id)
