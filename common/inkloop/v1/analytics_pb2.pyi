import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inkloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrontendEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRONTEND_EVENT_TYPE_UNSPECIFIED: _ClassVar[FrontendEventType]
    FRONTEND_EVENT_TYPE_PAGE_VIEW: _ClassVar[FrontendEventType]
    FRONTEND_EVENT_TYPE_TRACK_EVENT: _ClassVar[FrontendEventType]

class BackendEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_EVENT_TYPE_UNSPECIFIED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_REQUESTED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_QUEUED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_STARTED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_SUCCEEDED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_FAILED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_CANCELLED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_CACHE_HIT: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_REJECTED_BY_POLICY: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_REJECTED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_DOWNLOADED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_VIEWED: _ClassVar[BackendEventType]
    BACKEND_EVENT_TYPE_IMAGE_FLAGGED: _ClassVar[BackendEventType]

class LanguageClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANGUAGE_CLASS_UNSPECIFIED: _ClassVar[LanguageClass]
    LANGUAGE_CLASS_ZH: _ClassVar[LanguageClass]
    LANGUAGE_CLASS_EN: _ClassVar[LanguageClass]
    LANGUAGE_CLASS_MIXED: _ClassVar[LanguageClass]
    LANGUAGE_CLASS_OTHER: _ClassVar[LanguageClass]

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_ACCEPTED: _ClassVar[AckStatus]
    ACK_STATUS_DUPLICATE: _ClassVar[AckStatus]
    ACK_STATUS_REJECTED: _ClassVar[AckStatus]

class EventSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_SOURCE_UNSPECIFIED: _ClassVar[EventSource]
    EVENT_SOURCE_FRONTEND: _ClassVar[EventSource]
    EVENT_SOURCE_BACKEND: _ClassVar[EventSource]

class FunnelOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNNEL_ORDER_UNSPECIFIED: _ClassVar[FunnelOrder]
    FUNNEL_ORDER_ORDERED: _ClassVar[FunnelOrder]
    FUNNEL_ORDER_STRICT: _ClassVar[FunnelOrder]
    FUNNEL_ORDER_ANY: _ClassVar[FunnelOrder]

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    ALERT_KIND_CLICKS_OVER_SUCCESSES: _ClassVar[AlertKind]
    ALERT_KIND_ERROR_RATE: _ClassVar[AlertKind]
    ALERT_KIND_LATENCY_P95: _ClassVar[AlertKind]
    ALERT_KIND_PERCEIVED_SUCCESS: _ClassVar[AlertKind]
    ALERT_KIND_RETRY_LOOP_RATE: _ClassVar[AlertKind]
FRONTEND_EVENT_TYPE_UNSPECIFIED: FrontendEventType
FRONTEND_EVENT_TYPE_PAGE_VIEW: FrontendEventType
FRONTEND_EVENT_TYPE_TRACK_EVENT: FrontendEventType
BACKEND_EVENT_TYPE_UNSPECIFIED: BackendEventType
BACKEND_EVENT_TYPE_REQUESTED: BackendEventType
BACKEND_EVENT_TYPE_QUEUED: BackendEventType
BACKEND_EVENT_TYPE_STARTED: BackendEventType
BACKEND_EVENT_TYPE_SUCCEEDED: BackendEventType
BACKEND_EVENT_TYPE_FAILED: BackendEventType
BACKEND_EVENT_TYPE_CANCELLED: BackendEventType
BACKEND_EVENT_TYPE_CACHE_HIT: BackendEventType
BACKEND_EVENT_TYPE_REJECTED_BY_POLICY: BackendEventType
BACKEND_EVENT_TYPE_REJECTED: BackendEventType
BACKEND_EVENT_TYPE_DOWNLOADED: BackendEventType
BACKEND_EVENT_TYPE_VIEWED: BackendEventType
BACKEND_EVENT_TYPE_IMAGE_FLAGGED: BackendEventType
LANGUAGE_CLASS_UNSPECIFIED: LanguageClass
LANGUAGE_CLASS_ZH: LanguageClass
LANGUAGE_CLASS_EN: LanguageClass
LANGUAGE_CLASS_MIXED: LanguageClass
LANGUAGE_CLASS_OTHER: LanguageClass
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_ACCEPTED: AckStatus
ACK_STATUS_DUPLICATE: AckStatus
ACK_STATUS_REJECTED: AckStatus
EVENT_SOURCE_UNSPECIFIED: EventSource
EVENT_SOURCE_FRONTEND: EventSource
EVENT_SOURCE_BACKEND: EventSource
FUNNEL_ORDER_UNSPECIFIED: FunnelOrder
FUNNEL_ORDER_ORDERED: FunnelOrder
FUNNEL_ORDER_STRICT: FunnelOrder
FUNNEL_ORDER_ANY: FunnelOrder
ALERT_KIND_UNSPECIFIED: AlertKind
ALERT_KIND_CLICKS_OVER_SUCCESSES: AlertKind
ALERT_KIND_ERROR_RATE: AlertKind
ALERT_KIND_LATENCY_P95: AlertKind
ALERT_KIND_PERCEIVED_SUCCESS: AlertKind
ALERT_KIND_RETRY_LOOP_RATE: AlertKind

