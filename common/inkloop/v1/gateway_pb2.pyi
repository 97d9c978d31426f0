import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inkloop.v1 import analytics_pb2 as _analytics_pb2
from inkloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ANALYST: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]

class JobPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PRIORITY_UNSPECIFIED: _ClassVar[JobPriority]
    JOB_PRIORITY_INTERACTIVE: _ClassVar[JobPriority]
    JOB_PRIORITY_BATCH: _ClassVar[JobPriority]

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_DRAFT: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_STOPPED: _ClassVar[ExperimentState]

class WebhookEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_EVENT_TYPE_UNSPECIFIED: _ClassVar[WebhookEventType]
    WEBHOOK_EVENT_TYPE_JOB_SUCCEEDED: _ClassVar[WebhookEventType]
    WEBHOOK_EVENT_TYPE_JOB_FAILED: _ClassVar[WebhookEventType]
    WEBHOOK_EVENT_TYPE_JOB_CANCELLED: _ClassVar[WebhookEventType]

class WebhookDeliveryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_DELIVERY_STATE_UNSPECIFIED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_PENDING: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_DELIVERED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_FAILED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_SKIPPED: _ClassVar[WebhookDeliveryState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_ANALYST: Role
ROLE_ADMIN: Role
JOB_PRIORITY_UNSPECIFIED: JobPriority
JOB_PRIORITY_INTERACTIVE: JobPriority
JOB_PRIORITY_BATCH: JobPriority
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_DRAFT: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_STOPPED: ExperimentState
WEBHOOK_EVENT_TYPE_UNSPECIFIED: WebhookEventType
WEBHOOK_EVENT_TYPE_JOB_SUCCEEDED: WebhookEventType
WEBHOOK_EVENT_TYPE_JOB_FAILED: WebhookEventType
WEBHOOK_EVENT_TYPE_JOB_CANCELLED: WebhookEventType
WEBHOOK_DELIVERY_STATE_UNSPECIFIED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_PENDING: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_DELIVERED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_FAILED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_SKIPPED: WebhookDeliveryState

class Job(_message.Message):
    __slots__ = ("job_id", "request_id", "state", "kind", "parameters", "variant", "queue_position", "progress", "result", "failure", "cache_hit", "created_at", "started_at", "finished_at", "user_id", "priority")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    state: JobState
    kind: _common_pb2.GenerationKind
    parameters: _common_pb2.GenerationParameters
    variant: str
    queue_position: int
    progress: _common_pb2.StepProgress
    result: _common_pb2.GenerationResult
    failure: _common_pb2.Failure
    cache_hit: bool
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    user_id: str
    priority: JobPriority
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., kind: _Optional[_Union[_common_pb2.GenerationKind, str]] = ..., parameters: _Optional[_Union[_common_pb2.GenerationParameters, _Mapping]] = ..., variant: _Optional[str] = ..., queue_position: _Optional[int] = ..., progress: _Optional[_Union[_common_pb2.StepProgress, _Mapping]] = ..., result: _Optional[_Union[_common_pb2.GenerationResult, _Mapping]] = ..., failure: _Optional[_Union[_common_pb2.Failure, _Mapping]] = ..., cache_hit: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ..., priority: _Optional[_Union[JobPriority, str]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "queued", "running", "succeeded", "failed", "cancelled", "time", "variant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    queued: _common_pb2.Queued
    running: _common_pb2.StepProgress
    succeeded: _common_pb2.GenerationResult
    failed: _common_pb2.Failure
    cancelled: JobCancelled
    time: _timestamp_pb2.Timestamp
    variant: str
    def __init__(self, job_id: _Optional[str] = ..., queued: _Optional[_Union[_common_pb2.Queued, _Mapping]] = ..., running: _Optional[_Union[_common_pb2.StepProgress, _Mapping]] = ..., succeeded: _Optional[_Union[_common_pb2.GenerationResult, _Mapping]] = ..., failed: _Optional[_Union[_common_pb2.Failure, _Mapping]] = ..., cancelled: _Optional[_Union[JobCancelled, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., variant: _Optional[str] = ...) -> None: ...

class JobCancelled(_message.Message):
    __slots__ = ("steps_completed",)
    STEPS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    steps_completed: int
    def __init__(self, steps_completed: _Optional[int] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("request_id", "task", "user_id", "template_id", "webhook_url", "priority")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    task: _common_pb2.GenerationTask
    user_id: str
    template_id: str
    webhook_url: str
    priority: JobPriority
    def __init__(self, request_id: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.GenerationTask, _Mapping]] = ..., user_id: _Optional[str] = ..., template_id: _Optional[str] = ..., webhook_url: _Optional[str] = ..., priority: _Optional[_Union[JobPriority, str]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "include_images")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    include_images: bool
    def __init__(self, job_id: _Optional[str] = ..., include_images: _Optional[bool] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: JobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "task", "user_id", "template_id", "webhook_url", "priority")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    task: _common_pb2.GenerationTask
    user_id: str
    template_id: str
    webhook_url: str
    priority: JobPriority
    def __init__(self, request_id: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.GenerationTask, _Mapping]] = ..., user_id: _Optional[str] = ..., template_id: _Optional[str] = ..., webhook_url: _Optional[str] = ..., priority: _Optional[_Union[JobPriority, str]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "tenant_id", "role", "name", "prefix", "created_at", "revoked_at", "from_key_file")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    FROM_KEY_FILE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant_id: str
    role: Role
    name: str
    prefix: str
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    from_key_file: bool
    def __init__(self, key_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., name: _Optional[str] = ..., prefix: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., from_key_file: _Optional[bool] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "role", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    role: Role
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., name: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant_id", "include_revoked")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    include_revoked: bool
    def __init__(self, tenant_id: _Optional[str] = ..., include_revoked: _Optional[bool] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ModelVariant(_message.Message):
    __slots__ = ("name", "target", "weight", "model_variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: str
    weight: int
    model_variant: str
    def __init__(self, name: _Optional[str] = ..., target: _Optional[str] = ..., weight: _Optional[int] = ..., model_variant: _Optional[str] = ...) -> None: ...

class ListVariantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVariantsResponse(_message.Message):
    __slots__ = ("variants",)
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    variants: _containers.RepeatedCompositeFieldContainer[ModelVariant]
    def __init__(self, variants: _Optional[_Iterable[_Union[ModelVariant, _Mapping]]] = ...) -> None: ...

class SetVariantsRequest(_message.Message):
    __slots__ = ("variants",)
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    variants: _containers.RepeatedCompositeFieldContainer[ModelVariant]
    def __init__(self, variants: _Optional[_Iterable[_Union[ModelVariant, _Mapping]]] = ...) -> None: ...

class SetVariantsResponse(_message.Message):
    __slots__ = ("variants",)
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    variants: _containers.RepeatedCompositeFieldContainer[ModelVariant]
    def __init__(self, variants: _Optional[_Iterable[_Union[ModelVariant, _Mapping]]] = ...) -> None: ...

class PromptTemplate(_message.Message):
    __slots__ = ("id", "name", "language_class", "pattern", "slots", "category", "builtin")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    language_class: str
    pattern: str
    slots: _containers.RepeatedScalarFieldContainer[str]
    category: str
    builtin: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., language_class: _Optional[str] = ..., pattern: _Optional[str] = ..., slots: _Optional[_Iterable[str]] = ..., category: _Optional[str] = ..., builtin: _Optional[bool] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[PromptTemplate]
    def __init__(self, templates: _Optional[_Iterable[_Union[PromptTemplate, _Mapping]]] = ...) -> None: ...

class PutTemplateRequest(_message.Message):
    __slots__ = ("tenant_id", "template")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    template: PromptTemplate
    def __init__(self, tenant_id: _Optional[str] = ..., template: _Optional[_Union[PromptTemplate, _Mapping]] = ...) -> None: ...

class PutTemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: PromptTemplate
    def __init__(self, template: _Optional[_Union[PromptTemplate, _Mapping]] = ...) -> None: ...

class DeleteTemplateRequest(_message.Message):
    __slots__ = ("tenant_id", "template_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    template_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., template_id: _Optional[str] = ...) -> None: ...

class DeleteTemplateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "description", "arms", "goals", "state", "started_at", "stopped_at", "conversion_window_s", "min_exposures")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    GOALS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STOPPED_AT_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    MIN_EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    arms: _containers.RepeatedCompositeFieldContainer[_analytics_pb2.ExperimentArm]
    goals: _containers.RepeatedCompositeFieldContainer[_analytics_pb2.ExperimentGoal]
    state: ExperimentState
    started_at: _timestamp_pb2.Timestamp
    stopped_at: _timestamp_pb2.Timestamp
    conversion_window_s: int
    min_exposures: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[_analytics_pb2.ExperimentArm, _Mapping]]] = ..., goals: _Optional[_Iterable[_Union[_analytics_pb2.ExperimentGoal, _Mapping]]] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stopped_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., conversion_window_s: _Optional[int] = ..., min_exposures: _Optional[int] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("tenant_id", "experiment")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    experiment: Experiment
    def __init__(self, tenant_id: _Optional[str] = ..., experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class CreateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("tenant_id", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class StartExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("tenant_id", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class StopExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class WebhookEndpoint(_message.Message):
    __slots__ = ("endpoint_id", "tenant_id", "url", "event_types", "secret", "created_at")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    tenant_id: str
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[WebhookEventType]
    secret: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, endpoint_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., url: _Optional[str] = ..., event_types: _Optional[_Iterable[_Union[WebhookEventType, str]]] = ..., secret: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateWebhookEndpointRequest(_message.Message):
    __slots__ = ("tenant_id", "url", "event_types")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[WebhookEventType]
    def __init__(self, tenant_id: _Optional[str] = ..., url: _Optional[str] = ..., event_types: _Optional[_Iterable[_Union[WebhookEventType, str]]] = ...) -> None: ...

class CreateWebhookEndpointResponse(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: WebhookEndpoint
    def __init__(self, endpoint: _Optional[_Union[WebhookEndpoint, _Mapping]] = ...) -> None: ...

class ListWebhookEndpointsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListWebhookEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[WebhookEndpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[WebhookEndpoint, _Mapping]]] = ...) -> None: ...

class DeleteWebhookEndpointRequest(_message.Message):
    __slots__ = ("tenant_id", "endpoint_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    endpoint_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., endpoint_id: _Optional[str] = ...) -> None: ...

class DeleteWebhookEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJobWebhookSecretRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetJobWebhookSecretResponse(_message.Message):
    __slots__ = ("secret",)
    SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: str
    def __init__(self, secret: _Optional[str] = ...) -> None: ...

class WebhookAttempt(_message.Message):
    __slots__ = ("at", "http_status", "error", "duration_s")
    AT_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    http_status: int
    error: str
    duration_s: float
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., http_status: _Optional[int] = ..., error: _Optional[str] = ..., duration_s: _Optional[float] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("delivery_id", "job_id", "endpoint_id", "url", "event_type", "state", "attempts", "next_attempt_at", "created_at")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    job_id: str
    endpoint_id: str
    url: str
    event_type: WebhookEventType
    state: WebhookDeliveryState
    attempts: _containers.RepeatedCompositeFieldContainer[WebhookAttempt]
    next_attempt_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, delivery_id: _Optional[str] = ..., job_id: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., url: _Optional[str] = ..., event_type: _Optional[_Union[WebhookEventType, str]] = ..., state: _Optional[_Union[WebhookDeliveryState, str]] = ..., attempts: _Optional[_Iterable[_Union[WebhookAttempt, _Mapping]]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWebhookDeliveriesRequest(_message.Message):
    __slots__ = ("tenant_id", "job_id", "page_size")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    job_id: str
    page_size: int
    def __init__(self, tenant_id: _Optional[str] = ..., job_id: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListWebhookDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ...) -> None: ...
