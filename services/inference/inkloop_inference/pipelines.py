"""One generation: text-to-image, inpaint, outpaint or edit with a loaded Qwen-Image model.

    requests = [GenerationRequest(kind="text_to_image", prompt="一只猫", width=1024, height=1024, seed=7)]
    for request in requests:
        request.validate(model.limits)
    results = run(model, requests, on_step=print, should_cancel=lambda: False)

Batching. `run` takes requests that share a `batch_key` (kind, output size, steps, CFG scale) and
makes ONE diffusers pipeline call for all of them. Every request is flattened into `num_images`
entries; entry k of a request gets its own CPU `torch.Generator` seeded `(seed + k) mod 2**64`.
So image k of a request is the image a one-image request with seed `seed + k` gives, and a request
gets the same bytes alone or in any batch (with `LoadedModel.batch_invariant`, the default: see
`loading.make_batch_invariant`; without it, batch neighbours can move a pixel by rounding).
Noise is drawn on the CPU, so a seed starts from the same noise on any device.

Inpaint: white mask pixels are repainted; every pixel outside the mask (outside the feather zone,
with `mask_feather_px`) is the input pixel, exactly. Outpaint: the image is extended on any side,
the new border is inpainted and the original pixels are put back, exactly (with `mask_feather_px`:
all but a band of that width along the new edges, where the two are blended). Edit: the edit model
redraws the image as the instruction (the prompt) says; the image conditions both the text encoder
and the transformer, at its `editing.condition_size`, which is part of the batch key.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from inkloop.errors import Cancelled, FailedPrecondition
from inkloop.generation import (
    INPUT_FORMATS,
    KINDS,
    MASK_WHITE,
    OUTPUT_FORMATS,
    SEED_SPACE,
    GenerationRequest,
    Kind,
    Limits,
    Outpaint,
    OutputFormat,
)
from inkloop.generation import decode_image as _decode_image
from inkloop_inference.batching import OnStep
from inkloop_inference.editing import NO_EDIT_MODEL, condition_size
from inkloop_inference.loading import LoadedModel
from inkloop_inference.previews import Previewer

JPEG_QUALITY = 95
WEBP_QUALITY = 95
#: Inpaint/outpaint start from pure noise in the masked region: it is fully regenerated.
INPAINT_STRENGTH = 1.0
#: The contract's names, re-exported: callers of `run` build requests with them.
__all__ = [
    "INPUT_FORMATS",
    "KINDS",
    "OUTPUT_FORMATS",
    "SEED_SPACE",
    "GenerationRequest",
    "GenerationResult",
    "Kind",
    "Outpaint",
    "OutputFormat",
    "batch_key",
    "run",
]

#: CFG without a negative prompt: diffusers needs one, and " " is the neutral choice.
EMPTY_NEGATIVE_PROMPT = " "


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each stage of the pipeline call that produced a result (shared by its batch).

    text_encode_s: the text encoder (prompts and negative prompts). denoise_s: the pipeline call up to
    the end of the last step (latent preparation, for inpaint the VAE encode, and the steps).
    decode_s: VAE decode and conversion to pixels. postprocess_s: compositing and file encoding.
    """

    text_encode_s: float
    denoise_s: float
    decode_s: float
    postprocess_s: float


@dataclass(frozen=True)
class GenerationResult:
    images: tuple[bytes, ...]
    seeds: tuple[int, ...]  # seeds[k] made images[k]
    width: int
    height: int
    output_format: OutputFormat
    timings: Timings
    batch_size: int  # images in the pipeline call that made these


def batch_key(request: GenerationRequest) -> Hashable:
    """Requests with equal keys can share one pipeline call (`run`). Call on validated requests."""
    width, height = request.output_size()
    cfg_scale = request.true_cfg_scale if request.uses_cfg else None
    # The edit pipeline resizes every image of a call to the first one's condition size.
    condition = condition_size(_image_size(request.image)) if request.kind == "edit" else None
    return request.kind, width, height, request.steps, cfg_scale, request.model_variant, condition