class FrontendEvent(_message.Message):
    __slots__ = ("event_id", "client_time", "server_time", "tenant_id", "visitor_id", "session_id", "user_id", "page_url", "referrer", "user_agent", "language", "screen", "type", "category", "action", "label", "value", "request_id", "custom_vars")
    class CustomVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    VISITOR_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_URL_FIELD_NUMBER: _ClassVar[int]
    REFERRER_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SCREEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_VARS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    client_time: _timestamp_pb2.Timestamp
    server_time: _timestamp_pb2.Timestamp
    tenant_id: str
    visitor_id: str
    session_id: str
    user_id: str
    page_url: str
    referrer: str
    user_agent: str
    language: str
    screen: str
    type: FrontendEventType
    category: str
    action: str
    label: str
    value: int
    request_id: str
    custom_vars: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., client_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ..., visitor_id: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., page_url: _Optional[str] = ..., referrer: _Optional[str] = ..., user_agent: _Optional[str] = ..., language: _Optional[str] = ..., screen: _Optional[str] = ..., type: _Optional[_Union[FrontendEventType, str]] = ..., category: _Optional[str] = ..., action: _Optional[str] = ..., label: _Optional[str] = ..., value: _Optional[int] = ..., request_id: _Optional[str] = ..., custom_vars: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PromptFeatures(_message.Message):
    __slots__ = ("length", "language", "hash", "redacted", "signature")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    length: int
    language: LanguageClass
    hash: str
    redacted: str
    signature: int
    def __init__(self, length: _Optional[int] = ..., language: _Optional[_Union[LanguageClass, str]] = ..., hash: _Optional[str] = ..., redacted: _Optional[str] = ..., signature: _Optional[int] = ...) -> None: ...

