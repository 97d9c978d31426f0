"""Protobuf <-> domain conversion for the gateway's jobs: the only place that knows both."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from google.protobuf.timestamp_pb2 import Timestamp

from inkloop import errors
from inkloop.v1 import analytics_pb2, common_pb2, gateway_pb2
from inkloop_gateway.admission.auth import Principal
from inkloop_gateway.admission.keys import ApiKey, Role
from inkloop_gateway.admission.variants import Variant
from inkloop_gateway.jobs.store import Failure, Job, JobState, Priority
from inkloop_gateway.nudges.experiments import Arm, Experiment, ExperimentState
from inkloop_gateway.nudges.templates import Template
from inkloop_gateway.webhooks.endpoints import Endpoint
from inkloop_gateway.webhooks.outbox import DELIVERED, FAILED, PENDING, SKIPPED, Delivery

if TYPE_CHECKING:
    from inkloop_gateway.jobs.service import JobService

STATE_TO_PB = {
    JobState.QUEUED: gateway_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: gateway_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: gateway_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: gateway_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: gateway_pb2.JOB_STATE_CANCELLED,
}
STATE_FROM_PB: dict[int, JobState] = {value: state for state, value in STATE_TO_PB.items()}


def task_parameters(task: common_pb2.GenerationTask) -> common_pb2.GenerationParameters:
    """The parameters message inside the task, whatever its kind (mutable: it is the task's own)."""
    which = task.WhichOneof("kind")
    if which is None:
        raise errors.InvalidArgument("task", "one of text_to_image, inpaint, outpaint or edit is required")
    parameters: common_pb2.GenerationParameters = getattr(task, which).parameters
    return parameters


def state_filter(value: int) -> JobState | None:
    if value == gateway_pb2.JOB_STATE_UNSPECIFIED:
        return None
    if value not in STATE_FROM_PB:
        raise errors.InvalidArgument("state", f"unknown job state {value}")
    return STATE_FROM_PB[value]


def page_size(value: int) -> int:
    if value > 100:
        raise errors.InvalidArgument("page_size", "must be at most 100")
    return value or 20


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def failure_to_pb(failure: Failure) -> common_pb2.Failure:
    return common_pb2.Failure(code=failure.code, message=failure.message, field=failure.field, policy=failure.policy)


_PRIORITIES = {
    Priority.INTERACTIVE: gateway_pb2.JOB_PRIORITY_INTERACTIVE,
    Priority.BATCH: gateway_pb2.JOB_PRIORITY_BATCH,
}


async def submit(
    jobs: JobService, principal: Principal, message: gateway_pb2.SubmitJobRequest | gateway_pb2.GenerateRequest
) -> Job:
    """A SubmitJob or Generate request (gRPC or the page's JSON) as the one `JobService.submit` call."""
    return await jobs.submit(
        principal,
        message.request_id,
        message.task,
        message.user_id,
        message.template_id,
        webhook_url=message.webhook_url,
        priority=priority_from_pb(message.priority),
    )


def priority_from_pb(value: int) -> Priority:
    if value == gateway_pb2.JOB_PRIORITY_BATCH:
        return Priority.BATCH
    if value in (gateway_pb2.JOB_PRIORITY_UNSPECIFIED, gateway_pb2.JOB_PRIORITY_INTERACTIVE):
        return Priority.INTERACTIVE
    raise errors.InvalidArgument("priority", f"unknown priority {value}")


def job_to_pb(
    job: Job, *, queue_position: int = 0, result: common_pb2.GenerationResult | None = None
) -> gateway_pb2.Job:
    """The public view of a job; `result` is the stored result with its images filled for the caller."""
    task = common_pb2.GenerationTask.FromString(job.task)
    message = gateway_pb2.Job(
        job_id=job.job_id,
        request_id=job.request_id,
        state=STATE_TO_PB[job.state],
        kind=cast(common_pb2.GenerationKind, job.kind),
        parameters=task_parameters(task),
        variant=job.variant,
        queue_position=queue_position if job.state == JobState.QUEUED else 0,
        cache_hit=job.cache_hit,
        created_at=timestamp(job.created_at),
        user_id=job.user_id,
        priority=_PRIORITIES[job.priority],
    )
    if job.state == JobState.RUNNING and job.total_steps:
        message.progress.CopyFrom(_progress(job))
    if job.started_at:
        message.started_at.CopyFrom(timestamp(job.started_at))
    if job.finished_at:
        message.finished_at.CopyFrom(timestamp(job.finished_at))
    if result is not None:
        message.result.CopyFrom(result)
    if job.failure is not None:
        message.failure.CopyFrom(failure_to_pb(job.failure))
    return message


def _progress(job: Job) -> common_pb2.StepProgress:
    elapsed = (job.finished_at or _now()) - (job.started_at or job.created_at)
    return common_pb2.StepProgress(step=job.step, total_steps=job.total_steps, elapsed_s=max(elapsed, 0.0))


def job_event(
    job: Job, *, queue_position: int = 0, queue_reason: str = "", result: common_pb2.GenerationResult | None = None
) -> gateway_pb2.JobEvent:
    """The event that describes the job's current state (terminal ones carry the result or failure)."""
    event = gateway_pb2.JobEvent(job_id=job.job_id, variant=job.variant, time=timestamp(_now()))
    if job.state == JobState.QUEUED:
        event.queued.position = queue_position
        event.queued.reason = queue_reason
    elif job.state == JobState.RUNNING:
        event.running.CopyFrom(_progress(job))
    elif job.state == JobState.SUCCEEDED:
        event.succeeded.CopyFrom(result or common_pb2.GenerationResult())
    elif job.state == JobState.FAILED:
        event.failed.CopyFrom(failure_to_pb(job.failure or Failure("UNKNOWN", "the job failed")))
    else:
        event.cancelled.steps_completed = job.step
    return event


def _now() -> float:
    return time.time()


ROLE_TO_PB = {
    Role.USER: gateway_pb2.ROLE_USER,
    Role.ANALYST: gateway_pb2.ROLE_ANALYST,
    Role.ADMIN: gateway_pb2.ROLE_ADMIN,
}
ROLE_FROM_PB: dict[int, Role] = {value: role for role, value in ROLE_TO_PB.items()}


def role_from_pb(value: int) -> Role:
    if value not in ROLE_FROM_PB:
        raise errors.InvalidArgument("role", "must be ROLE_USER, ROLE_ANALYST or ROLE_ADMIN")
    return ROLE_FROM_PB[value]


def api_key_to_pb(key: ApiKey) -> gateway_pb2.ApiKey:
    message = gateway_pb2.ApiKey(
        key_id=key.key_id,
        tenant_id=key.tenant_id,
        role=ROLE_TO_PB[key.role],
        name=key.name,
        prefix=key.prefix,
        created_at=timestamp(key.created_at),
        from_key_file=key.from_key_file,
    )
    if key.revoked_at is not None:
        message.revoked_at.CopyFrom(timestamp(key.revoked_at))
    return message


def variant_to_pb(variant: Variant) -> gateway_pb2.ModelVariant:
    return gateway_pb2.ModelVariant(
        name=variant.name, target=variant.target, weight=variant.weight, model_variant=variant.model
    )


def variant_from_pb(message: gateway_pb2.ModelVariant) -> Variant:
    return Variant(name=message.name, target=message.target, weight=message.weight, model=message.model_variant)


def template_to_pb(template: Template) -> gateway_pb2.PromptTemplate:
    return gateway_pb2.PromptTemplate(
        id=template.id,
        name=template.name,
        language_class=template.language_class,
        pattern=template.pattern,
        slots=template.slots,
        category=template.category,
        builtin=template.builtin,
    )


def template_from_pb(message: gateway_pb2.PromptTemplate) -> Template:
    return Template(message.id, message.name, message.language_class, message.pattern, message.category)


_EXPERIMENT_STATES = {
    ExperimentState.DRAFT: gateway_pb2.EXPERIMENT_STATE_DRAFT,
    ExperimentState.RUNNING: gateway_pb2.EXPERIMENT_STATE_RUNNING,
    ExperimentState.STOPPED: gateway_pb2.EXPERIMENT_STATE_STOPPED,
}


def experiment_to_pb(experiment: Experiment) -> gateway_pb2.Experiment:
    message = gateway_pb2.Experiment(
        name=experiment.name,
        description=experiment.description,
        arms=[analytics_pb2.ExperimentArm(name=arm.name, weight=arm.weight) for arm in experiment.arms],
        goals=experiment.goals,
        state=_EXPERIMENT_STATES[experiment.state],
        conversion_window_s=experiment.conversion_window_s,
        min_exposures=experiment.min_exposures,
    )
    if experiment.started_at is not None:
        message.started_at.CopyFrom(timestamp(experiment.started_at))
    if experiment.stopped_at is not None:
        message.stopped_at.CopyFrom(timestamp(experiment.stopped_at))
    return message


def experiment_from_pb(message: gateway_pb2.Experiment) -> Experiment:
    """A new experiment's definition (state and times are the book's to set)."""
    return Experiment(
        name=message.name,
        description=message.description,
        arms=tuple(Arm(arm.name, arm.weight) for arm in message.arms),
        goals=tuple(message.goals),
        conversion_window_s=message.conversion_window_s,
        min_exposures=message.min_exposures,
    )


_WEBHOOK_EVENT_TYPES = {
    "job.succeeded": gateway_pb2.WEBHOOK_EVENT_TYPE_JOB_SUCCEEDED,
    "job.failed": gateway_pb2.WEBHOOK_EVENT_TYPE_JOB_FAILED,
    "job.cancelled": gateway_pb2.WEBHOOK_EVENT_TYPE_JOB_CANCELLED,
}
_DELIVERY_STATES = {
    PENDING: gateway_pb2.WEBHOOK_DELIVERY_STATE_PENDING,
    DELIVERED: gateway_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED,
    FAILED: gateway_pb2.WEBHOOK_DELIVERY_STATE_FAILED,
    SKIPPED: gateway_pb2.WEBHOOK_DELIVERY_STATE_SKIPPED,
}


def webhook_event_types_from_pb(values: Sequence[int]) -> tuple[str, ...]:
    names: dict[int, str] = {number: name for name, number in _WEBHOOK_EVENT_TYPES.items()}
    unknown = [value for value in values if value not in names]
    if unknown:
        raise errors.InvalidArgument("event_types", f"unknown event types {unknown}")
    return tuple(names[value] for value in values)


def endpoint_to_pb(tenant_id: str, endpoint: Endpoint, *, with_secret: bool = False) -> gateway_pb2.WebhookEndpoint:
    return gateway_pb2.WebhookEndpoint(
        endpoint_id=endpoint.endpoint_id,
        tenant_id=tenant_id,
        url=endpoint.url,
        event_types=[_WEBHOOK_EVENT_TYPES[name] for name in endpoint.event_types],
        secret=endpoint.secret if with_secret else "",
        created_at=timestamp(endpoint.created_at),
    )


def delivery_to_pb(delivery: Delivery) -> gateway_pb2.WebhookDelivery:
    message = gateway_pb2.WebhookDelivery(
        delivery_id=delivery.delivery_id,
        job_id=delivery.job_id,
        endpoint_id=delivery.endpoint_id,
        url=delivery.url,
        event_type=_WEBHOOK_EVENT_TYPES.get(delivery.event_type, gateway_pb2.WEBHOOK_EVENT_TYPE_UNSPECIFIED),
        state=_DELIVERY_STATES[delivery.state],
        attempts=[
            gateway_pb2.WebhookAttempt(
                at=timestamp(a.at), http_status=a.http_status, error=a.error, duration_s=a.duration_s
            )
            for a in delivery.attempts
        ],
        created_at=timestamp(delivery.created_at),
    )
    if delivery.state == PENDING:
        message.next_attempt_at.CopyFrom(timestamp(delivery.next_attempt_at))
    return message
