"""The generation contract: what a request asks for, and which requests a model refuses.

One rule set, used by the gateway before a job is queued or charged and by inference before a batch
runs, so both refuse the same requests with the same field paths and messages. A protobuf request
becomes a `GenerationRequest` with the model's `Defaults` filled in (`request_from_pb`), and
`validate` checks it against the model's `Limits`, naming each field as the request message does
(`parameters.width`, `extension.left`, `mask`). Torch-free: images are read with Pillow only.

    request = request_from_pb(task.inpaint, "inpaint", defaults)
    validate(request, limits)  # InvalidArgument naming every field at fault

The one bound a caller may not be able to check is the exact prompt token count: it needs the
model's tokenizer (`Limits.count_prompt_tokens`). Without it a prompt is checked by its length in
characters against `max_prompt_chars`, a bound no prompt inference accepts can exceed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from PIL import Image

from inkloop.errors import FieldViolation, InvalidArgument
from inkloop.v1 import common_pb2, inference_pb2

Kind = Literal["text_to_image", "inpaint", "outpaint", "edit"]
OutputFormat = Literal["png", "jpeg", "webp"]
KINDS: tuple[Kind, ...] = ("text_to_image", "inpaint", "outpaint", "edit")
#: Each kind's GenerationKind, and its field in GenerationTask's oneof (named as the kind).
PB_OF_KIND: dict[Kind, common_pb2.GenerationKind] = {
    "text_to_image": common_pb2.GENERATION_KIND_TEXT_TO_IMAGE,
    "inpaint": common_pb2.GENERATION_KIND_INPAINT,
    "outpaint": common_pb2.GENERATION_KIND_OUTPAINT,
    "edit": common_pb2.GENERATION_KIND_EDIT,
}
KIND_OF_PB: dict[int, Kind] = {value: kind for kind, value in PB_OF_KIND.items()}
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
#: Inputs are decoded with these Pillow plugins only (no TIFF, BMP, PSD … attack surface).
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
#: Seeds are 64-bit; image k of a request uses (seed + k) mod SEED_SPACE.
SEED_SPACE = 2**64
#: Grey level from which a mask pixel is repainted.
MASK_WHITE = 128
#: The platform's size contract: every side a multiple of this (and of what the VAE needs).
SIZE_MULTIPLE = 16
#: No Qwen2 token is longer than this many characters (the longest entries of its BPE vocabulary, runs
#: of spaces or dashes, are 128): so a prompt longer than max tokens × this cannot fit, whatever it says.
MAX_CHARS_PER_TOKEN = 128

FORMAT_OF_PB: dict[int, OutputFormat] = {
    common_pb2.IMAGE_FORMAT_UNSPECIFIED: "png",
    common_pb2.IMAGE_FORMAT_PNG: "png",
    common_pb2.IMAGE_FORMAT_JPEG: "jpeg",
    common_pb2.IMAGE_FORMAT_WEBP: "webp",
}
PB_OF_FORMAT: dict[OutputFormat, common_pb2.ImageFormat] = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
}

#: Domain field -> the request message's field, for the violations `validate` reports.
FIELD_NAMES = {
    "prompt": "parameters.prompt",
    "negative_prompt": "parameters.negative_prompt",
    "width": "parameters.width",
    "height": "parameters.height",
    "steps": "parameters.steps",
    "true_cfg_scale": "parameters.true_cfg_scale",
    "seed": "parameters.seed",
    "num_images": "parameters.num_images",
    "output_format": "parameters.output_format",
    "outpaint.left": "extension.left",
    "outpaint.top": "extension.top",
    "outpaint.right": "extension.right",
    "outpaint.bottom": "extension.bottom",
    "outpaint": "extension",
}
#: The feather field of each kind's message.
FEATHER_FIELD = {
    "text_to_image": "mask_feather_px",
    "inpaint": "mask_feather_px",
    "outpaint": "feather_px",
    "edit": "mask_feather_px",
}


@dataclass(frozen=True)
class Limits:
    """What one loaded model accepts (inference knows them all and reports them in ModelInfo)."""

    min_size: int = 64
    max_size: int = 2048
    size_multiple: int = SIZE_MULTIPLE
    min_steps: int = 2  # 1 step gives NaN with the real scheduler's shift_terminal=0.02
    max_steps: int = 100
    max_images: int = 4
    max_cfg_scale: float = 20.0
    max_mask_feather_px: int = 128
    #: Prompt tokens after the chat template's fixed prefix is dropped (what the pipeline keeps).
    max_sequence_length: int = 1024
    vae_scale_factor: int = 8
    #: Counts the tokens the pipeline would keep for a prompt; None: `max_prompt_chars` is checked.
    count_prompt_tokens: Callable[[str], int] | None = field(default=None, compare=False, repr=False)

    @property
    def max_prompt_chars(self) -> int:
        return self.max_sequence_length * MAX_CHARS_PER_TOKEN


@dataclass(frozen=True)
class Defaults:
    """What zero or unset request fields mean for the loaded model."""

    width: int
    height: int
    steps: int
    true_cfg_scale: float


@dataclass(frozen=True)
class Outpaint:
    """Pixels to add on each side of the image."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    """One request: up to `num_images` images from one prompt, seed and size.

    `width`/`height`: the output size; required for text_to_image. For inpaint and outpaint 0 means
    "from the image" (its size, or its size plus the extension); a non-zero value must match that.
    For edit 0 means the image's size rounded down to the size multiple (`edit_output_size`); any
    other valid size may be asked for (the model redraws the image at it).
    `true_cfg_scale` > 1 turns classifier-free guidance on (with `negative_prompt`, or " " if none);
    1 turns it off. `seed` None: a random one is drawn and reported in the result.
    `mask_feather_px` blends across the edge of the repainted region (inpaint: the mask; outpaint:
    the new border); pixels farther than that from it keep their exact input value.
    """

    kind: Kind
    prompt: str
    negative_prompt: str = ""
    width: int = 0
    height: int = 0
    steps: int = 50
    true_cfg_scale: float = 4.0
    seed: int | None = None
    num_images: int = 1
    output_format: OutputFormat = "png"
    image: bytes = b""
    mask: bytes = b""
    mask_feather_px: int = 0
    outpaint: Outpaint | None = None
    preview_every_steps: int = 0
    #: The inference variant (LoRA set and schedule) to run; "" = the default one.
    model_variant: str = ""

    @property
    def uses_cfg(self) -> bool:
        return self.true_cfg_scale > 1.0

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images this request produces; reads only the image header."""
        if self.kind == "text_to_image":
            return self.width, self.height
        with Image.open(io.BytesIO(self.image), formats=INPUT_FORMATS) as image:
            width, height = image.size
        if self.kind == "edit":
            width, height = edit_output_size(width, height)
        if self.kind == "outpaint" and self.outpaint is not None:
            width += self.outpaint.left + self.outpaint.right
            height += self.outpaint.top + self.outpaint.bottom
        return self.width or width, self.height or height

    def validate(self, limits: Limits) -> None:
        """Raise `InvalidArgument` naming every (domain) field that `limits` or the kind rule out."""
        problems = _Problems()
        if self.kind not in KINDS:
            raise InvalidArgument("kind", f"must be one of {list(KINDS)}, got {self.kind!r}")
        self._check_common(limits, problems)
        if self.kind == "text_to_image":
            _check_size("width", self.width, limits, problems)
            _check_size("height", self.height, limits, problems)
            for name, given in (("image", self.image), ("mask", self.mask)):
                if given:
                    problems.add(name, "is not used by text_to_image")
            if self.outpaint is not None:
                problems.add("outpaint", "is not used by text_to_image")
            if self.mask_feather_px:
                problems.add("mask_feather_px", "is not used by text_to_image")
        elif self.kind == "inpaint":
            self._check_inpaint(limits, problems)
        elif self.kind == "edit":
            self._check_edit(limits, problems)
        else:
            self._check_outpaint(limits, problems)
        if problems.found:
            raise InvalidArgument.of(problems.found)

    def _check_common(self, limits: Limits, problems: _Problems) -> None:
        if not self.prompt.strip():
            problems.add("prompt", "must not be empty")
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            _check_prompt_length(name, text, limits, problems)
        if not limits.min_steps <= self.steps <= limits.max_steps:
            problems.add("steps", f"must be in [{limits.min_steps}, {limits.max_steps}], got {self.steps}")
        if not 1 <= self.num_images <= limits.max_images:
            problems.add("num_images", f"must be in [1, {limits.max_images}], got {self.num_images}")
        if not (math.isfinite(self.true_cfg_scale) and 1.0 <= self.true_cfg_scale <= limits.max_cfg_scale):
            problems.add(
                "true_cfg_scale", f"must be in [1, {limits.max_cfg_scale:g}] (1 = off), got {self.true_cfg_scale:g}"
            )
        if not 0 <= self.preview_every_steps <= self.steps:
            problems.add("preview_every_steps", f"must be in [0, steps = {self.steps}], got {self.preview_every_steps}")
        if self.seed is not None and not 0 <= self.seed < SEED_SPACE:
            problems.add("seed", f"must be in [0, 2^64), got {self.seed}")
        if self.output_format not in OUTPUT_FORMATS:
            problems.add("output_format", f"must be one of {list(OUTPUT_FORMATS)}, got {self.output_format!r}")
        if not 0 <= self.mask_feather_px <= limits.max_mask_feather_px:
            problems.add("mask_feather_px", f"must be in [0, {limits.max_mask_feather_px}], got {self.mask_feather_px}")

    def _check_inpaint(self, limits: Limits, problems: _Problems) -> None:
        if self.outpaint is not None:
            problems.add("outpaint", "is not used by inpaint")
        image = _decode_or_report("image", self.image, limits, problems)
        mask = _decode_or_report("mask", self.mask, limits, problems)
        if image is None:
            return
        width, height = image.size
        _check_size("image", width, limits, problems, what="width")
        _check_size("image", height, limits, problems, what="height")
        _check_matches("width", self.width, width, problems)
        _check_matches("height", self.height, height, problems)
        if mask is None:
            return
        if mask.size != image.size:
            problems.add("mask", f"is {mask.size[0]}x{mask.size[1]}, the image {width}x{height}")
        elif cast(tuple[int, int], mask.convert("L").getextrema())[1] < MASK_WHITE:
            problems.add("mask", "has no white (repaint) pixel")

    def _check_edit(self, limits: Limits, problems: _Problems) -> None:
        for name, given in (
            ("mask", self.mask),
            ("outpaint", self.outpaint),
            ("mask_feather_px", self.mask_feather_px),
        ):
            if given:
                problems.add(name, "is not used by edit: the instruction says what changes")
        image = _decode_or_report("image", self.image, limits, problems)
        if image is None:
            return
        default_width, default_height = edit_output_size(*image.size)
        for axis, given, default in (("width", self.width, default_width), ("height", self.height, default_height)):
            if given:
                _check_size(axis, given, limits, problems)
            elif not limits.min_size <= default <= limits.max_size:
                problems.add(
                    "image",
                    f"is {image.size[0]}x{image.size[1]}: its {axis} as output, {default}, is outside "
                    f"[{limits.min_size}, {limits.max_size}]; set width and height",
                )

    def _check_outpaint(self, limits: Limits, problems: _Problems) -> None:
        if self.mask:
            problems.add("mask", "is not used by outpaint: the new border is the mask")
        extension = self.outpaint or Outpaint()
        sides = {"left": extension.left, "top": extension.top, "right": extension.right, "bottom": extension.bottom}
        for side, pixels in sides.items():
            if pixels < 0:
                problems.add(f"outpaint.{side}", f"must be >= 0, got {pixels}")
        if not any(pixels > 0 for pixels in sides.values()):
            problems.add("outpaint", "extend at least one side by a positive number of pixels")
        image = _decode_or_report("image", self.image, limits, problems)
        if image is None or any(pixels < 0 for pixels in sides.values()):
            return
        for axis, source, (first, second) in (
            ("width", image.size[0], ("left", "right")),
            ("height", image.size[1], ("top", "bottom")),
        ):
            size = source + sides[first] + sides[second]
            axis_problems = _Problems()
            _check_size(axis, size, limits, axis_problems, what=axis)
            # Blame the sides that were extended (the image alone when neither was).
            extended = [f"outpaint.{side}" for side in (first, second) if sides[side] > 0] or ["image"]
            for violation in axis_problems.found:
                for name in extended:
                    problems.add(name, f"the extended {violation.description}")
            _check_matches(axis, getattr(self, axis), size, problems)