class BackendEvent(_message.Message):
    __slots__ = ("event_id", "time", "tenant_id", "user_id", "request_id", "job_id", "type", "variant", "kind", "width", "height", "steps", "true_cfg_scale", "num_images", "seed", "latency_s", "error_code", "prompt", "policy", "has_negative_prompt", "base_request_id", "template_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRUE_CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    HAS_NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BASE_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: _timestamp_pb2.Timestamp
    tenant_id: str
    user_id: str
    request_id: str
    job_id: str
    type: BackendEventType
    variant: str
    kind: _common_pb2.GenerationKind
    width: int
    height: int
    steps: int
    true_cfg_scale: float
    num_images: int
    seed: int
    latency_s: float
    error_code: str
    prompt: PromptFeatures
    policy: str
    has_negative_prompt: bool
    base_request_id: str
    template_id: str
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., type: _Optional[_Union[BackendEventType, str]] = ..., variant: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.GenerationKind, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., true_cfg_scale: _Optional[float] = ..., num_images: _Optional[int] = ..., seed: _Optional[int] = ..., latency_s: _Optional[float] = ..., error_code: _Optional[str] = ..., prompt: _Optional[_Union[PromptFeatures, _Mapping]] = ..., policy: _Optional[str] = ..., has_negative_prompt: _Optional[bool] = ..., base_request_id: _Optional[str] = ..., template_id: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("frontend", "backend", "batch_id")
    FRONTEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    frontend: _containers.RepeatedCompositeFieldContainer[FrontendEvent]
    backend: _containers.RepeatedCompositeFieldContainer[BackendEvent]
    batch_id: str
    def __init__(self, frontend: _Optional[_Iterable[_Union[FrontendEvent, _Mapping]]] = ..., backend: _Optional[_Iterable[_Union[BackendEvent, _Mapping]]] = ..., batch_id: _Optional[str] = ...) -> None: ...

class EventAck(_message.Message):
    __slots__ = ("event_id", "status", "reason", "field")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: AckStatus
    reason: str
    field: str
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[AckStatus, str]] = ..., reason: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("batch_id", "accepted", "duplicates", "rejected", "frontend_acks", "backend_acks", "spooled")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_ACKS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_ACKS_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    accepted: int
    duplicates: int
    rejected: int
    frontend_acks: _containers.RepeatedCompositeFieldContainer[EventAck]
    backend_acks: _containers.RepeatedCompositeFieldContainer[EventAck]
    spooled: bool
    def __init__(self, batch_id: _Optional[str] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., frontend_acks: _Optional[_Iterable[_Union[EventAck, _Mapping]]] = ..., backend_acks: _Optional[_Iterable[_Union[EventAck, _Mapping]]] = ..., spooled: _Optional[bool] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EventMatcher(_message.Message):
    __slots__ = ("source", "name", "frontend_type", "category", "action", "label", "backend_type", "variant")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    source: EventSource
    name: str
    frontend_type: FrontendEventType
    category: str
    action: str
    label: str
    backend_type: BackendEventType
    variant: str
    def __init__(self, source: _Optional[_Union[EventSource, str]] = ..., name: _Optional[str] = ..., frontend_type: _Optional[_Union[FrontendEventType, str]] = ..., category: _Optional[str] = ..., action: _Optional[str] = ..., label: _Optional[str] = ..., backend_type: _Optional[_Union[BackendEventType, str]] = ..., variant: _Optional[str] = ...) -> None: ...

class FunnelExclusion(_message.Message):
    __slots__ = ("event", "from_step", "to_step")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    TO_STEP_FIELD_NUMBER: _ClassVar[int]
    event: EventMatcher
    from_step: int
    to_step: int
    def __init__(self, event: _Optional[_Union[EventMatcher, _Mapping]] = ..., from_step: _Optional[int] = ..., to_step: _Optional[int] = ...) -> None: ...

class FunnelRequest(_message.Message):
    __slots__ = ("tenant_id", "steps", "window_s", "range", "breakdown", "actor", "order", "exclusions", "time_to_convert_bins")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIONS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_CONVERT_BINS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    steps: _containers.RepeatedCompositeFieldContainer[EventMatcher]
    window_s: int
    range: TimeRange
    breakdown: str
    actor: str
    order: FunnelOrder
    exclusions: _containers.RepeatedCompositeFieldContainer[FunnelExclusion]
    time_to_convert_bins: int
    def __init__(self, tenant_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[EventMatcher, _Mapping]]] = ..., window_s: _Optional[int] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., breakdown: _Optional[str] = ..., actor: _Optional[str] = ..., order: _Optional[_Union[FunnelOrder, str]] = ..., exclusions: _Optional[_Iterable[_Union[FunnelExclusion, _Mapping]]] = ..., time_to_convert_bins: _Optional[int] = ...) -> None: ...

class FunnelStep(_message.Message):
    __slots__ = ("name", "count", "conversion_from_previous", "conversion_from_first", "median_seconds_from_first")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FROM_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FROM_FIRST_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_SECONDS_FROM_FIRST_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    conversion_from_previous: float
    conversion_from_first: float
    median_seconds_from_first: float
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., conversion_from_previous: _Optional[float] = ..., conversion_from_first: _Optional[float] = ..., median_seconds_from_first: _Optional[float] = ...) -> None: ...

class FunnelSeries(_message.Message):
    __slots__ = ("breakdown_value", "steps")
    BREAKDOWN_VALUE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    breakdown_value: str
    steps: _containers.RepeatedCompositeFieldContainer[FunnelStep]
    def __init__(self, breakdown_value: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[FunnelStep, _Mapping]]] = ...) -> None: ...

class TimeToConvertBin(_message.Message):
    __slots__ = ("start_s", "end_s", "actors")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    actors: int
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., actors: _Optional[int] = ...) -> None: ...

class TimeToConvert(_message.Message):
    __slots__ = ("bins", "actors", "median_s")
    BINS_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_S_FIELD_NUMBER: _ClassVar[int]
    bins: _containers.RepeatedCompositeFieldContainer[TimeToConvertBin]
    actors: int
    median_s: float
    def __init__(self, bins: _Optional[_Iterable[_Union[TimeToConvertBin, _Mapping]]] = ..., actors: _Optional[int] = ..., median_s: _Optional[float] = ...) -> None: ...

