"""Back-end events: every step of a job's life, sent to analytics without ever slowing a request.

`EventSender.emit` only appends to a bounded in-memory buffer. A background task sends batches to
AnalyticsService.Ingest; when a call fails (analytics down, or not yet implementing Ingest) the
batch and everything behind it go to the on-disk spool and the sender backs off; once analytics
answers again the spool is replayed oldest first, then the buffer, so order and event ids are kept
(analytics deduplicates by id). On stop whatever is left is spooled, so a restart loses nothing.
The spool is `inkloop.spool` (one IngestRequest per record, its protobuf encoding in base64: a spill
of a full buffer is on the request path, and protobuf JSON costs ten times as much) in DROP_OLDEST
mode: a long outage costs the oldest events, counted and logged, never a request's latency or the disk.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from google.protobuf.message import DecodeError

from inkloop.generation import PB_OF_KIND, Kind
from inkloop.rpc.client import open_channel
from inkloop.spool import Spool, WhenFull
from inkloop.v1 import analytics_pb2, analytics_pb2_grpc, common_pb2
from inkloop_gateway import metrics
from inkloop_gateway.api.protocol import task_parameters
from inkloop_gateway.jobs.store import Job

log = logging.getLogger(__name__)

EventType = analytics_pb2.BackendEventType
_SEND_TIMEOUT_S = 5.0
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class EventFacts:
    """What every event of one request or job carries. Never the raw prompt: only its features."""

    tenant_id: str
    user_id: str
    request_id: str
    job_id: str
    variant: str
    kind: int
    width: int
    height: int
    steps: int
    true_cfg_scale: float
    num_images: int
    seed: int
    has_negative_prompt: bool
    prompt: bytes  # serialized analytics_pb2.PromptFeatures
    accepted_at: float
    #: An inpaint/outpaint's base image came from this request (REQUESTED events only).
    base_request_id: str = ""
    #: The prompt template the request was made from (REQUESTED events only).
    template_id: str = ""

    @classmethod
    def of_task(
        cls,
        task: common_pb2.GenerationTask,
        *,
        tenant_id: str,
        user_id: str,
        request_id: str,
        job_id: str = "",
        variant: str = "",
        prompt: bytes = b"",
        accepted_at: float | None = None,
    ) -> EventFacts:
        has_kind = task.WhichOneof("kind") is not None
        parameters = task_parameters(task) if has_kind else common_pb2.GenerationParameters()
        return cls(
            tenant_id=tenant_id,
            user_id=user_id,
            request_id=request_id,
            job_id=job_id,
            variant=variant,
            kind=PB_OF_KIND.get(cast(Kind, task.WhichOneof("kind") or ""), 0),
            width=parameters.width,
            height=parameters.height,
            steps=parameters.steps,
            true_cfg_scale=parameters.true_cfg_scale,
            num_images=parameters.num_images or 1,
            seed=parameters.seed,
            has_negative_prompt=bool(parameters.negative_prompt.strip()),
            prompt=prompt,
            accepted_at=time.time() if accepted_at is None else accepted_at,
        )

    @classmethod
    def of_job(cls, job: Job) -> EventFacts:
        return cls.of_task(
            common_pb2.GenerationTask.FromString(job.task),
            tenant_id=job.tenant_id,
            user_id=job.user_id,
            request_id=job.request_id,
            job_id=job.job_id,
            variant=job.variant,
            prompt=job.prompt_features,
            accepted_at=job.created_at,
        )

    @classmethod
    def of_download(cls, tenant_id: str, origin: dict[str, str]) -> EventFacts:
        """A download: who and which job (from the image's origin record); no generation parameters."""
        return cls(
            tenant_id=tenant_id,
            user_id=origin.get("user_id", ""),
            request_id=origin.get("request_id", ""),
            job_id=origin.get("job_id", ""),
            variant=origin.get("variant", ""),
            kind=0,
            width=0,
            height=0,
            steps=0,
            true_cfg_scale=0.0,
            num_images=0,
            seed=0,
            has_negative_prompt=False,
            prompt=b"",
            accepted_at=time.time(),
        )

    @functools.cached_property
    def _shared(self) -> analytics_pb2.BackendEvent:
        """The fields every event of these facts carries, built once (a request emits several)."""
        shared = analytics_pb2.BackendEvent(
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            request_id=self.request_id,
            job_id=self.job_id,
            variant=self.variant,
            kind=cast(common_pb2.GenerationKind, self.kind),
            width=self.width,
            height=self.height,
            steps=self.steps,
            true_cfg_scale=self.true_cfg_scale,
            num_images=self.num_images,
            seed=self.seed,
            has_negative_prompt=self.has_negative_prompt,
            base_request_id=self.base_request_id,
            template_id=self.template_id,
        )
        if self.prompt:
            shared.prompt.ParseFromString(self.prompt)
        return shared

    def event(self, kind: int, *, error_code: str = "", policy: str = "") -> analytics_pb2.BackendEvent:
        now = time.time()
        event = analytics_pb2.BackendEvent()
        event.CopyFrom(self._shared)
        event.event_id = str(uuid.uuid4())
        event.time.FromNanoseconds(int(now * 1e9))
        event.type = cast(analytics_pb2.BackendEventType, kind)
        event.latency_s = 0.0 if kind == EventType.BACKEND_EVENT_TYPE_REQUESTED else max(now - self.accepted_at, 0.0)
        event.error_code = error_code
        event.policy = policy
        return event


class EventSender:
    def __init__(
        self,
        target: str,
        spool_dir: Path,
        *,
        batch_size: int,
        flush_interval_s: float,
        buffer_size: int,
        spool_max_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._target = target
        self._credentials = credentials
        self._spool = Spool(spool_dir, name="gateway-events", max_bytes=spool_max_bytes, when_full=WhenFull.DROP_OLDEST)
        _adopt_batch_files(spool_dir, self._spool)
        # Records of the oldest segment already delivered, so a retry resumes where it failed.
        self._delivered: dict[str, int] = {}
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._buffer_size = buffer_size
        self._buffer: deque[analytics_pb2.BackendEvent] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: analytics_pb2_grpc.AnalyticsServiceStub | None = None

    @property
    def spool(self) -> Spool:
        return self._spool

    def emit(self, event: analytics_pb2.BackendEvent) -> None:
        """Queues one event; never blocks on the network and never raises."""
        metrics.count_event(event)
        self._buffer.append(event)
        if len(self._buffer) >= self._buffer_size:
            # Analytics is not keeping up: move the buffer to disk rather than grow without bound.
            self._spill()
        elif len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._channel = open_channel(self._target, credentials=self._credentials)
        self._stub = analytics_pb2_grpc.AnalyticsServiceStub(self._channel)
        self._task = asyncio.create_task(self._run(), name="event-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=2.0)
        self._spill()  # whatever could not be sent waits on disk for the next start
        if self._channel is not None:
            await self._channel.close()

    async def flush(self) -> bool:
        """Sends the spool, oldest first, then the buffer; False (everything unsent on disk) when analytics fails."""
        while (segment := self._spool.oldest()) is not None:
            records = self._spool.read(segment)
            for position in range(self._delivered.get(segment.name, 0), len(records)):
                try:
                    request = _decode(records[position])
                except (binascii.Error, DecodeError):
                    log.exception("event spool record %d of %s cannot be read; skipped", position, segment.name)
                    continue
                if not await self._send(request):
                    self._spill()
                    return False
                self._delivered[segment.name] = position + 1
            self._spool.remove(segment)
            self._delivered.pop(segment.name, None)
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
            if not await self._send(analytics_pb2.IngestRequest(backend=batch, batch_id=str(uuid.uuid4()))):
                self._buffer.extendleft(reversed(batch))  # first in line again, then to disk with the rest
                self._spill()
                return False
        return True

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff or self._flush_interval_s)
            self._wake.clear()
            if not self._buffer and self._spool.empty():
                continue
            try:
                delivered = await self.flush()
            except Exception:  # a bug here must not kill the sender: keep events, try later
                log.exception("event flush failed")
                delivered = False
            backoff = 0.0 if delivered else min(max(backoff * 2, self._flush_interval_s), _MAX_BACKOFF_S)

    async def _send(self, request: analytics_pb2.IngestRequest) -> bool:
        assert self._stub is not None
        try:
            await self._stub.Ingest(request, timeout=_SEND_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            log.info("analytics did not take events; keeping them", extra={"code": error.code().name})
            return False
        metrics.EVENTS_SENT.inc(len(request.backend))
        return True

    def _spill(self) -> None:
        """Moves the buffer to the spool, in batches, with one fsync."""
        batches = []
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
            batches.append(analytics_pb2.IngestRequest(backend=batch, batch_id=str(uuid.uuid4())))
        if batches:
            self._spool.append_many([_encode(request) for request in batches])
            metrics.EVENTS_SPOOLED.inc(sum(len(request.backend) for request in batches))


def _encode(request: analytics_pb2.IngestRequest) -> bytes:
    return base64.b64encode(request.SerializeToString())


def _decode(record: bytes) -> analytics_pb2.IngestRequest:
    return analytics_pb2.IngestRequest.FromString(base64.b64decode(record, validate=True))


def _adopt_batch_files(directory: Path, spool: Spool) -> None:
    """Batches spooled by earlier versions (one serialized IngestRequest per `.batch` file) join the spool."""
    files = sorted(directory.glob("*.batch"))
    if files:
        spool.append_many([_encode(analytics_pb2.IngestRequest.FromString(path.read_bytes())) for path in files])
        for path in files:
            path.unlink()
        log.info("moved spooled event batches of an earlier version into the spool", extra={"batches": len(files)})