def edit_output_size(width: int, height: int) -> tuple[int, int]:
    """An edit's default output size: the image's, each side rounded down to the size multiple."""
    return max(width // SIZE_MULTIPLE, 1) * SIZE_MULTIPLE, max(height // SIZE_MULTIPLE, 1) * SIZE_MULTIPLE


class _Problems:
    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, field_name: str, description: str) -> None:
        self.found.append(FieldViolation(field_name, description))


def _check_prompt_length(name: str, text: str, limits: Limits, problems: _Problems) -> None:
    if not text:
        return
    if limits.count_prompt_tokens is not None:
        tokens = limits.count_prompt_tokens(text)
        if tokens > limits.max_sequence_length:
            problems.add(name, f"is {tokens} tokens with the chat template; the limit is {limits.max_sequence_length}")
    elif len(text) > limits.max_prompt_chars:
        problems.add(
            name,
            f"is {len(text)} characters; more than {limits.max_prompt_chars} cannot fit in "
            f"{limits.max_sequence_length} tokens",
        )


def decode_image(data: bytes, field_name: str) -> Image.Image:
    """The decoded image, or `InvalidArgument` naming the field."""
    try:
        with Image.open(io.BytesIO(data), formats=INPUT_FORMATS) as image:
            image.load()
            return image.copy()
    except Exception as exc:  # Pillow raises many kinds for bad bytes
        raise InvalidArgument(field_name, f"is not a decodable PNG, JPEG or WebP image ({type(exc).__name__})") from exc