class FunnelResponse(_message.Message):
    __slots__ = ("series", "time_to_convert")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_CONVERT_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[FunnelSeries]
    time_to_convert: TimeToConvert
    def __init__(self, series: _Optional[_Iterable[_Union[FunnelSeries, _Mapping]]] = ..., time_to_convert: _Optional[_Union[TimeToConvert, _Mapping]] = ...) -> None: ...

class FunnelCorrelationRequest(_message.Message):
    __slots__ = ("tenant_id", "funnel", "step", "properties")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FUNNEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    funnel: FunnelRequest
    step: int
    properties: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., funnel: _Optional[_Union[FunnelRequest, _Mapping]] = ..., step: _Optional[int] = ..., properties: _Optional[_Iterable[str]] = ...) -> None: ...

class PropertyCorrelation(_message.Message):
    __slots__ = ("property", "value", "converted", "dropped", "odds_ratio", "p_value", "significant")
    PROPERTY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONVERTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ODDS_RATIO_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    property: str
    value: str
    converted: int
    dropped: int
    odds_ratio: float
    p_value: float
    significant: bool
    def __init__(self, property: _Optional[str] = ..., value: _Optional[str] = ..., converted: _Optional[int] = ..., dropped: _Optional[int] = ..., odds_ratio: _Optional[float] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ...) -> None: ...

class FunnelCorrelationResponse(_message.Message):
    __slots__ = ("correlations", "converted", "dropped", "step")
    CORRELATIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    correlations: _containers.RepeatedCompositeFieldContainer[PropertyCorrelation]
    converted: int
    dropped: int
    step: int
    def __init__(self, correlations: _Optional[_Iterable[_Union[PropertyCorrelation, _Mapping]]] = ..., converted: _Optional[int] = ..., dropped: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class DiscrepancyRequest(_message.Message):
    __slots__ = ("tenant_id", "frontend", "backend", "range", "bucket_s", "sample_size")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    frontend: EventMatcher
    backend: EventMatcher
    range: TimeRange
    bucket_s: int
    sample_size: int
    def __init__(self, tenant_id: _Optional[str] = ..., frontend: _Optional[_Union[EventMatcher, _Mapping]] = ..., backend: _Optional[_Union[EventMatcher, _Mapping]] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., bucket_s: _Optional[int] = ..., sample_size: _Optional[int] = ...) -> None: ...

class DiscrepancyBucket(_message.Message):
    __slots__ = ("start", "frontend", "backend", "matched", "frontend_only", "backend_only", "frontend_duplicates", "backend_duplicates", "loss_rate")
    START_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_ONLY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_ONLY_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LOSS_RATE_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    frontend: int
    backend: int
    matched: int
    frontend_only: int
    backend_only: int
    frontend_duplicates: int
    backend_duplicates: int
    loss_rate: float
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., frontend: _Optional[int] = ..., backend: _Optional[int] = ..., matched: _Optional[int] = ..., frontend_only: _Optional[int] = ..., backend_only: _Optional[int] = ..., frontend_duplicates: _Optional[int] = ..., backend_duplicates: _Optional[int] = ..., loss_rate: _Optional[float] = ...) -> None: ...

class DiscrepancyResponse(_message.Message):
    __slots__ = ("buckets", "total", "frontend_only_sample", "backend_only_sample")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_ONLY_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_ONLY_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[DiscrepancyBucket]
    total: DiscrepancyBucket
    frontend_only_sample: _containers.RepeatedScalarFieldContainer[str]
    backend_only_sample: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, buckets: _Optional[_Iterable[_Union[DiscrepancyBucket, _Mapping]]] = ..., total: _Optional[_Union[DiscrepancyBucket, _Mapping]] = ..., frontend_only_sample: _Optional[_Iterable[str]] = ..., backend_only_sample: _Optional[_Iterable[str]] = ...) -> None: ...

class PromptInsightsRequest(_message.Message):
    __slots__ = ("tenant_id", "range", "length_bucket_edges")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_BUCKET_EDGES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    length_bucket_edges: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., length_bucket_edges: _Optional[_Iterable[int]] = ...) -> None: ...

