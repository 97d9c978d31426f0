"""Following a job's event stream: progress callbacks on the way, its outcome at the terminal event."""

from __future__ import annotations

from collections.abc import Callable

from inkloop.client.errors import JobCancelledError, JobFailedError
from inkloop.client.results import Failure
from inkloop.v1 import common_pb2, gateway_pb2

#: Called after each denoising step: (step, total_steps), step counting from 1.
OnProgress = Callable[[int, int], None]
#: Called while the job waits: (requests ahead of it, why it waits besides its turn or "").
OnQueued = Callable[[int, str], None]


class EventReader:
    """Reads the events of one job (of one or more streams, when a retry follows it again)."""

    def __init__(self, on_progress: OnProgress | None, on_queued: OnQueued | None) -> None:
        self.on_progress = on_progress
        self.on_queued = on_queued
        self.job_id = ""
        self.variant = ""

    def read(self, event: gateway_pb2.JobEvent, attempts: int) -> common_pb2.GenerationResult | None:
        """The result at a `succeeded` event, None before the end; raises at `failed` or `cancelled`."""
        self.job_id = event.job_id or self.job_id
        self.variant = event.variant or self.variant
        which = event.WhichOneof("event")
        if which == "queued" and self.on_queued is not None:
            self.on_queued(event.queued.position, event.queued.reason)
        elif which == "running" and self.on_progress is not None:
            self.on_progress(event.running.step, event.running.total_steps)
        elif which == "succeeded":
            return event.succeeded
        elif which == "failed":
            raise JobFailedError(event.job_id, Failure.from_pb(event.failed), attempts=attempts)
        elif which == "cancelled":
            raise JobCancelledError(event.job_id, event.cancelled.steps_completed, attempts=attempts)
        return None
