"""What the gateway answers, as typed frozen dataclasses made from its protobuf messages (`from_pb`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import timestamp_pb2

from inkloop.client.tasks import FORMATS
from inkloop.generation import KIND_OF_PB
from inkloop.v1 import common_pb2, gateway_pb2

_FORMAT_NAMES = {value: name for name, value in FORMATS.items()}


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def from_pb(cls, state: int) -> JobState:
        return _STATES.get(state, JobState.QUEUED)


_STATES: dict[int, JobState] = {
    gateway_pb2.JOB_STATE_QUEUED: JobState.QUEUED,
    gateway_pb2.JOB_STATE_RUNNING: JobState.RUNNING,
    gateway_pb2.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    gateway_pb2.JOB_STATE_FAILED: JobState.FAILED,
    gateway_pb2.JOB_STATE_CANCELLED: JobState.CANCELLED,
}


@dataclass(frozen=True)
class Image:
    """One generated image. `data` is empty where the gateway sent none (`Client.get` without images):
    `Client.download` fetches it. `download_url` is a signed path on the gateway's HTTP port."""

    data: bytes
    format: str
    seed: int
    width: int
    height: int
    image_id: str
    download_url: str

    @classmethod
    def from_pb(cls, image: common_pb2.Image) -> Image:
        return cls(
            data=image.data,
            format=_FORMAT_NAMES.get(image.format, "png"),
            seed=image.seed,
            width=image.width,
            height=image.height,
            image_id=image.image_id,
            download_url=image.download_url,
        )

    def save(self, path: str | Path) -> Path:
        """Writes the bytes to `path` (as they are: name the file after `format`); returns the path."""
        if not self.data:
            raise ValueError("this image has no bytes: fetch them with Client.download(job_id)")
        target = Path(path)
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True)
class Failure:
    """Why a job failed: a gRPC status code name, a message, the request field at fault and, for safety
    refusals, the policy's name."""

    code: str
    message: str
    field: str = ""
    policy: str = ""

    @classmethod
    def from_pb(cls, failure: common_pb2.Failure) -> Failure:
        return cls(code=failure.code, message=failure.message, field=failure.field, policy=failure.policy)


@dataclass(frozen=True)
class Generation:
    """A finished generation: its job, the images in seed order and what produced them."""

    job_id: str
    request_id: str
    images: tuple[Image, ...]
    model_id: str
    model_revision: str
    steps: int
    variant: str
    #: True when the gateway's result cache answered (no inference ran).
    cache_hit: bool

    @property
    def image(self) -> Image:
        """The first image (the only one unless `num_images` was more than 1)."""
        return self.images[0]

    @property
    def seed(self) -> int:
        """The first image's seed: pass it back to reproduce the result exactly."""
        return self.images[0].seed

    @classmethod
    def from_pb(
        cls, result: common_pb2.GenerationResult, *, job_id: str, request_id: str, variant: str, cache_hit: bool
    ) -> Generation:
        return cls(
            job_id=job_id,
            request_id=request_id,
            images=tuple(Image.from_pb(image) for image in result.images),
            model_id=result.model_id,
            model_revision=result.model_revision,
            steps=result.steps,
            variant=variant,
            cache_hit=cache_hit,
        )


@dataclass(frozen=True)
class Job:
    """A job as the gateway reports it. `parameters` are the ones it runs with (defaults filled in, the
    seed assigned); `images` are the result's (bytes only where asked for)."""

    job_id: str
    request_id: str
    state: JobState
    kind: str
    prompt: str
    seed: int | None
    width: int
    height: int
    steps: int
    variant: str
    queue_position: int
    step: int
    total_steps: int
    cache_hit: bool
    images: tuple[Image, ...]
    failure: Failure | None
    created_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.state.terminal

    @classmethod
    def from_pb(cls, job: gateway_pb2.Job) -> Job:
        parameters = job.parameters
        return cls(
            job_id=job.job_id,
            request_id=job.request_id,
            state=JobState.from_pb(job.state),
            kind=KIND_OF_PB.get(job.kind, "unspecified"),
            prompt=parameters.prompt,
            seed=parameters.seed if parameters.HasField("seed") else None,
            width=parameters.width,
            height=parameters.height,
            steps=parameters.steps,
            variant=job.variant,
            queue_position=job.queue_position,
            step=job.progress.step,
            total_steps=job.progress.total_steps,
            cache_hit=job.cache_hit,
            images=tuple(Image.from_pb(image) for image in job.result.images),
            failure=Failure.from_pb(job.failure) if job.HasField("failure") else None,
            created_at=_time(job.created_at) if job.HasField("created_at") else None,
            finished_at=_time(job.finished_at) if job.HasField("finished_at") else None,
        )


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)