class PromptGroup(_message.Message):
    __slots__ = ("label", "requests", "successes", "success_rate", "median_dwell_s")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_DWELL_S_FIELD_NUMBER: _ClassVar[int]
    label: str
    requests: int
    successes: int
    success_rate: float
    median_dwell_s: float
    def __init__(self, label: _Optional[str] = ..., requests: _Optional[int] = ..., successes: _Optional[int] = ..., success_rate: _Optional[float] = ..., median_dwell_s: _Optional[float] = ...) -> None: ...

class PromptInsightsResponse(_message.Message):
    __slots__ = ("by_length", "by_language")
    BY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BY_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    by_length: _containers.RepeatedCompositeFieldContainer[PromptGroup]
    by_language: _containers.RepeatedCompositeFieldContainer[PromptGroup]
    def __init__(self, by_length: _Optional[_Iterable[_Union[PromptGroup, _Mapping]]] = ..., by_language: _Optional[_Iterable[_Union[PromptGroup, _Mapping]]] = ...) -> None: ...

class FeatureAdoptionRequest(_message.Message):
    __slots__ = ("tenant_id", "range", "features")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureAdoption(_message.Message):
    __slots__ = ("feature", "exposures", "clicks", "click_rate", "exposed_visitors", "clicked_visitors")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CLICK_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPOSED_VISITORS_FIELD_NUMBER: _ClassVar[int]
    CLICKED_VISITORS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    exposures: int
    clicks: int
    click_rate: float
    exposed_visitors: int
    clicked_visitors: int
    def __init__(self, feature: _Optional[str] = ..., exposures: _Optional[int] = ..., clicks: _Optional[int] = ..., click_rate: _Optional[float] = ..., exposed_visitors: _Optional[int] = ..., clicked_visitors: _Optional[int] = ...) -> None: ...

class FeatureAdoptionResponse(_message.Message):
    __slots__ = ("features", "page_views", "unique_visitors")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PAGE_VIEWS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_VISITORS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureAdoption]
    page_views: int
    unique_visitors: int
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureAdoption, _Mapping]]] = ..., page_views: _Optional[int] = ..., unique_visitors: _Optional[int] = ...) -> None: ...

class CompareVariantsRequest(_message.Message):
    __slots__ = ("tenant_id", "range")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ...) -> None: ...

class VariantStats(_message.Message):
    __slots__ = ("variant", "requests", "successes", "success_rate", "latency_p50_s", "latency_p95_s", "downloads", "downloads_per_success")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_S_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADS_PER_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    variant: str
    requests: int
    successes: int
    success_rate: float
    latency_p50_s: float
    latency_p95_s: float
    downloads: int
    downloads_per_success: float
    def __init__(self, variant: _Optional[str] = ..., requests: _Optional[int] = ..., successes: _Optional[int] = ..., success_rate: _Optional[float] = ..., latency_p50_s: _Optional[float] = ..., latency_p95_s: _Optional[float] = ..., downloads: _Optional[int] = ..., downloads_per_success: _Optional[float] = ...) -> None: ...

class CompareVariantsResponse(_message.Message):
    __slots__ = ("variants",)
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    variants: _containers.RepeatedCompositeFieldContainer[VariantStats]
    def __init__(self, variants: _Optional[_Iterable[_Union[VariantStats, _Mapping]]] = ...) -> None: ...

class OutcomeRules(_message.Message):
    __slots__ = ("regenerate_window_s", "max_intent_distance_bits")
    REGENERATE_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    MAX_INTENT_DISTANCE_BITS_FIELD_NUMBER: _ClassVar[int]
    regenerate_window_s: int
    max_intent_distance_bits: int
    def __init__(self, regenerate_window_s: _Optional[int] = ..., max_intent_distance_bits: _Optional[int] = ...) -> None: ...

class OutcomesRequest(_message.Message):
    __slots__ = ("tenant_id", "range", "breakdown", "rules")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    breakdown: str
    rules: OutcomeRules
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., breakdown: _Optional[str] = ..., rules: _Optional[_Union[OutcomeRules, _Mapping]] = ...) -> None: ...