def _decode_or_report(field_name: str, data: bytes, limits: Limits, problems: _Problems) -> Image.Image | None:
    """The decoded image, or None with the reason recorded. The header's size is checked first, so a
    small file claiming a huge canvas (a decompression bomb) is refused before any pixel is decoded."""
    if not data:
        problems.add(field_name, "is required")
        return None
    try:
        with Image.open(io.BytesIO(data), formats=INPUT_FORMATS) as header:
            width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own guard, for headers far beyond any limit
        problems.add(field_name, f"is far larger than the largest side allowed ({limits.max_size})")
        return None
    except Exception as exc:  # Pillow raises many kinds for bad bytes
        problems.add(field_name, f"is not a decodable PNG, JPEG or WebP image ({type(exc).__name__})")
        return None
    if max(width, height) > limits.max_size:
        problems.add(field_name, f"is {width}x{height}; the largest side allowed is {limits.max_size}")
        return None
    try:
        return decode_image(data, field_name)
    except InvalidArgument as exc:
        problems.found.extend(exc.violations)
        return None


def _check_size(field_name: str, value: int, limits: Limits, problems: _Problems, what: str | None = None) -> None:
    label = f"{what} {value}" if what else f"{value}"
    if not limits.min_size <= value <= limits.max_size:
        problems.add(field_name, f"{label} is outside [{limits.min_size}, {limits.max_size}]")
    elif value % limits.size_multiple:
        problems.add(field_name, f"{label} is not a multiple of {limits.size_multiple}")


