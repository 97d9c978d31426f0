"""Checks a GenerationTask against the inference model's limits before anything is queued or charged.

The rules are the generation contract's (`inkloop.generation`), shared with inference, with the
limits and defaults the model reports in GetModelInfo: the gateway refuses what inference would
refuse, with the same messages, every violation at once under the task's own field path
(`task.inpaint.mask`, `task.outpaint.extension.left`). The one bound it checks more loosely is the
prompt's token count (it has no tokenizer): a prompt longer than any that fits is refused here, the
exact count is inference's. No torch here; images are read with Pillow.

Image inputs are decoded in full (a truncated file only fails there), which is CPU work: call
`validate_task` through `asyncio.to_thread` for inpaint, outpaint and edit.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import cast

from inkloop import generation
from inkloop.errors import InvalidArgument
from inkloop.generation import PB_OF_FORMAT, PB_OF_KIND, Kind, defaults_from_pb, limits_from_pb, request_from_pb
from inkloop.v1 import common_pb2, inference_pb2
from inkloop_gateway.admission.ratelimit import request_cost


def normalize_prompt(text: str) -> str:
    """NFKC (full-width → ASCII, compatibility forms folded), whitespace runs → one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@dataclass(frozen=True)
class Extension:
    """Pixels added per side by an outpaint."""

    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class ValidatedTask:
    """A task that passed validation, with the model's defaults filled in.

    `width`/`height` are the output size: the image's for inpaint, image + extension for outpaint,
    the asked-for size or the image's (rounded down to a multiple of 16) for edit.
    `seed` stays None when the request had none (the caller assigns one). `output_format` is never
    UNSPECIFIED. The fields `width, height, steps, num_images` are the rate limiter's cost inputs.
    """

    #: Never UNSPECIFIED.
    kind: common_pb2.GenerationKind
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    true_cfg_scale: float
    seed: int | None
    num_images: int
    #: Never UNSPECIFIED.
    output_format: common_pb2.ImageFormat
    image: bytes = b""
    mask: bytes = b""
    #: inpaint: mask_feather_px; outpaint: feather_px.
    feather_px: int = 0
    extension: Extension | None = None
    #: Live previews every this many steps (0 = none); never part of the cache key.
    preview_every_steps: int = 0

    def normalized_prompt(self) -> str:
        return normalize_prompt(self.prompt)

    def normalized_negative_prompt(self) -> str:
        return normalize_prompt(self.negative_prompt)

    def cost(self) -> float:
        return request_cost(self.width, self.height, self.steps, self.num_images)

    def parameters_pb(self, seed: int | None = None) -> common_pb2.GenerationParameters:
        """The parameters with defaults filled in (Job.parameters), `seed` or the request's seed."""
        seed = self.seed if seed is None else seed
        return common_pb2.GenerationParameters(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            width=self.width,
            height=self.height,
            steps=self.steps,
            true_cfg_scale=self.true_cfg_scale,
            seed=seed,
            num_images=self.num_images,
            output_format=self.output_format,
            preview_every_steps=self.preview_every_steps,
        )

    @property
    def parameters(self) -> common_pb2.GenerationParameters:
        """A fresh copy each time (protobuf messages are mutable; this object is not)."""
        return self.parameters_pb()

    def to_task_pb(self, seed: int | None = None, *, model_variant: str = "") -> common_pb2.GenerationTask:
        """The task to send to inference, with the NORMALISED prompts (and the inference-side variant,
        except for edit: the edit model serves none).

        The result cache keys on the normalised prompt, so the model must see that same text: two
        prompts that share a cache entry then also produce the same image.
        """
        parameters = self.parameters_pb(seed)
        if self.kind != common_pb2.GENERATION_KIND_EDIT:
            parameters.model_variant = model_variant
        parameters.prompt = self.normalized_prompt()
        parameters.negative_prompt = self.normalized_negative_prompt()
        if self.kind == common_pb2.GENERATION_KIND_INPAINT:
            return common_pb2.GenerationTask(
                inpaint=common_pb2.InpaintRequest(
                    parameters=parameters, image=self.image, mask=self.mask, mask_feather_px=self.feather_px
                )
            )
        if self.kind == common_pb2.GENERATION_KIND_OUTPAINT:
            assert self.extension is not None
            ext = self.extension
            # Outpaint sizes follow from image + extension; inference ignores the parameters' size.
            parameters.width = parameters.height = 0
            return common_pb2.GenerationTask(
                outpaint=common_pb2.OutpaintRequest(
                    parameters=parameters,
                    image=self.image,
                    extension=common_pb2.OutpaintExtension(
                        left=ext.left, top=ext.top, right=ext.right, bottom=ext.bottom
                    ),
                    feather_px=self.feather_px,
                )
            )
        if self.kind == common_pb2.GENERATION_KIND_EDIT:
            return common_pb2.GenerationTask(edit=common_pb2.EditRequest(parameters=parameters, image=self.image))
        return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


def validate_task(task: common_pb2.GenerationTask, info: inference_pb2.GetModelInfoResponse) -> ValidatedTask:
    """The task with defaults filled in, or `InvalidArgument` naming every field at fault.

    The rules are the generation contract's (`inkloop.generation`), the very ones inference applies,
    with the limits and defaults the model reported; fields are named from the task down.
    """
    kind_name = task.WhichOneof("kind")
    if kind_name is None:
        raise InvalidArgument("task", "set one of text_to_image, inpaint, outpaint or edit")
    kind = PB_OF_KIND[cast(Kind, kind_name)]
    if info.kinds and kind not in info.kinds:
        raise InvalidArgument("task", f"{kind_name} is not served by model {info.model_id!r}")
    message = getattr(task, kind_name)
    defaults = info.edit_model.defaults if kind_name == "edit" else info.defaults
    request = request_from_pb(message, cast(Kind, kind_name), defaults_from_pb(defaults))
    generation.validate(request, limits_from_pb(info.limits), prefix=f"task.{kind_name}.")
    width, height = request.output_size()
    extension = None
    if request.outpaint is not None:
        ext = request.outpaint
        extension = Extension(ext.left, ext.top, ext.right, ext.bottom)
    return ValidatedTask(
        kind=kind,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=width,
        height=height,
        steps=request.steps,
        true_cfg_scale=request.true_cfg_scale,
        seed=request.seed,
        num_images=request.num_images,
        output_format=PB_OF_FORMAT[request.output_format],
        image=request.image,
        mask=request.mask,
        feather_px=request.mask_feather_px,
        extension=extension,
        preview_every_steps=request.preview_every_steps,
    )
