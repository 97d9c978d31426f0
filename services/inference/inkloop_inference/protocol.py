"""Protobuf <-> domain conversion for the inference service: the only place that knows both.

Requests become the generation contract's `GenerationRequest` (`inkloop.generation`, shared with the
gateway): zero/unset fields take the model's defaults there, so the domain always sees complete
requests, and field names in errors are the request's own (`parameters.width`, `mask`).
"""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from inkloop import errors, generation
from inkloop.generation import PB_OF_FORMAT, Defaults, GenerationRequest, request_from_pb
from inkloop.v1 import common_pb2
from inkloop_inference.batching import Done, Event, Queued, Step
from inkloop_inference.editing import NO_EDIT_MODEL
from inkloop_inference.loading import LoadedModel
from inkloop_inference.pipelines import GenerationResult

#: Qwen-Image's published sizes per aspect ratio (its model card), for a 1328×1328 square.
QWEN_IMAGE_SIZES = (
    ("1:1", 1328, 1328),
    ("16:9", 1664, 928),
    ("9:16", 928, 1664),
    ("4:3", 1472, 1104),
    ("3:4", 1104, 1472),
    ("3:2", 1584, 1056),
    ("2:3", 1056, 1584),
)


def recommended_sizes(defaults: Defaults, *, multiple: int, min_size: int, max_size: int) -> list[tuple[str, int, int]]:
    """Qwen-Image's aspect ratios at the area of the default size: the default first, then the others.

    A random-weight preset with a 128² default offers 128-ish sizes, real weights Qwen-Image's own.
    """

    def side(value: float) -> int:
        return min(max_size, max(min_size, round(value / multiple) * multiple))

    scale = (defaults.width * defaults.height / (1328 * 1328)) ** 0.5
    sizes = [("default", defaults.width, defaults.height)]
    for ratio, width, height in QWEN_IMAGE_SIZES:
        size = (ratio, side(width * scale), side(height * scale))
        if (size[1], size[2]) == (defaults.width, defaults.height):
            sizes[0] = size
        elif all((w, h) != size[1:] for _, w, h in sizes):
            sizes.append(size)
    return sizes


def text_to_image_from_pb(message: common_pb2.TextToImageRequest, defaults: Defaults) -> GenerationRequest:
    return request_from_pb(message, "text_to_image", defaults)


def inpaint_from_pb(message: common_pb2.InpaintRequest, defaults: Defaults) -> GenerationRequest:
    return request_from_pb(message, "inpaint", defaults)


def outpaint_from_pb(message: common_pb2.OutpaintRequest, defaults: Defaults) -> GenerationRequest:
    return request_from_pb(message, "outpaint", defaults)


def edit_from_pb(message: common_pb2.EditRequest, defaults: Defaults) -> GenerationRequest:
    return request_from_pb(message, "edit", defaults)


def validate(request: GenerationRequest, model: LoadedModel) -> None:
    """The contract's validation against the model's limits, fields named as the request message does."""
    if request.kind == "edit" and model.edit is None:
        raise errors.FailedPrecondition(NO_EDIT_MODEL)
    generation.validate(request, model.limits_of(request.kind))


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def event_to_pb(
    event: Event, request: GenerationRequest, model: LoadedModel, accepted_at: float
) -> common_pb2.GenerationEvent:
    if isinstance(event, Queued):
        return common_pb2.GenerationEvent(queued=common_pb2.Queued(position=event.position), time=_now())
    if isinstance(event, Step):
        return common_pb2.GenerationEvent(
            step=common_pb2.StepProgress(
                step=event.step, total_steps=event.total, elapsed_s=event.elapsed_s, preview=event.preview
            ),
            time=_now(),
        )
    assert isinstance(event, Done)
    return common_pb2.GenerationEvent(result=result_to_pb(event, request, model, accepted_at), time=_now())


def result_to_pb(
    done: Done[GenerationResult], request: GenerationRequest, model: LoadedModel, accepted_at: float
) -> common_pb2.GenerationResult:
    result = done.result
    image_format = PB_OF_FORMAT[result.output_format]
    timings = result.timings
    return common_pb2.GenerationResult(
        images=[
            common_pb2.Image(data=data, format=image_format, seed=seed, width=result.width, height=result.height)
            for data, seed in zip(result.images, result.seeds, strict=True)
        ],
        model_id=model.edit.model_id if request.kind == "edit" and model.edit else model.model_id,
        model_revision=model.edit.revision if request.kind == "edit" and model.edit else model.revision,
        timings=common_pb2.Timings(
            queue_s=done.queue_s,
            text_encode_s=timings.text_encode_s,
            denoise_s=timings.denoise_s,
            decode_s=timings.decode_s + timings.postprocess_s,
            total_s=time.monotonic() - accepted_at,
        ),
        batch_size=done.batch_size,
        effective_negative_prompt=(request.negative_prompt or " ") if request.uses_cfg else request.negative_prompt,
        true_cfg_scale=request.true_cfg_scale if request.uses_cfg else 1.0,
        steps=request.steps,
    )
