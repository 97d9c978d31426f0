"""Instruction editing (kind edit) with the tiny Qwen-Image-Edit companion: its directory and loading,
determinism (alone, batched, and equal to calling diffusers' pipeline directly), cancellation,
validation, batching rules and the gRPC Edit call."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from inkloop import generation
from inkloop.errors import Cancelled, InvalidArgument
from inkloop.rpc.server import start_server
from inkloop.rpc.status import field_violations
from inkloop.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from inkloop_inference.editing import EDIT_COMPONENTS, condition_size, load_edit_pipeline
from inkloop_inference.loading import LoadedModel, ModelDirectoryError
from inkloop_inference.pipelines import GenerationRequest, batch_key, encode_image, run
from inkloop_inference.server import InferenceApp
from inkloop_inference.settings import InferenceSettings

INSTRUCTION = "把红色的房子换成蓝色"
STEPS = 2


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def edit(image: bytes = b"", **fields: object) -> GenerationRequest:
    defaults: dict[str, object] = dict(
        kind="edit", prompt=INSTRUCTION, image=image, steps=STEPS, true_cfg_scale=4.0, seed=3
    )
    return GenerationRequest(**{**defaults, **fields})  # type: ignore[arg-type]


# ---- the preset's directory and its loading


def test_the_edit_preset_is_a_published_qwen_image_edit_layout(tiny_edit_dir: Path) -> None:
    index = json.loads((tiny_edit_dir / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPipeline"
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
    assert index["text_encoder"] == ["transformers", "Qwen2_5_VLForConditionalGeneration"]
    for component in EDIT_COMPONENTS:
        assert any((tiny_edit_dir / component).glob("*.json")), component
    vision = json.loads((tiny_edit_dir / "text_encoder" / "config.json").read_text())["vision_config"]
    assert vision["depth"] == 2  # the text encoder keeps its vision tower


def test_loading_shares_identical_components_with_the_main_model(tiny_edit_model: LoadedModel) -> None:
    edit = tiny_edit_model.edit
    assert edit is not None
    # The preset's edit text encoder and tokenizer are the main model's weights; its VAE is its own.
    assert edit.shared == ("text_encoder", "tokenizer")
    assert edit.pipe.text_encoder is tiny_edit_model.t2i.text_encoder
    assert edit.pipe.vae is not tiny_edit_model.t2i.vae
    assert edit.model_id == "tiny-edit"
    assert edit.revision != tiny_edit_model.revision
    # The template's dropped prefix ends where the image's tokens begin, as diffusers' 64 for Qwen's vocabulary.
    assert edit.pipe.prompt_template_encode_start_idx == 64


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: shutil.rmtree(path / "processor"), "processor"),
        (
            lambda path: (path / "model_index.json").write_text(
                json.dumps({**json.loads((path / "model_index.json").read_text()), "_class_name": "QwenImagePipeline"})
            ),
            "not QwenImageEditPipeline",
        ),
    ],
    ids=["no processor", "a text-to-image directory"],
)
def test_a_wrong_edit_directory_fails_at_load_naming_what_is_wrong(
    tiny_edit_dir: Path, tmp_path: Path, damage: object, message: str
) -> None:
    broken = tmp_path / "broken-edit"
    shutil.copytree(tiny_edit_dir, broken)
    damage(broken)  # type: ignore[operator]
    with pytest.raises(ModelDirectoryError, match=message):
        load_edit_pipeline(broken, device="cpu", dtype=torch.float32)


# ---- generation


def test_edit_is_deterministic_alone_and_batched_and_equals_the_pipeline_called_directly(
    tiny_edit_model: LoadedModel,
) -> None:
    image = png(100, 72)
    request = edit(image)
    [alone] = run(tiny_edit_model, [request])
    # The default output size is the image's, rounded down to multiples of 16.
    assert (alone.width, alone.height) == (96, 64)
    assert Image.open(io.BytesIO(alone.images[0])).size == (96, 64)

    other = dataclasses.replace(request, prompt="make it night")
    batched = run(tiny_edit_model, [request, other])
    assert batched[0].batch_size == 2
    assert batched[0].images == alone.images
    assert batched[1].images != alone.images  # the instruction changes the image

    assert tiny_edit_model.edit is not None
    direct = tiny_edit_model.edit.pipe(
        image=Image.open(io.BytesIO(image)),
        prompt=INSTRUCTION,
        negative_prompt=" ",
        true_cfg_scale=4.0,
        num_inference_steps=STEPS,
        width=96,
        height=64,
        generator=torch.Generator().manual_seed(3),
    ).images[0]
    assert encode_image(direct, "png") == alone.images[0]


def test_cancelling_an_edit_stops_it_after_the_step_in_progress(tiny_edit_model: LoadedModel) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled, match="after step 1"):
        run(
            tiny_edit_model,
            [edit(png(64, 64), true_cfg_scale=1.0, steps=4)],
            on_step=lambda done, total, previews: steps.append(done),
            should_cancel=lambda: bool(steps),
        )
    assert steps == [1]


def test_edits_batch_only_with_images_of_the_same_condition_size() -> None:
    wide, square = png(128, 64), png(64, 64)
    assert condition_size((128, 64)) != condition_size((64, 64))
    assert batch_key(edit(wide, width=64, height=64)) != batch_key(edit(square, width=64, height=64))
    assert batch_key(edit(square)) == batch_key(edit(png(64, 64, seed=1)))
    assert batch_key(edit(square)) != batch_key(
        GenerationRequest(kind="text_to_image", prompt=INSTRUCTION, width=64, height=64, steps=STEPS, seed=3)
    )


# ---- the contract's rules for edit


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"image": b""}, "image", "is required"),
        ({"image": b"not an image"}, "image", "not a decodable"),
        ({"image": png(2100, 16)}, "image", "largest side allowed is 2048"),
        ({"mask": png(64, 64)}, "mask", "not used by edit"),
        ({"width": 100}, "parameters.width", "not a multiple of 16"),
        ({"height": 4096}, "parameters.height", "outside [64, 2048]"),
        ({"image": png(40, 80)}, "image", "its width as output, 32, is outside [64, 2048]; set width and height"),
        ({"prompt": "  "}, "parameters.prompt", "must not be empty"),
    ],
)
def test_invalid_edits_name_the_field(fields: dict[str, object], field: str, says: str) -> None:
    request = edit(**{"image": png(64, 64), **fields})
    with pytest.raises(InvalidArgument) as caught:
        generation.validate(request, generation.Limits())
    assert any(v.field == field and says in v.description for v in caught.value.violations), caught.value.violations


def test_an_instruction_longer_than_the_token_limit_is_refused_with_its_count(tiny_edit_model: LoadedModel) -> None:
    limits = tiny_edit_model.limits_of("edit")
    assert limits.count_prompt_tokens is not None
    with pytest.raises(InvalidArgument) as caught:
        generation.validate(edit(png(64, 64), prompt="猫 " * 1100), limits)
    [violation] = caught.value.violations
    assert violation.field == "parameters.prompt" and "limit is 1024" in violation.description


# ---- over gRPC


@pytest.fixture(scope="module")
async def stub(tiny_dir: Path, tiny_edit_dir: Path) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    settings = InferenceSettings(model_path=tiny_dir, edit_model_path=tiny_edit_dir, port=0, warmup=False)
    app = InferenceApp(settings)
    running = await start_server(app, "127.0.0.1", 0)
    await app.start()
    await running.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
    await running.server.stop(0)
    await app.stop()


async def test_model_info_reports_the_edit_kind_and_model(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest())
    assert common_pb2.GENERATION_KIND_EDIT in info.kinds
    assert info.edit_model.model_id == "tiny-edit"
    assert info.edit_model.model_revision and info.edit_model.model_revision != info.model_revision
    assert info.edit_model.defaults.steps == info.defaults.steps
    assert (info.edit_model.defaults.width, info.edit_model.defaults.height) == (0, 0)  # the image's size


async def test_the_edit_call_streams_steps_then_the_edit_models_result(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    parameters = common_pb2.GenerationParameters(prompt=INSTRUCTION, steps=STEPS, seed=3, true_cfg_scale=1.0)
    events = [e async for e in stub.Edit(common_pb2.EditRequest(parameters=parameters, image=png(64, 80)))]
    steps = [e.step.step for e in events if e.HasField("step")]
    assert steps == [1, 2]
    result = events[-1].result
    assert result.model_id == "tiny-edit"
    assert (result.images[0].width, result.images[0].height) == (64, 80)
    assert result.images[0].seed == 3


async def test_an_edit_naming_a_model_variant_is_invalid_argument(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    parameters = common_pb2.GenerationParameters(prompt=INSTRUCTION, steps=STEPS, model_variant="fast")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Edit(common_pb2.EditRequest(parameters=parameters, image=png(64, 64))):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations(caught.value)] == ["parameters.model_variant"]