def _check_matches(field_name: str, given: int, actual: int, problems: _Problems) -> None:
    if given and given != actual:
        problems.add(field_name, f"must be 0 or {actual} (from the image), got {given}")


# ---- protobuf in and out


def request_from_pb(
    message: common_pb2.TextToImageRequest
    | common_pb2.InpaintRequest
    | common_pb2.OutpaintRequest
    | common_pb2.EditRequest,
    kind: Kind,
    defaults: Defaults,
) -> GenerationRequest:
    """The request of one kind's message, with the model's defaults for zero and unset fields."""
    parameters = message.parameters
    # An unknown enum value stays visible, so `validate` refuses it by name.
    output_format = FORMAT_OF_PB.get(parameters.output_format, cast(OutputFormat, str(parameters.output_format)))
    request = GenerationRequest(
        kind=kind,
        prompt=parameters.prompt,
        negative_prompt=parameters.negative_prompt,
        width=parameters.width or (defaults.width if kind == "text_to_image" else 0),
        height=parameters.height or (defaults.height if kind == "text_to_image" else 0),
        steps=parameters.steps or defaults.steps,
        true_cfg_scale=(
            parameters.true_cfg_scale if parameters.HasField("true_cfg_scale") else defaults.true_cfg_scale
        ),
        seed=parameters.seed if parameters.HasField("seed") else None,
        num_images=parameters.num_images or 1,
        output_format=output_format,
        preview_every_steps=parameters.preview_every_steps,
        model_variant=parameters.model_variant,
    )
    if isinstance(message, common_pb2.EditRequest):
        return replace(request, image=message.image)
    if isinstance(message, common_pb2.InpaintRequest):
        return replace(request, image=message.image, mask=message.mask, mask_feather_px=message.mask_feather_px)
    if isinstance(message, common_pb2.OutpaintRequest):
        ext = message.extension
        # The output size of an outpaint follows from image + extension; the parameters' size is ignored.
        return replace(
            request,
            width=0,
            height=0,
            image=message.image,
            mask_feather_px=message.feather_px,
            outpaint=Outpaint(left=ext.left, top=ext.top, right=ext.right, bottom=ext.bottom),
        )
    return request


