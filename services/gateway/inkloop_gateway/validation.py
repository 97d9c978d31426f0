"""Checks a GenerationTask against the inference model's limits before anything is queued.

The rules mirror the inference service's (`GenerationRequest.validate`) with the limits it reports
in GetModelInfo, and every violation is reported at once with the request's own field path
(`task.inpaint.mask`, `task.outpaint.extension.left`). The gateway only ever rejects what inference
would reject: where it cannot know a bound (the exact token count, the CFG maximum, the feather
width) it checks a necessary condition and leaves the exact check to inference. No torch here: the
gateway image has none; images are read with Pillow.

Image inputs are decoded in full (a truncated file only fails there), which is CPU work: call
`validate_task` through `asyncio.to_thread` for inpaint and outpaint.
"""

from __future__ import annotations

import io
import math
import unicodedata
from dataclasses import dataclass
from typing import cast

from PIL import Image

from inkloop.errors import FieldViolation, InvalidArgument
from inkloop.v1 import common_pb2, inference_pb2
from inkloop_gateway.ratelimit import request_cost

#: Pillow decodes inputs with these plugins only (no TIFF, BMP, PSD … attack surface).
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
#: A token is rarely more than this many characters: a cheap bound before inference counts exactly.
#: Long English words can exceed it, so a prompt near the limit may be refused here although the
#: tokenizer would have taken it; far below the limit the bound never matters.
MAX_CHARS_PER_TOKEN = 4
#: Grey level from which a mask pixel repaints (inference's rule).
MASK_WHITE = 128

_KIND_FIELDS = {
    "text_to_image": common_pb2.GENERATION_KIND_TEXT_TO_IMAGE,
    "inpaint": common_pb2.GENERATION_KIND_INPAINT,
    "outpaint": common_pb2.GENERATION_KIND_OUTPAINT,
}
_FORMATS = {
    common_pb2.IMAGE_FORMAT_UNSPECIFIED: common_pb2.IMAGE_FORMAT_PNG,  # the server default
    common_pb2.IMAGE_FORMAT_PNG: common_pb2.IMAGE_FORMAT_PNG,
    common_pb2.IMAGE_FORMAT_JPEG: common_pb2.IMAGE_FORMAT_JPEG,
    common_pb2.IMAGE_FORMAT_WEBP: common_pb2.IMAGE_FORMAT_WEBP,
}


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

    `width`/`height` are the output size: the image's for inpaint, image + extension for outpaint.
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
        )

    @property
    def parameters(self) -> common_pb2.GenerationParameters:
        """A fresh copy each time (protobuf messages are mutable; this object is not)."""
        return self.parameters_pb()

    def to_task_pb(self, seed: int | None = None) -> common_pb2.GenerationTask:
        """The task to send to inference, with the NORMALISED prompts.

        The result cache keys on the normalised prompt, so the model must see that same text: two
        prompts that share a cache entry then also produce the same image.
        """
        parameters = self.parameters_pb(seed)
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
        return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


