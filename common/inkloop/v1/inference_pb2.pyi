from inkloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelLimits(_message.Message):
    __slots__ = ("min_size", "max_size", "size_multiple", "min_steps", "max_steps", "max_images", "max_prompt_tokens", "max_true_cfg_scale", "max_feather_px")
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    MIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TRUE_CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_FEATHER_PX_FIELD_NUMBER: _ClassVar[int]
    min_size: int
    max_size: int
    size_multiple: int
    min_steps: int
    max_steps: int
    max_images: int
    max_prompt_tokens: int
    max_true_cfg_scale: float
    max_feather_px: int
    def __init__(self, min_size: _Optional[int] = ..., max_size: _Optional[int] = ..., size_multiple: _Optional[int] = ..., min_steps: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_images: _Optional[int] = ..., max_prompt_tokens: _Optional[int] = ..., max_true_cfg_scale: _Optional[float] = ..., max_feather_px: _Optional[int] = ...) -> None: ...

class ModelDefaults(_message.Message):
    __slots__ = ("width", "height", "steps", "true_cfg_scale", "sizes")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRUE_CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    SIZES_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    steps: int
    true_cfg_scale: float
    sizes: _containers.RepeatedCompositeFieldContainer[RecommendedSize]
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., true_cfg_scale: _Optional[float] = ..., sizes: _Optional[_Iterable[_Union[RecommendedSize, _Mapping]]] = ...) -> None: ...

class RecommendedSize(_message.Message):
    __slots__ = ("width", "height", "aspect_ratio")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    aspect_ratio: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., aspect_ratio: _Optional[str] = ...) -> None: ...

class BatchingInfo(_message.Message):
    __slots__ = ("max_batch_size", "max_queue_delay_ms", "queue_capacity")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_queue_delay_ms: int
    queue_capacity: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_queue_delay_ms: _Optional[int] = ..., queue_capacity: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_id", "model_revision", "architecture", "transformer_parameters", "dtype", "device", "limits", "defaults", "batching", "kinds", "memory_mode", "edit_model", "variants")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMER_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MODE_FIELD_NUMBER: _ClassVar[int]
    EDIT_MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_revision: str
    architecture: str
    transformer_parameters: int
    dtype: str
    device: str
    limits: ModelLimits
    defaults: ModelDefaults
    batching: BatchingInfo
    kinds: _containers.RepeatedScalarFieldContainer[_common_pb2.GenerationKind]
    memory_mode: str
    edit_model: EditModelInfo
    variants: _containers.RepeatedCompositeFieldContainer[ServedVariant]
    def __init__(self, model_id: _Optional[str] = ..., model_revision: _Optional[str] = ..., architecture: _Optional[str] = ..., transformer_parameters: _Optional[int] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., limits: _Optional[_Union[ModelLimits, _Mapping]] = ..., defaults: _Optional[_Union[ModelDefaults, _Mapping]] = ..., batching: _Optional[_Union[BatchingInfo, _Mapping]] = ..., kinds: _Optional[_Iterable[_Union[_common_pb2.GenerationKind, str]]] = ..., memory_mode: _Optional[str] = ..., edit_model: _Optional[_Union[EditModelInfo, _Mapping]] = ..., variants: _Optional[_Iterable[_Union[ServedVariant, _Mapping]]] = ...) -> None: ...

class ServedVariant(_message.Message):
    __slots__ = ("name", "defaults", "adapters", "scheduler")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    name: str
    defaults: ModelDefaults
    adapters: _containers.RepeatedCompositeFieldContainer[ServedAdapter]
    scheduler: str
    def __init__(self, name: _Optional[str] = ..., defaults: _Optional[_Union[ModelDefaults, _Mapping]] = ..., adapters: _Optional[_Iterable[_Union[ServedAdapter, _Mapping]]] = ..., scheduler: _Optional[str] = ...) -> None: ...

class ServedAdapter(_message.Message):
    __slots__ = ("file", "scale")
    FILE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    file: str
    scale: float
    def __init__(self, file: _Optional[str] = ..., scale: _Optional[float] = ...) -> None: ...

class EditModelInfo(_message.Message):
    __slots__ = ("model_id", "model_revision", "defaults")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_revision: str
    defaults: ModelDefaults
    def __init__(self, model_id: _Optional[str] = ..., model_revision: _Optional[str] = ..., defaults: _Optional[_Union[ModelDefaults, _Mapping]] = ...) -> None: ...
