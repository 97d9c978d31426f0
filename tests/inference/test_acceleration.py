"""The optional speed-ups: batched CFG gives the stock result with half the transformer calls; the
step cache skips work and is off at threshold 0; settings refuse contradictory combinations."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from inkloop_inference import pipelines
from inkloop_inference.acceleration import Acceleration
from inkloop_inference.loading import LoadedModel, load_pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.settings import InferenceSettings

REQUEST = GenerationRequest(
    kind="text_to_image",
    prompt="a paper boat 纸船",
    negative_prompt="blurry",
    width=64,
    height=64,
    steps=3,
    seed=3,
    true_cfg_scale=4.0,
)


def _load(tiny_dir: Path, acceleration: Acceleration) -> LoadedModel:
    return load_pipelines(tiny_dir, device="cpu", dtype=torch.float32, batch_invariant=False, acceleration=acceleration)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _count_block_calls(model: LoadedModel, block: int) -> list[int]:
    """Counts runs of a block's attention: a block skipped by the step cache is called but never runs it."""
    calls = [0]

    def count(_module: torch.nn.Module, _args: object, _output: object) -> None:
        calls[0] += 1

    model.t2i.transformer.transformer_blocks[block].attn.register_forward_hook(count)
    return calls


@pytest.fixture(scope="module")
def stock(tiny_dir: Path) -> tuple[np.ndarray, int]:
    model = _load(tiny_dir, Acceleration())
    calls = _count_block_calls(model, 0)
    image = pipelines.run(model, [REQUEST])[0].images[0]
    return _pixels(image), calls[0]


def test_batched_cfg_matches_stock_with_half_the_transformer_calls(tiny_dir: Path, stock) -> None:
    stock_pixels, stock_calls = stock
    model = _load(tiny_dir, Acceleration(batched_cfg=True))
    calls = _count_block_calls(model, 0)
    pixels = _pixels(pipelines.run(model, [REQUEST])[0].images[0])
    assert stock_calls == 2 * REQUEST.steps  # stock diffusers: cond and uncond one after the other
    assert calls[0] == REQUEST.steps
    assert model.cfg_hook is not None and model.cfg_hook.batched_calls == REQUEST.steps
    # Padding the shorter prompt (masked) changes float rounding, not the image.
    assert np.abs(pixels - stock_pixels).max() <= 2


def test_batched_cfg_falls_back_when_the_unconditional_pass_is_not_what_was_armed(tiny_dir: Path, stock) -> None:
    model = _load(tiny_dir, Acceleration(batched_cfg=True))
    assert model.cfg_hook is not None
    pipe = model.t2i
    embeds, mask = pipe.encode_prompt(prompt=["a paper boat 纸船"], device="cpu")
    negative, negative_mask = pipe.encode_prompt(prompt=["blurry"], device="cpu")
    wrong, wrong_mask = pipe.encode_prompt(prompt=["something else entirely"], device="cpu")

    def call(**extra: object) -> np.ndarray:
        image = pipe(
            prompt_embeds=embeds,
            prompt_embeds_mask=mask,
            negative_prompt_embeds=negative,
            negative_prompt_embeds_mask=negative_mask,
            true_cfg_scale=4.0,
            width=64,
            height=64,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(3),
            output_type="np",
        ).images[0]
        return np.asarray(image)

    plain = call()
    model.cfg_hook.arm(wrong, wrong_mask)
    try:
        guarded = call()
    finally:
        model.cfg_hook.disarm()
    assert np.abs(guarded - plain).max() < 1e-2  # the wrong guess was detected and recomputed


def test_step_cache_is_exact_when_off_and_skips_blocks_when_on(tiny_dir: Path, stock) -> None:
    stock_pixels, _ = stock
    off = _load(tiny_dir, Acceleration(step_cache_threshold=0.0))
    assert np.array_equal(_pixels(pipelines.run(off, [REQUEST])[0].images[0]), stock_pixels)

    # Random weights change a lot between steps: only a very loose threshold makes the cache hit.
    on = _load(tiny_dir, Acceleration(step_cache_threshold=100.0))
    last_block = len(on.t2i.transformer.transformer_blocks) - 1
    calls = _count_block_calls(on, last_block)
    request = GenerationRequest(**{**REQUEST.__dict__, "steps": 8})
    result = pipelines.run(on, [request])[0]
    assert calls[0] < 2 * request.steps  # some steps reused the cached residual
    assert Image.open(io.BytesIO(result.images[0])).size == (64, 64)
    # The cache state is per call: a second call gives the same image.
    assert pipelines.run(on, [request])[0].images == result.images


def test_batched_cfg_needs_batch_invariance_off() -> None:
    with pytest.raises(ValidationError, match="batch_invariant"):
        InferenceSettings(batched_cfg=True)
    assert InferenceSettings(batched_cfg=True, batch_invariant=False).batched_cfg
