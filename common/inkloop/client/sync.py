"""`Client`: the gateway's jobs API over a blocking gRPC channel, with retries and deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from inkloop.client.channel import (
    CLIENT_CHANNEL_OPTIONS,
    StreamEnded,
    metadata,
    new_request_id,
    no_images,
    stream_ended,
)
from inkloop.client.errors import InkloopClientError
from inkloop.client.progress import EventReader, OnProgress, OnQueued
from inkloop.client.results import Generation, Image, Job, JobState
from inkloop.client.retry import Deadline, OnRetry, Retry, RetryPolicy
from inkloop.client.tasks import Edit, ImageInput, Inpaint, Outpaint, Task, TextToImage, image_bytes
from inkloop.rpc.client import channel_options
from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

T = TypeVar("T")


class Client:
    """A blocking client of the gateway (`target` "host:port"), authenticated by `api_key`.

    Every method takes `deadline_s`, the whole call's budget in seconds, retries included (default:
    the client's `deadline_s`; None = no deadline). UNAVAILABLE and RESOURCE_EXHAUSTED are retried
    as `retry` says, honouring the server's RetryInfo; `on_retry` hears of each retry. Submissions
    carry a `request_id` (a new one unless given), the same on every retry, so a retried submission
    is answered with the job the first attempt created. Errors are `InkloopClientError`s; a job that
    fails or is cancelled raises `JobFailedError` / `JobCancelledError`.

        with Client("127.0.0.1:50051", api_key=key) as client:
            result = client.generate("a fox in a straw hat", seed=7, on_progress=print)
            result.image.save("fox.png")
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: str,
        credentials: grpc.ChannelCredentials | None = None,
        deadline_s: float | None = None,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        user_id: str = "",
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        merged = channel_options([*CLIENT_CHANNEL_OPTIONS, *options])
        self._channel = (
            grpc.insecure_channel(target, options=merged)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=merged)
        )
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self.api_key = api_key
        self.deadline_s = deadline_s
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.user_id = user_id

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # Generations, followed to their end.

    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        width: int = 0,
        height: int = 0,
        steps: int = 0,
        true_cfg_scale: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        output_format: str = "png",
        template_id: str = "",
        request_id: str | None = None,
        on_progress: OnProgress | None = None,
        on_queued: OnQueued | None = None,
        deadline_s: float | None = None,
    ) -> Generation:
        """A new image from `prompt` (zero values: the model's defaults; no seed: the gateway picks one)."""
        task = TextToImage(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
            output_format=output_format,
        )
        return self.run(
            task,
            template_id=template_id,
            request_id=request_id,
            on_progress=on_progress,
            on_queued=on_queued,
            deadline_s=deadline_s,
        )

    def inpaint(
        self,
        prompt: str,
        *,
        image: ImageInput,
        mask: ImageInput,
        feather_px: int = 0,
        negative_prompt: str = "",
        steps: int = 0,
        true_cfg_scale: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        output_format: str = "png",
        request_id: str | None = None,
        on_progress: OnProgress | None = None,
        on_queued: OnQueued | None = None,
        deadline_s: float | None = None,
    ) -> Generation:
        """Repaints the white part of `mask` (bytes or a path, of `image`'s size); the rest is kept exactly."""
        task = Inpaint(
            prompt=prompt,
            image=image_bytes(image),
            mask=image_bytes(mask),
            feather_px=feather_px,
            negative_prompt=negative_prompt,
            steps=steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
            output_format=output_format,
        )
        return self.run(
            task, request_id=request_id, on_progress=on_progress, on_queued=on_queued, deadline_s=deadline_s
        )

    def outpaint(
        self,
        prompt: str,
        *,
        image: ImageInput,
        left: int = 0,
        top: int = 0,
        right: int = 0,
        bottom: int = 0,
        feather_px: int = 0,
        negative_prompt: str = "",
        steps: int = 0,
        true_cfg_scale: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        output_format: str = "png",
        request_id: str | None = None,
        on_progress: OnProgress | None = None,
        on_queued: OnQueued | None = None,
        deadline_s: float | None = None,
    ) -> Generation:
        """Extends `image`'s canvas by the given pixels per side; the original pixels are kept exactly."""
        task = Outpaint(
            prompt=prompt,
            image=image_bytes(image),
            left=left,
            top=top,
            right=right,
            bottom=bottom,
            feather_px=feather_px,
            negative_prompt=negative_prompt,
            steps=steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
            output_format=output_format,
        )
        return self.run(
            task, request_id=request_id, on_progress=on_progress, on_queued=on_queued, deadline_s=deadline_s
        )

    def edit(
        self,
        instruction: str,
        *,
        image: ImageInput,
        width: int = 0,
        height: int = 0,
        negative_prompt: str = "",
        steps: int = 0,
        true_cfg_scale: float | None = None,
        seed: int | None = None,
        num_images: int = 1,
        output_format: str = "png",
        request_id: str | None = None,
        on_progress: OnProgress | None = None,
        on_queued: OnQueued | None = None,
        deadline_s: float | None = None,
    ) -> Generation:
        """Changes `image` (bytes or a path) as `instruction` says ("make the sky pink"), no mask."""
        task = Edit(
            prompt=instruction,
            image=image_bytes(image),
            width=width,
            height=height,
            negative_prompt=negative_prompt,
            steps=steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
            output_format=output_format,
        )
        return self.run(
            task, request_id=request_id, on_progress=on_progress, on_queued=on_queued, deadline_s=deadline_s
        )

    def run(
        self,
        task: Task,
        *,
        template_id: str = "",
        user_id: str | None = None,
        request_id: str | None = None,
        on_progress: OnProgress | None = None,
        on_queued: OnQueued | None = None,
        deadline_s: float | None = None,
    ) -> Generation:
        """Submits `task` and follows it to its end in one call (Generate); the images come with it and
        count as downloaded. `cache_hit` is read from the job after the stream (one GetJob)."""
        request = gateway_pb2.GenerateRequest(
            request_id=request_id or new_request_id(),
            task=task.to_pb(),
            user_id=self.user_id if user_id is None else user_id,
            template_id=template_id,
        )
        reader = EventReader(on_progress, on_queued)
        deadline = self._deadline(deadline_s)

        def attempt(timeout_s: float | None, attempts: int) -> common_pb2.GenerationResult:
            stream = self._stub.Generate(
                request, metadata=metadata(self.api_key, request.request_id), timeout=timeout_s
            )
            return _follow(stream, reader, attempts)

        result = self._retrying(deadline, attempt)
        job = self._get(reader.job_id, include_images=False, deadline=deadline)
        return Generation.from_pb(
            result, job_id=job.job_id, request_id=job.request_id, variant=reader.variant, cache_hit=job.cache_hit
        )

    # Jobs, one call each.

    def submit(
        self,
        task: Task,
        *,
        template_id: str = "",
        user_id: str | None = None,
        request_id: str | None = None,
        deadline_s: float | None = None,
    ) -> Job:
        """Queues `task` and returns its job at once (already SUCCEEDED on a cache hit); `watch` follows it."""
        request = gateway_pb2.SubmitJobRequest(
            request_id=request_id or new_request_id(),
            task=task.to_pb(),
            user_id=self.user_id if user_id is None else user_id,
            template_id=template_id,
        )

        def attempt(timeout_s: float | None, _attempts: int) -> Job:
            call_metadata = metadata(self.api_key, request.request_id)
            return Job.from_pb(self._stub.SubmitJob(request, metadata=call_metadata, timeout=timeout_s).job)

        return self._retrying(self._deadline(deadline_s), attempt)

    def get(self, job_id: str, *, include_images: bool = False, deadline_s: float | None = None) -> Job:
        """The job's current state; with `include_images` its result's bytes too (counted as a download)."""
        return self._get(job_id, include_images=include_images, deadline=self._deadline(deadline_s))

    def watch(
        self,
        job_id: str,
        *,
        on_progress: OnProgress | None = None,
        on_queued: OnQueued | None = None,
        deadline_s: float | None = None,
    ) -> Generation:
        """Follows a job from its current state to its end; its result, with the image bytes (analytics
        counts a watch as progress, not as a download: `download` is one)."""
        request = gateway_pb2.WatchJobRequest(job_id=job_id)
        reader = EventReader(on_progress, on_queued)
        deadline = self._deadline(deadline_s)

        def attempt(timeout_s: float | None, attempts: int) -> common_pb2.GenerationResult:
            return _follow(
                self._stub.WatchJob(request, metadata=metadata(self.api_key), timeout=timeout_s), reader, attempts
            )

        result = self._retrying(deadline, attempt)
        job = self._get(job_id, include_images=False, deadline=deadline)
        return Generation.from_pb(
            result, job_id=job_id, request_id=job.request_id, variant=job.variant, cache_hit=job.cache_hit
        )

    def cancel(self, job_id: str, *, deadline_s: float | None = None) -> Job:
        """Cancels a job: running work stops at its next step. A finished job is FAILED_PRECONDITION."""
        request = gateway_pb2.CancelJobRequest(job_id=job_id)

        def attempt(timeout_s: float | None, _attempts: int) -> Job:
            return Job.from_pb(self._stub.CancelJob(request, metadata=metadata(self.api_key), timeout=timeout_s).job)

        return self._retrying(self._deadline(deadline_s), attempt)

    def download(self, job_id: str, *, deadline_s: float | None = None) -> tuple[Image, ...]:
        """The images of a succeeded job, with their bytes (each counted as a download)."""
        job = self._get(job_id, include_images=True, deadline=self._deadline(deadline_s))
        if job.state != JobState.SUCCEEDED:
            raise no_images(job)
        return job.images

    # The retry loop.

    def _get(self, job_id: str, *, include_images: bool, deadline: Deadline) -> Job:
        request = gateway_pb2.GetJobRequest(job_id=job_id, include_images=include_images)

        def attempt(timeout_s: float | None, _attempts: int) -> Job:
            return Job.from_pb(self._stub.GetJob(request, metadata=metadata(self.api_key), timeout=timeout_s).job)

        return self._retrying(deadline, attempt)

    def _deadline(self, deadline_s: float | None) -> Deadline:
        return Deadline(self.deadline_s if deadline_s is None else deadline_s)

    def _retrying(self, deadline: Deadline, attempt: Callable[[float | None, int], T]) -> T:
        attempts = 1
        while True:
            try:
                return attempt(deadline.remaining_s(), attempts)
            except grpc.RpcError as error:
                failure = InkloopClientError.from_rpc(error, attempts=attempts)
                cause: BaseException = error
            except StreamEnded as error:
                failure = stream_ended(attempts)
                cause = error
            delay = self.retry.delay_s(attempts, failure.code, failure.retry_delay_s)
            if delay is None or not deadline.allows(delay):
                raise failure from cause
            if self.on_retry is not None:
                self.on_retry(Retry(attempts, failure.code, failure.message, delay, failure.retry_delay_s))
            time.sleep(delay)
            attempts += 1


def _follow(stream: grpc.Call, reader: EventReader, attempts: int) -> common_pb2.GenerationResult:
    """Reads a job's stream to its end (the server records the download after the last event)."""
    result = None
    try:
        for event in stream:
            result = reader.read(event, attempts) or result
    except BaseException:
        stream.cancel()
        raise
    if result is None:
        raise StreamEnded()
    return result
