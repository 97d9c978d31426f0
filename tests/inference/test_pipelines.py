from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from inkloop.errors import Cancelled, InvalidArgument
from inkloop_inference.loading import LoadedModel
from inkloop_inference.pipelines import (
    GenerationRequest,
    Outpaint,
    batch_key,
    encode_image,
    run,
)

STEPS = 2
PROMPTS = {
    "english": "A lighthouse on a cliff at sunset",
    "chinese": "一只橘猫坐在窗台上，阳光洒在它的毛发上",
    "mixed": "A neon sign reading “通义千问” above a café door",
}


def t2i(**fields: Any) -> GenerationRequest:
    defaults: dict[str, Any] = dict(
        kind="text_to_image", prompt=PROMPTS["english"], width=64, height=64, steps=STEPS, true_cfg_scale=1.0, seed=0
    )
    return GenerationRequest(**{**defaults, **fields})


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    repaint = np.zeros((64, 64), dtype=np.uint8)
    repaint[16:40, 20:44] = 255
    return repaint


@contextmanager
def transformer_calls(model: LoadedModel) -> Iterator[list[int]]:
    """Counts the pipeline's transformer calls (a forward hook fires once per call)."""
    calls: list[int] = []
    handle = model.t2i.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


# --- text to image -------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_model: LoadedModel) -> None:
    first = run(tiny_model, [t2i(seed=7)])[0]
    again = run(tiny_model, [t2i(seed=7)])[0]
    other = run(tiny_model, [t2i(seed=8)])[0]
    assert first.images == again.images
    assert first.images != other.images
    assert first.seeds == (7,)
    assert pixels(first.images[0]).shape == (64, 64, 3)


@pytest.mark.parametrize("language", sorted(PROMPTS))
def test_chinese_english_and_mixed_prompts(tiny_model: LoadedModel, language: str) -> None:
    result = run(tiny_model, [t2i(prompt=PROMPTS[language], width=96, height=64)])[0]
    image = pixels(result.images[0])
    assert image.shape == (64, 96, 3)
    assert image.std() > 0


def test_batch_gives_each_request_its_solo_bytes_and_the_direct_diffusers_bytes(tiny_model: LoadedModel) -> None:
    # CFG on, with and without a negative prompt; prompts of different token lengths.
    requests = [
        t2i(prompt=PROMPTS["english"], seed=1, true_cfg_scale=4.0),
        t2i(prompt=PROMPTS["chinese"], seed=2, true_cfg_scale=4.0, negative_prompt="blurry, 模糊"),
        t2i(prompt=PROMPTS["mixed"], seed=3, true_cfg_scale=4.0),
    ]
    assert len({batch_key(request) for request in requests}) == 1
    batched = run(tiny_model, requests)
    assert [result.batch_size for result in batched] == [3, 3, 3]
    for request, result in zip(requests, batched, strict=True):
        assert run(tiny_model, [request])[0].images == result.images
        direct = tiny_model.t2i(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or " ",
            true_cfg_scale=request.true_cfg_scale,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            generator=torch.Generator().manual_seed(request.seed or 0),
            max_sequence_length=1024,
        ).images[0]
        assert encode_image(direct, "png") == result.images[0]


def test_num_images_k_is_the_image_of_seed_plus_k(tiny_model: LoadedModel) -> None:
    several, neighbour = run(tiny_model, [t2i(seed=10, num_images=3), t2i(prompt=PROMPTS["chinese"], seed=99)])
    assert several.seeds == (10, 11, 12)
    assert len(set(several.images)) == 3
    for k in range(3):
        assert run(tiny_model, [t2i(seed=10 + k)])[0].images[0] == several.images[k]
    assert run(tiny_model, [t2i(prompt=PROMPTS["chinese"], seed=99)])[0].images == neighbour.images


def test_seed_none_draws_one_and_reports_it(tiny_model: LoadedModel) -> None:
    result = run(tiny_model, [t2i(seed=None)])[0]
    assert len(result.seeds) == 1
    assert run(tiny_model, [t2i(seed=result.seeds[0])])[0].images == result.images