class _Problems:
    """Collects violations under one field prefix, e.g. "task.inpaint"."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.found.append(FieldViolation(f"{self.prefix}.{field}" if field else self.prefix, description))


def validate_task(task: common_pb2.GenerationTask, info: inference_pb2.GetModelInfoResponse) -> ValidatedTask:
    """The task with defaults filled in, or `InvalidArgument` naming every field at fault."""
    kind_name = task.WhichOneof("kind")
    if kind_name is None:
        raise InvalidArgument("task", "set one of text_to_image, inpaint or outpaint")
    kind = _KIND_FIELDS[kind_name]
    problems = _Problems(f"task.{kind_name}")
    if info.kinds and kind not in info.kinds:
        raise InvalidArgument("task", f"{kind_name} is not served by model {info.model_id!r}")

    # 1. Parameters every kind has.
    request = getattr(task, kind_name)
    parameters = request.parameters
    common = _check_parameters(parameters, info, problems)

    # 2. Inputs of each kind; they decide the output size of inpaint and outpaint.
    image, mask, feather, extension = b"", b"", 0, None
    if kind == common_pb2.GENERATION_KIND_TEXT_TO_IMAGE:
        width = parameters.width or info.defaults.width
        height = parameters.height or info.defaults.height
        _check_size(problems, "parameters.width", width, info.limits)
        _check_size(problems, "parameters.height", height, info.limits)
    elif kind == common_pb2.GENERATION_KIND_INPAINT:
        image, mask, feather = request.image, request.mask, request.mask_feather_px
        width, height = _check_inpaint(request, info.limits, problems)
    else:
        image, feather = request.image, request.feather_px
        ext = request.extension
        extension = Extension(ext.left, ext.top, ext.right, ext.bottom)
        width, height = _check_outpaint(request, extension, info.limits, problems)

    if problems.found:
        raise InvalidArgument.of(problems.found)
    return ValidatedTask(
        kind=kind,
        width=width,
        height=height,
        image=image,
        mask=mask,
        feather_px=feather,
        extension=extension,
        **common,  # type: ignore[arg-type]
    )


def _check_parameters(
    parameters: common_pb2.GenerationParameters, info: inference_pb2.GetModelInfoResponse, problems: _Problems
) -> dict[str, object]:
    limits, defaults = info.limits, info.defaults
    if not parameters.prompt.strip():
        problems.add("parameters.prompt", "must not be empty")
    if limits.max_prompt_tokens:
        max_chars = limits.max_prompt_tokens * MAX_CHARS_PER_TOKEN
        for name in ("prompt", "negative_prompt"):
            length = len(getattr(parameters, name))
            if length > max_chars:
                problems.add(
                    f"parameters.{name}",
                    f"is {length} characters; at most {max_chars} ({limits.max_prompt_tokens} tokens) are allowed",
                )
    steps = parameters.steps or defaults.steps
    if not limits.min_steps <= steps <= limits.max_steps:
        problems.add("parameters.steps", f"must be in [{limits.min_steps}, {limits.max_steps}], got {steps}")
    num_images = parameters.num_images or 1
    if num_images > limits.max_images:
        problems.add("parameters.num_images", f"must be in [0, {limits.max_images}], got {num_images}")
    cfg = parameters.true_cfg_scale if parameters.HasField("true_cfg_scale") else defaults.true_cfg_scale
    if not (math.isfinite(cfg) and cfg >= 1.0):
        problems.add("parameters.true_cfg_scale", f"must be >= 1 (1 = off), got {cfg}")
    if parameters.output_format not in _FORMATS:
        problems.add("parameters.output_format", f"unknown format {parameters.output_format}")
    return dict(
        prompt=parameters.prompt,
        negative_prompt=parameters.negative_prompt,
        steps=steps,
        true_cfg_scale=cfg,
        seed=parameters.seed if parameters.HasField("seed") else None,
        num_images=num_images,
        output_format=_FORMATS.get(parameters.output_format, common_pb2.IMAGE_FORMAT_PNG),
    )


def _check_inpaint(request: common_pb2.InpaintRequest, limits: inference_pb2.ModelLimits, problems: _Problems):
    image = _decode(problems, "image", request.image, limits)
    mask = _decode(problems, "mask", request.mask, limits)
    params = request.parameters
    if image is None:
        return params.width, params.height
    width, height = image.size
    _check_size(problems, "image", width, limits, what="width")
    _check_size(problems, "image", height, limits, what="height")
    _check_matches(problems, "parameters.width", params.width, width)
    _check_matches(problems, "parameters.height", params.height, height)
    if mask is not None:
        if mask.size != image.size:
            problems.add("mask", f"is {mask.size[0]}x{mask.size[1]}, the image {width}x{height}")
        elif cast(tuple[int, int], mask.convert("L").getextrema())[1] < MASK_WHITE:
            problems.add("mask", "has no white (repaint) pixel")
    return width, height


def _check_outpaint(
    request: common_pb2.OutpaintRequest, ext: Extension, limits: inference_pb2.ModelLimits, problems: _Problems
):
    sides = {"left": ext.left, "top": ext.top, "right": ext.right, "bottom": ext.bottom}
    if not any(sides.values()):
        problems.add("extension", "extend at least one side by a positive number of pixels")
    image = _decode(problems, "image", request.image, limits)
    if image is None:
        return 0, 0
    size = {"width": image.size[0] + ext.left + ext.right, "height": image.size[1] + ext.top + ext.bottom}
    for axis, (first, second) in (("width", ("left", "right")), ("height", ("top", "bottom"))):
        axis_problems = _Problems("")
        _check_size(axis_problems, "", size[axis], limits, what=f"the extended {axis}")
        # Blame the sides that were extended (the image alone when neither was).
        blamed = [f"extension.{side}" for side in (first, second) if sides[side] > 0] or ["image"]
        for violation in axis_problems.found:
            for name in blamed:
                problems.add(name, violation.description)
    return size["width"], size["height"]


def _decode(problems: _Problems, field: str, data: bytes, limits: inference_pb2.ModelLimits) -> Image.Image | None:
    """The decoded image, or None with the reason recorded. The header's size is checked first, so a
    small file claiming a huge canvas (a decompression bomb) is refused before any pixel is decoded."""
    if not data:
        problems.add(field, "is required")
        return None
    try:
        with Image.open(io.BytesIO(data), formats=INPUT_FORMATS) as header:
            width, height = header.size
            if max(width, height) > limits.max_size or width * height > limits.max_size**2:
                problems.add(field, f"is {width}x{height}; the largest side allowed is {limits.max_size}")
                return None
            header.load()
            return header.copy()
    except Image.DecompressionBombError:  # Pillow's own guard, for headers far beyond any limit
        problems.add(field, f"is far larger than the largest side allowed ({limits.max_size})")
        return None
    except Exception as error:  # Pillow raises many kinds for bad bytes
        problems.add(field, f"is not a decodable PNG, JPEG or WebP image ({type(error).__name__})")
        return None


def _check_size(
    problems: _Problems, field: str, value: int, limits: inference_pb2.ModelLimits, what: str | None = None
) -> None:
    label = f"{what} {value}" if what else f"{value}"
    if not limits.min_size <= value <= limits.max_size:
        problems.add(field, f"{label} is outside [{limits.min_size}, {limits.max_size}]")
    elif limits.size_multiple and value % limits.size_multiple:
        problems.add(field, f"{label} is not a multiple of {limits.size_multiple}")


def _check_matches(problems: _Problems, field: str, given: int, actual: int) -> None:
    if given and given != actual:
        problems.add(field, f"must be 0 or {actual} (from the image), got {given}")