class OutcomeGroup(_message.Message):
    __slots__ = ("value", "requests", "accepted", "regenerated", "abandoned", "failed", "perceived_success", "regenerations_per_accepted", "mean_dwell_s")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REGENERATED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PERCEIVED_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REGENERATIONS_PER_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MEAN_DWELL_S_FIELD_NUMBER: _ClassVar[int]
    value: str
    requests: int
    accepted: int
    regenerated: int
    abandoned: int
    failed: int
    perceived_success: float
    regenerations_per_accepted: float
    mean_dwell_s: float
    def __init__(self, value: _Optional[str] = ..., requests: _Optional[int] = ..., accepted: _Optional[int] = ..., regenerated: _Optional[int] = ..., abandoned: _Optional[int] = ..., failed: _Optional[int] = ..., perceived_success: _Optional[float] = ..., regenerations_per_accepted: _Optional[float] = ..., mean_dwell_s: _Optional[float] = ...) -> None: ...

class OutcomesResponse(_message.Message):
    __slots__ = ("groups", "rules")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[OutcomeGroup]
    rules: OutcomeRules
    def __init__(self, groups: _Optional[_Iterable[_Union[OutcomeGroup, _Mapping]]] = ..., rules: _Optional[_Union[OutcomeRules, _Mapping]] = ...) -> None: ...

class RetryLoopsRequest(_message.Message):
    __slots__ = ("tenant_id", "range", "rules", "min_regenerations")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    MIN_REGENERATIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    rules: OutcomeRules
    min_regenerations: int
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., rules: _Optional[_Union[OutcomeRules, _Mapping]] = ..., min_regenerations: _Optional[int] = ...) -> None: ...

class RetryLoopGroup(_message.Message):
    __slots__ = ("language_class", "users", "looping_users", "loop_rate")
    LANGUAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    LOOPING_USERS_FIELD_NUMBER: _ClassVar[int]
    LOOP_RATE_FIELD_NUMBER: _ClassVar[int]
    language_class: str
    users: int
    looping_users: int
    loop_rate: float
    def __init__(self, language_class: _Optional[str] = ..., users: _Optional[int] = ..., looping_users: _Optional[int] = ..., loop_rate: _Optional[float] = ...) -> None: ...

class RetryLoopsResponse(_message.Message):
    __slots__ = ("groups", "rules", "min_regenerations")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    MIN_REGENERATIONS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[RetryLoopGroup]
    rules: OutcomeRules
    min_regenerations: int
    def __init__(self, groups: _Optional[_Iterable[_Union[RetryLoopGroup, _Mapping]]] = ..., rules: _Optional[_Union[OutcomeRules, _Mapping]] = ..., min_regenerations: _Optional[int] = ...) -> None: ...

class RecommendTemplatesRequest(_message.Message):
    __slots__ = ("tenant_id", "range", "language_class", "template_ids", "limit", "rules")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_IDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    language_class: str
    template_ids: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    rules: OutcomeRules
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., language_class: _Optional[str] = ..., template_ids: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., rules: _Optional[_Union[OutcomeRules, _Mapping]] = ...) -> None: ...

class TemplateRecommendation(_message.Message):
    __slots__ = ("template_id", "name", "shown", "picked", "requests", "accepted", "perceived_success", "estimate", "interval_low", "interval_high")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOWN_FIELD_NUMBER: _ClassVar[int]
    PICKED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PERCEIVED_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LOW_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_HIGH_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    name: str
    shown: int
    picked: int
    requests: int
    accepted: int
    perceived_success: float
    estimate: float
    interval_low: float
    interval_high: float
    def __init__(self, template_id: _Optional[str] = ..., name: _Optional[str] = ..., shown: _Optional[int] = ..., picked: _Optional[int] = ..., requests: _Optional[int] = ..., accepted: _Optional[int] = ..., perceived_success: _Optional[float] = ..., estimate: _Optional[float] = ..., interval_low: _Optional[float] = ..., interval_high: _Optional[float] = ...) -> None: ...

class RecommendTemplatesResponse(_message.Message):
    __slots__ = ("templates", "prior_mean", "prior_strength")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    PRIOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    PRIOR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[TemplateRecommendation]
    prior_mean: float
    prior_strength: float
    def __init__(self, templates: _Optional[_Iterable[_Union[TemplateRecommendation, _Mapping]]] = ..., prior_mean: _Optional[float] = ..., prior_strength: _Optional[float] = ...) -> None: ...

