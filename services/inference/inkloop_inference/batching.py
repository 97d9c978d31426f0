"""Dynamic batching in the manner of Triton's dynamic batcher.

Requests wait in one bounded FIFO queue. The oldest request opens a batch; compatible requests (same
`batch_key`: kind, size, steps, CFG mode) that arrive within `max_queue_delay_s` of it join, up to
`max_batch_size`, and the batch runs as one pipeline call on a single worker thread. Older requests
are never overtaken by younger ones of another shape: the oldest always opens the next batch.

Each caller gets an async stream of events: `Queued` whenever its position changes, one `Step` per
denoising step, then `Done`. Leaving the stream early (the gRPC call was cancelled) cancels the
request: a waiting request leaves the queue at once; a running batch stops at the next step once
every request in it has been cancelled (a cancelled request that shares a batch with live ones is
carried to the end of that call and its images dropped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Gauge, Histogram

from inkloop import errors

Request = TypeVar("Request")
Result = TypeVar("Result")

QUEUE_DEPTH = Gauge("inkloop_inference_queue_depth", "Requests waiting for a worker.")
BATCH_SIZE = Histogram("inkloop_inference_batch_size", "Requests per pipeline call.", buckets=(1, 2, 3, 4, 6, 8, 16))
BATCH_SECONDS = Histogram(
    "inkloop_inference_batch_seconds",
    "Duration of one pipeline call in seconds.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)


@dataclass(frozen=True)
class Queued:
    position: int  # requests ahead of this one


@dataclass(frozen=True)
class Step:
    step: int  # 1..total
    total: int
    elapsed_s: float  # since the batch started running
    preview: bytes = b""  # a live preview of this request's image, when it asked for one now


#: After each denoising step: (step, total, one preview per request of the batch, b"" = none).
OnStep = Callable[[int, int, Sequence[bytes]], None]


@dataclass(frozen=True)
class Done(Generic[Result]):
    result: Result
    queue_s: float
    batch_size: int


Event = Queued | Step | Done[Any]


class RunBatch(Protocol[Request, Result]):
    def __call__(
        self,
        requests: list[Request],
        *,
        on_step: OnStep,
        should_cancel: Callable[[], bool],
    ) -> list[Result]: ...


@dataclass(eq=False)
class _Ticket(Generic[Request]):
    request: Request
    key: Hashable
    enqueued_at: float = field(default_factory=time.monotonic)
    events: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    position: int = -1


class Batcher(Generic[Request, Result]):
    def __init__(
        self,
        run_batch: RunBatch[Request, Result],
        batch_key: Callable[[Request], Hashable],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        capacity: int,
    ) -> None:
        self._run_batch = run_batch
        self._batch_key = batch_key
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.capacity = capacity
        self._waiting: list[_Ticket[Request]] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        # Moving average of a batch's duration: the basis of the retry delay when the queue is full.
        self._batch_seconds = 1.0

    def start(self) -> None:
        self._worker = asyncio.create_task(self._serve(), name="batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._waiting)

    async def generate(self, request: Request) -> AsyncIterator[Event]:
        """Queues `request` and yields its events until `Done`; raises what the pipeline raised."""
        ticket = self._enqueue(request)
        try:
            while True:
                event = await ticket.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event  # type: ignore[misc]
                if isinstance(event, Done):
                    return
        finally:
            ticket.cancelled = True
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._publish_positions()

    def _enqueue(self, request: Request) -> _Ticket[Request]:
        if len(self._waiting) >= self.capacity:
            batches_ahead = len(self._waiting) / self.max_batch_size + 1
            raise errors.ResourceExhausted(
                f"the inference queue is full ({self.capacity} requests waiting)",
                retry_after_s=round(batches_ahead * self._batch_seconds, 3),
                subject="inference-queue",
                quota=f"{self.capacity} waiting requests",
            )
        ticket = _Ticket(request, self._batch_key(request))
        self._waiting.append(ticket)
        self._publish_positions()
        self._arrived.set()
        return ticket

    def _publish_positions(self) -> None:
        QUEUE_DEPTH.set(len(self._waiting))
        for position, ticket in enumerate(self._waiting):
            if ticket.position != position:
                ticket.position = position
                ticket.events.put_nowait(Queued(position))

    def _companions(self, first: _Ticket[Request]) -> list[_Ticket[Request]]:
        same = [t for t in self._waiting if t.key == first.key and not t.cancelled]
        return same[: self.max_batch_size]

    async def _next_batch(self) -> list[_Ticket[Request]]:
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._waiting[0]
        deadline = first.enqueued_at + self.max_queue_delay_s
        while len(self._companions(first)) < self.max_batch_size and first in self._waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        if first not in self._waiting:  # its caller left while we waited: start over
            return []
        batch = self._companions(first)
        for ticket in batch:
            self._waiting.remove(ticket)
        self._publish_positions()
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Ticket[Request]]) -> None:
        started = time.monotonic()

        def on_step(step: int, total: int, previews: Sequence[bytes] = ()) -> None:  # on the worker thread
            elapsed = time.monotonic() - started
            for index, ticket in enumerate(batch):
                preview = previews[index] if index < len(previews) else b""
                loop.call_soon_threadsafe(ticket.events.put_nowait, Step(step, total, elapsed, preview))

        def should_cancel() -> bool:
            return all(ticket.cancelled for ticket in batch)

        BATCH_SIZE.observe(len(batch))
        try:
            results = await loop.run_in_executor(
                self._executor,
                lambda: self._run_batch([t.request for t in batch], on_step=on_step, should_cancel=should_cancel),
            )
        except Exception as error:  # every caller of the batch learns what happened
            for ticket in batch:
                ticket.events.put_nowait(error)
            return
        finally:
            elapsed = time.monotonic() - started
            BATCH_SECONDS.observe(elapsed)
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
        for ticket, result in zip(batch, results, strict=True):
            ticket.events.put_nowait(Done(result, queue_s=started - ticket.enqueued_at, batch_size=len(batch)))