def validate(request: GenerationRequest, limits: Limits, prefix: str = "") -> None:
    """`request.validate(limits)`, the fields named as the request message names them (after `prefix`)."""
    try:
        request.validate(limits)
    except InvalidArgument as error:
        violations = [_message_field(request.kind, violation, prefix) for violation in error.violations]
        raise InvalidArgument.of(violations) from None


def _message_field(kind: Kind, violation: FieldViolation, prefix: str) -> FieldViolation:
    if violation.field == "mask_feather_px":
        name = FEATHER_FIELD[kind]
    else:
        name = FIELD_NAMES.get(violation.field, violation.field)
    return FieldViolation(f"{prefix}{name}", violation.description)


def limits_to_pb(limits: Limits) -> inference_pb2.ModelLimits:
    return inference_pb2.ModelLimits(
        min_size=limits.min_size,
        max_size=limits.max_size,
        size_multiple=limits.size_multiple,
        min_steps=limits.min_steps,
        max_steps=limits.max_steps,
        max_images=limits.max_images,
        max_prompt_tokens=limits.max_sequence_length,
        max_true_cfg_scale=limits.max_cfg_scale,
        max_feather_px=limits.max_mask_feather_px,
    )


def limits_from_pb(message: inference_pb2.ModelLimits) -> Limits:
    """The limits a model reported; what it left unset (an older inference) keeps the contract's default."""
    fallback = Limits()
    return Limits(
        min_size=message.min_size or fallback.min_size,
        max_size=message.max_size or fallback.max_size,
        size_multiple=message.size_multiple or fallback.size_multiple,
        min_steps=message.min_steps or fallback.min_steps,
        max_steps=message.max_steps or fallback.max_steps,
        max_images=message.max_images or fallback.max_images,
        max_cfg_scale=message.max_true_cfg_scale or fallback.max_cfg_scale,
        max_mask_feather_px=message.max_feather_px or fallback.max_mask_feather_px,
        max_sequence_length=message.max_prompt_tokens or fallback.max_sequence_length,
    )


def defaults_to_pb(defaults: Defaults) -> inference_pb2.ModelDefaults:
    return inference_pb2.ModelDefaults(
        width=defaults.width, height=defaults.height, steps=defaults.steps, true_cfg_scale=defaults.true_cfg_scale
    )


def defaults_from_pb(message: inference_pb2.ModelDefaults) -> Defaults:
    return Defaults(message.width, message.height, message.steps, message.true_cfg_scale)
