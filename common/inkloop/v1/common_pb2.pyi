import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]

class GenerationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENERATION_KIND_UNSPECIFIED: _ClassVar[GenerationKind]
    GENERATION_KIND_TEXT_TO_IMAGE: _ClassVar[GenerationKind]
    GENERATION_KIND_INPAINT: _ClassVar[GenerationKind]
    GENERATION_KIND_OUTPAINT: _ClassVar[GenerationKind]
    GENERATION_KIND_EDIT: _ClassVar[GenerationKind]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
GENERATION_KIND_UNSPECIFIED: GenerationKind
GENERATION_KIND_TEXT_TO_IMAGE: GenerationKind
GENERATION_KIND_INPAINT: GenerationKind
GENERATION_KIND_OUTPAINT: GenerationKind
GENERATION_KIND_EDIT: GenerationKind

class GenerationParameters(_message.Message):
    __slots__ = ("prompt", "negative_prompt", "width", "height", "steps", "true_cfg_scale", "seed", "num_images", "output_format", "preview_every_steps", "model_variant")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRUE_CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VARIANT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    true_cfg_scale: float
    seed: int
    num_images: int
    output_format: ImageFormat
    preview_every_steps: int
    model_variant: str
    def __init__(self, prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., true_cfg_scale: _Optional[float] = ..., seed: _Optional[int] = ..., num_images: _Optional[int] = ..., output_format: _Optional[_Union[ImageFormat, str]] = ..., preview_every_steps: _Optional[int] = ..., model_variant: _Optional[str] = ...) -> None: ...

class TextToImageRequest(_message.Message):
    __slots__ = ("parameters",)
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    parameters: GenerationParameters
    def __init__(self, parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ...) -> None: ...

class InpaintRequest(_message.Message):
    __slots__ = ("parameters", "image", "mask", "mask_feather_px")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    MASK_FEATHER_PX_FIELD_NUMBER: _ClassVar[int]
    parameters: GenerationParameters
    image: bytes
    mask: bytes
    mask_feather_px: int
    def __init__(self, parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., image: _Optional[bytes] = ..., mask: _Optional[bytes] = ..., mask_feather_px: _Optional[int] = ...) -> None: ...

class OutpaintExtension(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: int
    top: int
    right: int
    bottom: int
    def __init__(self, left: _Optional[int] = ..., top: _Optional[int] = ..., right: _Optional[int] = ..., bottom: _Optional[int] = ...) -> None: ...

class OutpaintRequest(_message.Message):
    __slots__ = ("parameters", "image", "extension", "feather_px")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    FEATHER_PX_FIELD_NUMBER: _ClassVar[int]
    parameters: GenerationParameters
    image: bytes
    extension: OutpaintExtension
    feather_px: int
    def __init__(self, parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., image: _Optional[bytes] = ..., extension: _Optional[_Union[OutpaintExtension, _Mapping]] = ..., feather_px: _Optional[int] = ...) -> None: ...

class EditRequest(_message.Message):
    __slots__ = ("parameters", "image")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    parameters: GenerationParameters
    image: bytes
    def __init__(self, parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., image: _Optional[bytes] = ...) -> None: ...

class GenerationTask(_message.Message):
    __slots__ = ("text_to_image", "inpaint", "outpaint", "edit")
    TEXT_TO_IMAGE_FIELD_NUMBER: _ClassVar[int]
    INPAINT_FIELD_NUMBER: _ClassVar[int]
    OUTPAINT_FIELD_NUMBER: _ClassVar[int]
    EDIT_FIELD_NUMBER: _ClassVar[int]
    text_to_image: TextToImageRequest
    inpaint: InpaintRequest
    outpaint: OutpaintRequest
    edit: EditRequest
    def __init__(self, text_to_image: _Optional[_Union[TextToImageRequest, _Mapping]] = ..., inpaint: _Optional[_Union[InpaintRequest, _Mapping]] = ..., outpaint: _Optional[_Union[OutpaintRequest, _Mapping]] = ..., edit: _Optional[_Union[EditRequest, _Mapping]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "format", "seed", "width", "height", "image_id", "download_url")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    format: ImageFormat
    seed: int
    width: int
    height: int
    image_id: str
    download_url: str
    def __init__(self, data: _Optional[bytes] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., seed: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., image_id: _Optional[str] = ..., download_url: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_s", "text_encode_s", "denoise_s", "decode_s", "total_s")
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_ENCODE_S_FIELD_NUMBER: _ClassVar[int]
    DENOISE_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    queue_s: float
    text_encode_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    def __init__(self, queue_s: _Optional[float] = ..., text_encode_s: _Optional[float] = ..., denoise_s: _Optional[float] = ..., decode_s: _Optional[float] = ..., total_s: _Optional[float] = ...) -> None: ...

class GenerationResult(_message.Message):
    __slots__ = ("images", "model_id", "model_revision", "timings", "batch_size", "effective_negative_prompt", "true_cfg_scale", "steps")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TRUE_CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    model_id: str
    model_revision: str
    timings: Timings
    batch_size: int
    effective_negative_prompt: str
    true_cfg_scale: float
    steps: int
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., model_id: _Optional[str] = ..., model_revision: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., batch_size: _Optional[int] = ..., effective_negative_prompt: _Optional[str] = ..., true_cfg_scale: _Optional[float] = ..., steps: _Optional[int] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position", "reason")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    position: int
    reason: str
    def __init__(self, position: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StepProgress(_message.Message):
    __slots__ = ("step", "total_steps", "elapsed_s", "preview")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    elapsed_s: float
    preview: bytes
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., elapsed_s: _Optional[float] = ..., preview: _Optional[bytes] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("code", "message", "field", "policy")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    policy: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class GenerationEvent(_message.Message):
    __slots__ = ("queued", "step", "result", "failed", "time")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    step: StepProgress
    result: GenerationResult
    failed: Failure
    time: _timestamp_pb2.Timestamp
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., step: _Optional[_Union[StepProgress, _Mapping]] = ..., result: _Optional[_Union[GenerationResult, _Mapping]] = ..., failed: _Optional[_Union[Failure, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