def run(
    model: LoadedModel,
    requests: list[GenerationRequest],
    *,
    on_step: OnStep | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[GenerationResult]:
    """Generate the images of `requests` (one batch key) in one pipeline call; results in order.

    `on_step(done, total, previews)` is called after each denoising step (done = 1..total), with
    one live preview per request (JPEG bytes, b"" when the request wants none now). `should_cancel` is
    polled before the call and after every step; when it returns True the call is aborted at once
    and `Cancelled` is raised.
    """
    # 1. Check inputs: each request valid, all sharing one batch key.
    if not requests:
        return []
    for request in requests:
        request.validate(model.limits_of(request.kind))
    keys = {batch_key(request) for request in requests}
    if len(keys) > 1:
        raise ValueError(f"requests of different batch keys cannot share a pipeline call: {keys}")
    first = requests[0]
    width, height = first.output_size()
    if should_cancel is not None and should_cancel():
        raise Cancelled("cancelled before the generation started")

    with model.lock, torch.inference_mode():
        # 1b. The batch's variant: its adapters and scheduler (the base weights stay as they are).
        if model.variants is not None and first.kind != "edit":
            model.variants.activate(first.model_variant)

        # 2. Seeds: entry k of a request uses seed + k; one generator per image.
        seeds = [_request_seeds(request) for request in requests]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for per in seeds for seed in per]

        # 3. Images: decode, build the outpaint canvas, mask and compositing alpha per request.
        paint: list[_Paint] = []
        if first.kind in ("inpaint", "outpaint"):
            paint = [_prepare_paint(request, model.limits) for request in requests]
        pipe = _pipeline(model, first.kind)
        # Edit: each input image, and it resized as the pipeline resizes it for its text encoder.
        edit_images = (
            [_decode_image(request.image, "image").convert("RGB") for request in requests]
            if first.kind == "edit"
            else []
        )
        conditions = [_condition_image(pipe, image) for image in edit_images]

        # 4. Encode prompts one request at a time: no padding against other prompts.
        started = time.perf_counter()
        counts = [request.num_images for request in requests]
        prompts = [request.prompt for request in requests]
        prompt_embeds = _encode_prompts(model, pipe, prompts, counts, conditions)
        negative_embeds = None
        if first.uses_cfg:
            negatives = [request.negative_prompt or EMPTY_NEGATIVE_PROMPT for request in requests]
            negative_embeds = _encode_prompts(model, pipe, negatives, counts, conditions)
        text_encode_s = time.perf_counter() - started

        # 5. Denoise and decode: one pipeline call; progress and cancellation after every step.
        firsts = [sum(counts[:index]) for index in range(len(requests))]
        previewer = Previewer([request.preview_every_steps for request in requests], firsts, width, height)
        state = _CallState(on_step=on_step, should_cancel=should_cancel, previewer=previewer)
        call: dict[str, Any] = dict(
            prompt_embeds=prompt_embeds[0],
            prompt_embeds_mask=prompt_embeds[1],
            true_cfg_scale=first.true_cfg_scale if first.uses_cfg else 1.0,
            width=width,
            height=height,
            num_inference_steps=first.steps,
            generator=generators,
            max_sequence_length=model.limits.max_sequence_length,
            callback_on_step_end=state.on_step_end,
            output_type="pil",
        )
        if negative_embeds is not None:
            call.update(negative_prompt_embeds=negative_embeds[0], negative_prompt_embeds_mask=negative_embeds[1])
        if paint:
            call.update(
                image=[
                    item.canvas
                    for item, request in zip(paint, requests, strict=True)
                    for _ in range(request.num_images)
                ],
                mask_image=[
                    item.pipeline_mask
                    for item, request in zip(paint, requests, strict=True)
                    for _ in range(request.num_images)
                ],
                strength=INPAINT_STRENGTH,
            )
        if edit_images:
            call["image"] = [image for image, count in zip(edit_images, counts, strict=True) for _ in range(count)]
        state.started = time.perf_counter()
        if model.cfg_hook is not None and negative_embeds is not None:
            model.cfg_hook.arm(*negative_embeds)
        try:
            images = pipe(**call).images
        finally:
            if model.cfg_hook is not None:
                model.cfg_hook.disarm()
            # An aborted call skips the pipeline's own reset of step-cache state.
            pipe.transformer._reset_stateful_cache()
        finished = time.perf_counter()

    # 6. Put the original pixels back (inpaint, outpaint) and encode the files.
    results = []
    flat = iter(images)
    for index, request in enumerate(requests):
        post_started = time.perf_counter()
        mine = [next(flat) for _ in range(request.num_images)]
        if paint:
            mine = [_composite(paint[index], image) for image in mine]
        files = tuple(encode_image(image, request.output_format) for image in mine)
        timings = Timings(
            text_encode_s=text_encode_s,
            denoise_s=state.last_step_end - state.started,
            decode_s=finished - state.last_step_end,
            postprocess_s=time.perf_counter() - post_started,
        )
        results.append(
            GenerationResult(
                images=files,
                seeds=tuple(seeds[index]),
                width=width,
                height=height,
                output_format=request.output_format,
                timings=timings,
                batch_size=len(generators),
            )
        )
    return results