@pytest.mark.parametrize(("output_format", "magic"), [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_output_formats(tiny_model: LoadedModel, output_format: str, magic: bytes) -> None:
    result = run(tiny_model, [t2i(output_format=output_format)])[0]
    assert result.images[0].startswith(magic)
    assert pixels(result.images[0]).shape == (64, 64, 3)


def test_timings_are_measured(tiny_model: LoadedModel) -> None:
    timings = run(tiny_model, [t2i(true_cfg_scale=2.0)])[0].timings
    for value in dataclasses.asdict(timings).values():
        assert value > 0


# --- progress, cancellation, CFG ---------------------------------------------------------------


def test_on_step_reports_every_step(tiny_model: LoadedModel) -> None:
    seen: list[tuple[int, int]] = []
    run(tiny_model, [t2i(steps=4)], on_step=lambda done, total, _previews: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_stops_after_the_current_step(tiny_model: LoadedModel) -> None:
    seen: list[tuple[int, int]] = []
    with transformer_calls(tiny_model) as calls, pytest.raises(Cancelled, match="after step 2 of 4"):
        run(
            tiny_model,
            [t2i(steps=4)],
            on_step=lambda done, total, _previews: seen.append((done, total)),
            should_cancel=lambda: len(seen) >= 2,
        )
    assert seen == [(1, 4), (2, 4)]
    assert len(calls) == 2
    # The model is usable again afterwards.
    assert run(tiny_model, [t2i()])[0].images == run(tiny_model, [t2i()])[0].images


def test_cancel_before_start_does_no_work(tiny_model: LoadedModel) -> None:
    with transformer_calls(tiny_model) as calls, pytest.raises(Cancelled):
        run(tiny_model, [t2i()], should_cancel=lambda: True)
    assert calls == []


@pytest.mark.parametrize(
    ("true_cfg_scale", "negative_prompt", "per_step"),
    [(1.0, "", 1), (1.0, "ugly", 1), (4.0, "", 2), (4.0, "ugly", 2)],
)
def test_cfg_runs_when_scale_above_one_even_without_negative_prompt(
    tiny_model: LoadedModel, true_cfg_scale: float, negative_prompt: str, per_step: int
) -> None:
    with transformer_calls(tiny_model) as calls:
        run(tiny_model, [t2i(steps=3, true_cfg_scale=true_cfg_scale, negative_prompt=negative_prompt)])
    assert len(calls) == 3 * per_step


# --- inpaint and outpaint --------------------------------------------------------------------------


def test_inpaint_keeps_every_pixel_outside_the_mask(
    tiny_model: LoadedModel, source: np.ndarray, mask: np.ndarray
) -> None:
    request = GenerationRequest(
        kind="inpaint",
        prompt="a red apple 一个红苹果",
        image=png(source),
        mask=png(mask),
        steps=STEPS,
        true_cfg_scale=1.0,
        seed=4,
    )
    result = run(tiny_model, [request])[0]
    out = pixels(result.images[0])
    assert (result.width, result.height) == (64, 64)
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], source[keep])
    assert (out[~keep] != source[~keep]).mean() > 0.5
    assert run(tiny_model, [request])[0].images == result.images


def test_feathered_inpaint_keeps_pixels_outside_the_feather_zone(
    tiny_model: LoadedModel, source: np.ndarray, mask: np.ndarray
) -> None:
    feather = 3
    request = GenerationRequest(
        kind="inpaint",
        prompt="a red apple",
        image=png(source),
        mask=png(mask),
        mask_feather_px=feather,
        steps=STEPS,
        true_cfg_scale=1.0,
        seed=4,
    )
    out = pixels(run(tiny_model, [request])[0].images[0])
    zone = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(2 * feather + 1))) > 0
    np.testing.assert_array_equal(out[~zone], source[~zone])
    ring = zone & (mask == 0)
    assert (out[ring] != source[ring]).any()  # the edge is blended outwards
    hard = pixels(run(tiny_model, [dataclasses.replace(request, mask_feather_px=0)])[0].images[0])
    assert not np.array_equal(out, hard)


