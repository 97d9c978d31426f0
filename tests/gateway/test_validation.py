"""Gateway-side validation: the inference limits, every violation at once, request field paths."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from inkloop.errors import InvalidArgument
from inkloop.generation import MAX_CHARS_PER_TOKEN
from inkloop.v1 import common_pb2, inference_pb2
from inkloop_gateway.admission.ratelimit import request_cost
from inkloop_gateway.admission.validation import validate_task

INFO = inference_pb2.GetModelInfoResponse(
    model_id="tiny",
    model_revision="abc123",
    limits=inference_pb2.ModelLimits(
        min_size=64, max_size=512, size_multiple=16, min_steps=2, max_steps=100, max_images=4, max_prompt_tokens=64
    ),
    defaults=inference_pb2.ModelDefaults(width=256, height=192, steps=20, true_cfg_scale=4.0),
    kinds=[
        common_pb2.GENERATION_KIND_TEXT_TO_IMAGE,
        common_pb2.GENERATION_KIND_INPAINT,
        common_pb2.GENERATION_KIND_OUTPAINT,
    ],
)


def png(width: int, height: int, colour: int | tuple = (120, 30, 200), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def t2i(**parameters) -> common_pb2.GenerationTask:
    parameters.setdefault("prompt", "a cat")
    return common_pb2.GenerationTask(
        text_to_image=common_pb2.TextToImageRequest(parameters=common_pb2.GenerationParameters(**parameters))
    )


def inpaint(image: bytes, mask: bytes, **parameters) -> common_pb2.GenerationTask:
    parameters.setdefault("prompt", "a hat")
    return common_pb2.GenerationTask(
        inpaint=common_pb2.InpaintRequest(
            parameters=common_pb2.GenerationParameters(**parameters), image=image, mask=mask
        )
    )


def outpaint(image: bytes, **sides: int) -> common_pb2.GenerationTask:
    return common_pb2.GenerationTask(
        outpaint=common_pb2.OutpaintRequest(
            parameters=common_pb2.GenerationParameters(prompt="more sky"),
            image=image,
            extension=common_pb2.OutpaintExtension(**sides),
        )
    )


def violations(task: common_pb2.GenerationTask, info=INFO) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_task(task, info)
    return {v.field: v.description for v in caught.value.violations}


def test_text_to_image_takes_the_model_defaults() -> None:
    task = validate_task(t2i(), INFO)
    assert task.kind == common_pb2.GENERATION_KIND_TEXT_TO_IMAGE
    assert (task.width, task.height, task.steps, task.num_images) == (256, 192, 20, 1)
    assert task.true_cfg_scale == pytest.approx(4.0)
    assert task.output_format == common_pb2.IMAGE_FORMAT_PNG
    assert task.seed is None
    assert task.cost() == pytest.approx(request_cost(256, 192, 20, 1))


def test_given_values_win_over_defaults_and_seed_zero_is_kept() -> None:
    task = validate_task(
        t2i(width=512, height=64, steps=2, num_images=4, seed=0, true_cfg_scale=1.0, output_format=3), INFO
    )
    assert (task.width, task.height, task.steps, task.num_images, task.seed) == (512, 64, 2, 4, 0)
    assert task.true_cfg_scale == 1.0 and task.output_format == common_pb2.IMAGE_FORMAT_WEBP
    assert task.parameters.width == 512 and task.parameters.seed == 0


def test_every_violation_is_reported_with_its_field_path() -> None:
    found = violations(t2i(prompt="  ", width=100, height=1024, steps=500, num_images=9))
    assert set(found) == {
        "task.text_to_image.parameters.prompt",
        "task.text_to_image.parameters.width",
        "task.text_to_image.parameters.height",
        "task.text_to_image.parameters.steps",
        "task.text_to_image.parameters.num_images",
    }
    assert "multiple of 16" in found["task.text_to_image.parameters.width"]
    assert "[64, 512]" in found["task.text_to_image.parameters.height"]


def test_a_task_without_a_kind_is_refused() -> None:
    assert set(violations(common_pb2.GenerationTask())) == {"task"}


def test_a_kind_the_model_does_not_serve_is_refused() -> None:
    info = inference_pb2.GetModelInfoResponse()
    info.CopyFrom(INFO)
    del info.kinds[1:]
    assert "not served" in violations(inpaint(png(64, 64), png(64, 64, 255, "L")), info)["task"]


def test_prompts_longer_than_any_that_fits_the_token_limit_are_refused() -> None:
    # 64 tokens, and no Qwen2 token is longer than 128 characters: 8192 characters may still fit.
    longest = 64 * MAX_CHARS_PER_TOKEN
    assert validate_task(t2i(prompt="x" * longest), INFO)
    found = violations(t2i(prompt="x" * (longest + 1), negative_prompt="y" * (longest + 300)))
    assert set(found) == {"task.text_to_image.parameters.prompt", "task.text_to_image.parameters.negative_prompt"}


@pytest.mark.parametrize("scale", [20.5, 100.0])
def test_cfg_scale_above_the_models_maximum_is_refused(scale: float) -> None:
    assert "[1, 20]" in violations(t2i(true_cfg_scale=scale))["task.text_to_image.parameters.true_cfg_scale"]


@pytest.mark.parametrize("scale", [0.5, math.nan, math.inf])
def test_cfg_scale_must_be_finite_and_at_least_one(scale: float) -> None:
    assert set(violations(t2i(true_cfg_scale=scale))) == {"task.text_to_image.parameters.true_cfg_scale"}


def test_unknown_output_format_is_refused() -> None:
    assert set(violations(t2i(output_format=42))) == {"task.text_to_image.parameters.output_format"}


def test_inpaint_takes_its_size_from_the_image() -> None:
    mask = png(128, 64, 255, "L")
    task = validate_task(inpaint(png(128, 64), mask, steps=3), INFO)
    assert (task.kind, task.width, task.height, task.steps) == (common_pb2.GENERATION_KIND_INPAINT, 128, 64, 3)
    assert task.mask == mask and task.image


def test_inpaint_mask_must_match_the_image_and_repaint_something() -> None:
    assert set(violations(inpaint(png(128, 64), png(64, 64, 255, "L")))) == {"task.inpaint.mask"}
    assert "no white" in violations(inpaint(png(128, 64), png(128, 64, 0, "L")))["task.inpaint.mask"]
    assert violations(inpaint(png(128, 64), b""))["task.inpaint.mask"] == "is required"


def test_inpaint_image_rules() -> None:
    assert set(violations(inpaint(b"not an image", png(64, 64, 255, "L")))) == {"task.inpaint.image"}
    assert set(violations(inpaint(png(64, 64, fmt="GIF", mode="P", colour=1), png(64, 64, 255, "L")))) == {
        "task.inpaint.image"
    }
    assert "multiple of 16" in violations(inpaint(png(72, 64), png(72, 64, 255, "L")))["task.inpaint.image"]
    found = violations(inpaint(png(128, 64), png(128, 64, 255, "L"), width=256))
    assert set(found) == {"task.inpaint.parameters.width"}


def test_truncated_images_are_refused() -> None:
    data = png(128, 128, (1, 2, 3))
    assert set(violations(inpaint(data[: len(data) // 2], png(128, 128, 255, "L")))) == {"task.inpaint.image"}


def test_jpeg_and_webp_inputs_are_accepted() -> None:
    for fmt in ("JPEG", "WEBP"):
        assert validate_task(inpaint(png(64, 64, fmt=fmt), png(64, 64, 255, "L", fmt=fmt)), INFO).width == 64


def test_decompression_bombs_are_refused_from_the_header() -> None:
    bomb = png(8_000, 8_000, 0, "1")  # 64 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    assert "largest side" in violations(outpaint(bomb, left=16))["task.outpaint.image"]
    huge = png(20_000, 20_000, 0, "1")  # beyond even Pillow's own guard
    assert "far larger" in violations(outpaint(huge, left=16))["task.outpaint.image"]


def test_outpaint_size_is_image_plus_extension() -> None:
    task = validate_task(outpaint(png(128, 64), left=32, bottom=16), INFO)
    assert (task.width, task.height) == (160, 80)
    assert task.extension is not None and (task.extension.left, task.extension.bottom) == (32, 16)


def test_outpaint_needs_an_extension_within_limits() -> None:
    assert set(violations(outpaint(png(128, 64)))) == {"task.outpaint.extension"}
    assert set(violations(outpaint(png(128, 64), left=8))) == {"task.outpaint.extension.left"}
    found = violations(outpaint(png(480, 64), left=32, right=32))
    assert set(found) == {"task.outpaint.extension.left", "task.outpaint.extension.right"}
    assert "512" in found["task.outpaint.extension.left"]


def test_normalized_prompt_folds_width_and_whitespace() -> None:
    task = validate_task(t2i(prompt="  ＣＡＴ\t on\u3000a \n mat "), INFO)
    assert task.normalized_prompt() == "CAT on a mat"


def test_the_task_sent_to_inference_has_the_seed_and_the_normalised_prompt() -> None:
    task = validate_task(t2i(prompt="ａ  cat", negative_prompt=" blur  "), INFO)
    sent = task.to_task_pb(seed=42).text_to_image.parameters
    assert (sent.prompt, sent.negative_prompt, sent.seed, sent.width, sent.steps) == ("a cat", "blur", 42, 256, 20)
    out = validate_task(outpaint(png(128, 64), top=16), INFO).to_task_pb(seed=1).outpaint
    assert (out.extension.top, out.parameters.width, out.parameters.seed) == (16, 0, 1)
    painted = validate_task(inpaint(png(64, 64), png(64, 64, 255, "L")), INFO).to_task_pb(seed=2).inpaint
    assert painted.mask and painted.image and painted.parameters.seed == 2