def encode_image(image: Image.Image, output_format: OutputFormat) -> bytes:
    """The image file bytes: PNG (lossless), JPEG or WebP (quality 95). Deterministic."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    elif output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=WEBP_QUALITY)
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue()


def feathered_alpha(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """uint8 alpha of the generated image: 255 in the mask, ramping down across its edge.

    A box blur of radius `feather_px`: a pixel farther than `feather_px` (in x and y) from every
    mask pixel gets exactly 0, so it keeps its original value.
    """
    alpha = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    if feather_px > 0:
        alpha = alpha.filter(ImageFilter.BoxBlur(feather_px))
    return np.asarray(alpha)


# --- internals ---------------------------------------------------------------------------------


@dataclass
class _CallState:
    """Progress, cancellation and stage times of one pipeline call, fed by its step callback."""

    on_step: OnStep | None
    should_cancel: Callable[[], bool] | None
    previewer: Previewer | None = None
    started: float = 0.0
    last_step_end: float = 0.0

    def on_step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        total = int(pipe.num_timesteps)
        previews: Sequence[bytes] = ()
        if self.previewer is not None and self.previewer.active:
            previews = self.previewer.after_step(pipe, step + 1, callback_kwargs["latents"])
        self.last_step_end = time.perf_counter()
        if self.on_step is not None:
            self.on_step(step + 1, total, previews)
        if self.should_cancel is not None and self.should_cancel():
            # Raising aborts the pipeline at once (setting pipe._interrupt would still VAE-decode).
            raise Cancelled(f"cancelled after step {step + 1} of {total}")
        return callback_kwargs


@dataclass(frozen=True)
class _Paint:
    """Inputs of one inpaint/outpaint request on the output canvas."""

    original: np.ndarray  # HxWx3 uint8: the pixels to keep (the source; outpaint: edge-extended)
    alpha: np.ndarray  # HxW uint8: weight of the generated pixel (0: the original, exactly)
    canvas: Image.Image = field(repr=False)  # what the pipeline sees
    pipeline_mask: Image.Image = field(repr=False)  # repaint mask for the pipeline, whole latent cells


def _pipeline(model: LoadedModel, kind: Kind) -> Any:
    if kind == "text_to_image":
        return model.t2i
    if kind == "edit":
        if model.edit is None:
            raise FailedPrecondition(NO_EDIT_MODEL)
        return model.edit.pipe
    return model.inpaint


def _image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data), formats=INPUT_FORMATS) as image:
        return image.size


def _condition_image(pipe: Any, image: Image.Image) -> Image.Image:
    """`image` as the edit pipeline shows it to its text encoder: resized by the pipeline's own image
    processor to its condition size (the pipeline resizes it the same way for its VAE)."""
    width, height = condition_size(image.size)
    resized: Image.Image = pipe.image_processor.resize(image, height, width)
    return resized


def _request_seeds(request: GenerationRequest) -> list[int]:
    seed = request.seed if request.seed is not None else secrets.randbits(63)
    return [(seed + k) % SEED_SPACE for k in range(request.num_images)]


def _encode_prompts(
    model: LoadedModel, pipe: Any, prompts: list[str], counts: list[int], images: Sequence[Image.Image] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of each prompt alone (with its image, for edit), repeated per image, padded with
    zeros into one batch.

    Encoded one at a time, each equals what the pipeline computes for that prompt alone; the mask
    marks the padding, as diffusers' own batched encoding does.
    """
    rows = []
    for index, (prompt, count) in enumerate(zip(prompts, counts, strict=True)):
        image = {"image": images[index]} if images else {}
        embeds, _ = pipe.encode_prompt(
            prompt=prompt,
            device=torch.device(model.device),
            num_images_per_prompt=1,
            max_sequence_length=model.limits.max_sequence_length,
            **image,
        )
        rows.extend([embeds] * count)
    longest = max(row.shape[1] for row in rows)
    embeds = torch.cat([F.pad(row, (0, 0, 0, longest - row.shape[1])) for row in rows])
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=embeds.device)
    for index, row in enumerate(rows):
        mask[index, : row.shape[1]] = 1
    return embeds, mask


def _prepare_paint(request: GenerationRequest, limits: Limits) -> _Paint:
    image = _decode_image(request.image, "image")
    source = np.asarray(image.convert("RGB"))
    if request.kind == "inpaint":
        repaint = _binary_mask(_decode_image(request.mask, "mask"))
        original = source
        alpha = feathered_alpha(repaint, request.mask_feather_px)
    else:
        extension = request.outpaint or Outpaint()
        pads = ((extension.top, extension.bottom), (extension.left, extension.right))
        original = np.pad(source, (*pads, (0, 0)), mode="edge")  # a neutral start for the border
        repaint = np.pad(np.zeros(source.shape[:2], dtype=bool), pads, constant_values=True)
        alpha = feathered_alpha(repaint, request.mask_feather_px)
    # The pipeline repaints whole latent cells; repaint every cell that holds a changed pixel.
    cell = limits.vae_scale_factor
    height, width = alpha.shape
    cells = (alpha > 0).reshape(height // cell, cell, width // cell, cell).any(axis=(1, 3))
    pipeline_mask = np.kron(cells, np.ones((cell, cell), dtype=bool))
    return _Paint(
        original=original,
        alpha=alpha,
        canvas=Image.fromarray(original),
        pipeline_mask=Image.fromarray(np.where(pipeline_mask, 255, 0).astype(np.uint8)),
    )


def _composite(paint: _Paint, generated: Image.Image) -> Image.Image:
    """original * (1 - alpha) + generated * alpha, rounded; alpha 0 gives the original exactly."""
    new = np.asarray(generated.convert("RGB")).astype(np.int32)
    old = paint.original.astype(np.int32)
    alpha = paint.alpha.astype(np.int32)[..., None]
    mixed = (old * (255 - alpha) + new * alpha + 127) // 255
    return Image.fromarray(mixed.astype(np.uint8))


def _binary_mask(mask: Image.Image) -> np.ndarray:
    """White (>= MASK_WHITE in grey) = repaint: the contract's rule, which validation checks too."""
    return np.asarray(mask.convert("L")) >= MASK_WHITE