def test_outpaint_grows_the_canvas_and_keeps_the_original(tiny_model: LoadedModel, source: np.ndarray) -> None:
    request = GenerationRequest(
        kind="outpaint",
        prompt="a wide landscape",
        image=png(source),
        outpaint=Outpaint(left=16, top=0, right=0, bottom=32),
        steps=STEPS,
        true_cfg_scale=1.0,
        seed=5,
    )
    assert batch_key(request) == ("outpaint", 80, 96, STEPS, None, "", None)
    result = run(tiny_model, [request])[0]
    out = pixels(result.images[0])
    assert out.shape == (96, 80, 3)
    assert (result.width, result.height) == (80, 96)
    np.testing.assert_array_equal(out[0:64, 16:80], source)
    border = out[64:, :]
    assert border.std() > 0


def test_feathered_outpaint_blends_only_a_band_of_the_original(tiny_model: LoadedModel, source: np.ndarray) -> None:
    feather = 4
    request = GenerationRequest(
        kind="outpaint",
        prompt="a wide landscape",
        image=png(source),
        outpaint=Outpaint(left=16, right=16),
        mask_feather_px=feather,
        steps=STEPS,
        true_cfg_scale=1.0,
        seed=5,
    )
    out = pixels(run(tiny_model, [request])[0].images[0])
    assert out.shape == (64, 96, 3)
    original = out[:, 16:80]
    np.testing.assert_array_equal(original[:, feather:-feather], source[:, feather:-feather])
    assert not np.array_equal(original, source)  # the band along the new edges is blended


def test_batched_inpaint_matches_solo(tiny_model: LoadedModel, source: np.ndarray, mask: np.ndarray) -> None:
    requests = [
        GenerationRequest(
            kind="inpaint",
            prompt=prompt,
            image=png(np.roll(source, shift, axis=0)),
            mask=png(mask),
            steps=STEPS,
            true_cfg_scale=1.0,
            seed=shift,
            num_images=images,
        )
        for shift, (prompt, images) in enumerate([(PROMPTS["english"], 1), (PROMPTS["chinese"], 2)])
    ]
    batched = run(tiny_model, requests)
    for request, result in zip(requests, batched, strict=True):
        assert run(tiny_model, [request])[0].images == result.images


# --- validation ----------------------------------------------------------------------------------


def _bad_requests(source: np.ndarray, mask: np.ndarray) -> list[tuple[str, GenerationRequest]]:
    image, mask_png = png(source), png(mask)
    inpaint = GenerationRequest(kind="inpaint", prompt="x", image=image, mask=mask_png, steps=STEPS)
    outpaint = GenerationRequest(kind="outpaint", prompt="x", image=image, outpaint=Outpaint(right=16), steps=STEPS)
    return [
        ("width", t2i(width=72)),
        ("width", t2i(width=70)),
        ("height", t2i(height=32)),
        ("height", t2i(height=4096)),
        ("width", t2i(width=0)),
        ("steps", t2i(steps=1)),
        ("steps", t2i(steps=101)),
        ("num_images", t2i(num_images=0)),
        ("num_images", t2i(num_images=5)),
        ("prompt", t2i(prompt="")),
        ("prompt", t2i(prompt="cat " * 1100)),
        ("negative_prompt", t2i(negative_prompt="猫" * 2000, true_cfg_scale=4.0)),
        ("true_cfg_scale", t2i(true_cfg_scale=0.5)),
        ("true_cfg_scale", t2i(true_cfg_scale=float("nan"))),
        ("seed", t2i(seed=-1)),
        ("output_format", t2i(output_format="gif")),
        ("kind", t2i(kind="video")),
        ("image", t2i(image=image)),
        ("image", dataclasses.replace(inpaint, image=b"")),
        ("image", dataclasses.replace(inpaint, image=b"not an image at all")),
        ("image", dataclasses.replace(inpaint, image=png(source[:, :40]), mask=png(mask[:, :40]))),
        ("mask", dataclasses.replace(inpaint, mask=b"")),
        ("mask", dataclasses.replace(inpaint, mask=png(source)[:50])),
        ("mask", dataclasses.replace(inpaint, mask=png(mask[:48]))),
        ("mask", dataclasses.replace(inpaint, mask=png(np.zeros_like(mask)))),
        ("width", dataclasses.replace(inpaint, width=128)),
        ("mask_feather_px", dataclasses.replace(inpaint, mask_feather_px=-1)),
        ("mask_feather_px", dataclasses.replace(inpaint, mask_feather_px=1000)),
        ("mask_feather_px", t2i(mask_feather_px=4)),
        ("outpaint", dataclasses.replace(inpaint, outpaint=Outpaint(left=16))),
        ("outpaint", dataclasses.replace(outpaint, outpaint=Outpaint())),
        ("outpaint", dataclasses.replace(outpaint, outpaint=None)),
        ("outpaint.left", dataclasses.replace(outpaint, outpaint=Outpaint(left=-16, right=32))),
        ("outpaint.left", dataclasses.replace(outpaint, outpaint=Outpaint(left=8))),
        ("outpaint.bottom", dataclasses.replace(outpaint, outpaint=Outpaint(bottom=4000))),
        ("mask", dataclasses.replace(outpaint, mask=mask_png)),
        ("height", dataclasses.replace(outpaint, height=80)),
    ]