class ExperimentArm(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: int
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class ExperimentGoal(_message.Message):
    __slots__ = ("name", "event", "outcome")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    name: str
    event: EventMatcher
    outcome: str
    def __init__(self, name: _Optional[str] = ..., event: _Optional[_Union[EventMatcher, _Mapping]] = ..., outcome: _Optional[str] = ...) -> None: ...

class ExperimentResultsRequest(_message.Message):
    __slots__ = ("tenant_id", "experiment", "arms", "goals", "range", "conversion_window_s", "min_exposures", "rules")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    GOALS_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    MIN_EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    experiment: str
    arms: _containers.RepeatedCompositeFieldContainer[ExperimentArm]
    goals: _containers.RepeatedCompositeFieldContainer[ExperimentGoal]
    range: TimeRange
    conversion_window_s: int
    min_exposures: int
    rules: OutcomeRules
    def __init__(self, tenant_id: _Optional[str] = ..., experiment: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ExperimentArm, _Mapping]]] = ..., goals: _Optional[_Iterable[_Union[ExperimentGoal, _Mapping]]] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., conversion_window_s: _Optional[int] = ..., min_exposures: _Optional[int] = ..., rules: _Optional[_Union[OutcomeRules, _Mapping]] = ...) -> None: ...

class ArmResult(_message.Message):
    __slots__ = ("arm", "exposures", "conversions", "rate", "rate_low", "rate_high", "uplift", "probability_to_beat_control", "p_value")
    ARM_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    RATE_LOW_FIELD_NUMBER: _ClassVar[int]
    RATE_HIGH_FIELD_NUMBER: _ClassVar[int]
    UPLIFT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_TO_BEAT_CONTROL_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    arm: str
    exposures: int
    conversions: int
    rate: float
    rate_low: float
    rate_high: float
    uplift: float
    probability_to_beat_control: float
    p_value: float
    def __init__(self, arm: _Optional[str] = ..., exposures: _Optional[int] = ..., conversions: _Optional[int] = ..., rate: _Optional[float] = ..., rate_low: _Optional[float] = ..., rate_high: _Optional[float] = ..., uplift: _Optional[float] = ..., probability_to_beat_control: _Optional[float] = ..., p_value: _Optional[float] = ...) -> None: ...

class GoalResult(_message.Message):
    __slots__ = ("goal", "arms", "enough_data", "verdict")
    GOAL_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    ENOUGH_DATA_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    goal: str
    arms: _containers.RepeatedCompositeFieldContainer[ArmResult]
    enough_data: bool
    verdict: str
    def __init__(self, goal: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ArmResult, _Mapping]]] = ..., enough_data: _Optional[bool] = ..., verdict: _Optional[str] = ...) -> None: ...

class SampleRatioCheck(_message.Message):
    __slots__ = ("chi_square", "p_value", "mismatch")
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    chi_square: float
    p_value: float
    mismatch: bool
    def __init__(self, chi_square: _Optional[float] = ..., p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ...) -> None: ...

class ExperimentResultsResponse(_message.Message):
    __slots__ = ("experiment", "goals", "sample_ratio", "crossover_visitors", "min_exposures")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    GOALS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    CROSSOVER_VISITORS_FIELD_NUMBER: _ClassVar[int]
    MIN_EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    goals: _containers.RepeatedCompositeFieldContainer[GoalResult]
    sample_ratio: SampleRatioCheck
    crossover_visitors: int
    min_exposures: int
    def __init__(self, experiment: _Optional[str] = ..., goals: _Optional[_Iterable[_Union[GoalResult, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatioCheck, _Mapping]] = ..., crossover_visitors: _Optional[int] = ..., min_exposures: _Optional[int] = ...) -> None: ...

class AlertRule(_message.Message):
    __slots__ = ("name", "kind", "threshold", "window_s", "min_events", "breakdown")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    MIN_EVENTS_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: AlertKind
    threshold: float
    window_s: int
    min_events: int
    breakdown: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[AlertKind, str]] = ..., threshold: _Optional[float] = ..., window_s: _Optional[int] = ..., min_events: _Optional[int] = ..., breakdown: _Optional[str] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("rule", "tenant_id", "value", "fired_at", "message", "subject")
    RULE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FIRED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    tenant_id: str
    value: float
    fired_at: _timestamp_pb2.Timestamp
    message: str
    subject: str
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ..., tenant_id: _Optional[str] = ..., value: _Optional[float] = ..., fired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class ListAlertRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAlertRulesResponse(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[AlertRule]
    def __init__(self, rules: _Optional[_Iterable[_Union[AlertRule, _Mapping]]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("tenant_id", "range")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    range: TimeRange
    def __init__(self, tenant_id: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...
