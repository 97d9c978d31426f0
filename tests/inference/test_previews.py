"""Live previews from the latents: on the steps asked for, per request in a batch, small JPEGs of the
image so far that change nothing in the result; and through gRPC."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inkloop.errors import InvalidArgument
from inkloop_inference.loading import LoadedModel
from inkloop_inference.pipelines import run
from inkloop_inference.previews import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, MAX_SIDE, Previewer

from .test_pipelines import t2i


def _record(into: list[tuple[int, list[bytes]]]) -> Any:
    return lambda step, total, previews: into.append((step, list(previews)))


def test_previews_come_on_the_asked_steps_and_change_nothing(tiny_model: LoadedModel) -> None:
    plain = run(tiny_model, [t2i(steps=6, seed=4, width=128, height=64)])
    seen: list[tuple[int, list[bytes]]] = []
    previewed = run(
        tiny_model, [t2i(steps=6, seed=4, width=128, height=64, preview_every_steps=2)], on_step=_record(seen)
    )
    assert previewed[0].images == plain[0].images  # previews never touch the latents
    assert [step for step, previews in seen if previews and previews[0]] == [2, 4, 6]
    image = Image.open(io.BytesIO(seen[1][1][0]))
    factor = tiny_model.t2i.vae_scale_factor
    assert image.format == "JPEG" and image.size == (128 // factor, 64 // factor)  # latent resolution


def test_each_request_of_a_batch_gets_its_own_previews(tiny_model: LoadedModel) -> None:
    seen: list[tuple[int, list[bytes]]] = []
    requests = [
        t2i(steps=4, seed=1, preview_every_steps=1),
        t2i(steps=4, seed=2),
        t2i(steps=4, seed=3, preview_every_steps=4),
    ]
    run(tiny_model, requests, on_step=_record(seen))
    assert [[bool(p) for p in previews] for _, previews in seen] == [
        [True, False, False],
        [True, False, False],
        [True, False, False],
        [True, False, True],
    ]
    last = seen[-1][1]
    assert last[0] != last[2]  # two seeds, two images so far


def test_the_projection_is_comfyuis_wan21_latent_to_rgb() -> None:
    class Pipe:  # what Previewer reads of a pipeline: the unpacking, the VAE factor and a scheduler
        vae_scale_factor = 8

        class scheduler:
            step_index = None
            sigmas = ()

        @staticmethod
        def _unpack_latents(latents: torch.Tensor, height: int, width: int, factor: int) -> torch.Tensor:
            from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

            return QwenImagePipeline._unpack_latents(latents, height, width, factor)

    # One latent cell of Qwen-Image's 16 channels, all 1: each RGB value is its column sum plus bias.
    latents = torch.ones(1, 1, 16 * 4)
    [preview] = Previewer([1], [0], 16, 16).after_step(Pipe, 1, latents)
    pixel = np.asarray(Image.open(io.BytesIO(preview)).convert("RGB"))[0, 0].astype(float)
    factors = np.array(LATENT_RGB_FACTORS)
    expected = np.clip((factors.sum(axis=0) + np.array(LATENT_RGB_BIAS) + 1) / 2, 0, 1) * 255
    assert np.abs(pixel - expected).max() <= 6  # JPEG rounding


def test_previews_are_capped_in_size_and_checked(tiny_model: LoadedModel) -> None:
    assert MAX_SIDE == 256
    with pytest.raises(InvalidArgument) as too_often:
        run(tiny_model, [t2i(steps=2, preview_every_steps=3)])
    assert {v.field for v in too_often.value.violations} == {"preview_every_steps"}