def test_every_bad_input_names_its_field(tiny_model: LoadedModel, source: np.ndarray, mask: np.ndarray) -> None:
    for field, request in _bad_requests(source, mask):
        with pytest.raises(InvalidArgument) as caught:
            request.validate(tiny_model.limits)
        fields = [violation.field for violation in caught.value.violations]
        assert field in fields, (field, fields, request.kind)
        with pytest.raises(InvalidArgument):
            run(tiny_model, [request])


def test_good_requests_pass_validation(tiny_model: LoadedModel, source: np.ndarray, mask: np.ndarray) -> None:
    limits = tiny_model.limits
    t2i(width=2048, height=64, steps=100, num_images=4, true_cfg_scale=20.0, seed=2**64 - 1).validate(limits)
    t2i(prompt="cat " * 1000).validate(limits)
    GenerationRequest(
        kind="inpaint", prompt="x", image=png(source), mask=png(mask), width=64, height=64, mask_feather_px=128
    ).validate(limits)
    GenerationRequest(
        kind="outpaint", prompt="x", image=png(source[:60, :60]), outpaint=Outpaint(left=2, right=2, top=4)
    ).validate(limits)


def test_batch_key_groups_compatible_requests(source: np.ndarray, mask: np.ndarray) -> None:
    base = t2i(true_cfg_scale=4.0)
    assert batch_key(base) == batch_key(
        dataclasses.replace(base, prompt="other", seed=5, num_images=3, negative_prompt="n", output_format="jpeg")
    )
    changes = (
        dict(width=128),
        dict(steps=3),
        dict(true_cfg_scale=5.0),
        dict(true_cfg_scale=1.0),
        dict(model_variant="fast"),
    )
    for change in changes:
        assert batch_key(base) != batch_key(dataclasses.replace(base, **change)), change
    assert batch_key(t2i(true_cfg_scale=1.0)) == batch_key(t2i(true_cfg_scale=1.0, negative_prompt="n"))
    inpaint = GenerationRequest(
        kind="inpaint", prompt="x", image=png(source), mask=png(mask), steps=STEPS, true_cfg_scale=1.0
    )
    assert batch_key(inpaint) == ("inpaint", 64, 64, STEPS, None, "", None)
    # Previews are per request: they never split a batch.
    assert batch_key(base) == batch_key(dataclasses.replace(base, preview_every_steps=1))


def test_run_refuses_requests_of_different_batch_keys(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="batch keys"):
        run(tiny_model, [t2i(), t2i(steps=3)])
    assert run(tiny_model, []) == []
