from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from inkloop.errors import InvalidArgument
from inkloop_inference.editing import load_edit_pipeline
from inkloop_inference.loading import (
    REVISION_CACHE_FILE,
    LoadedModel,
    ModelDirectoryError,
    compute_revision,
    load_pipelines,
)
from inkloop_inference.pipelines import encode_image
from inkloop_inference.presets import build_preset


def _direct_png(pipe: object, seed: int) -> bytes:
    image = pipe(  # type: ignore[operator]
        prompt="a red bicycle 红色自行车",
        negative_prompt=" ",
        true_cfg_scale=3.0,
        width=64,
        height=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=1024,
    ).images[0]
    return encode_image(image, "png")


def test_reload_is_bit_identical_and_gives_the_same_image(tiny_model: LoadedModel) -> None:
    built = build_preset("tiny")
    for name in ("transformer", "vae", "text_encoder"):
        saved, loaded = getattr(built, name).state_dict(), getattr(tiny_model.t2i, name).state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[key], loaded[key]) for key in saved), name
    public = {key: value for key, value in tiny_model.t2i.scheduler.config.items() if not key.startswith("_")}
    assert dict(built.scheduler.config) == public
    assert _direct_png(built, seed=3) == _direct_png(tiny_model.t2i, seed=3)


def test_inpaint_shares_the_modules(tiny_model: LoadedModel) -> None:
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(tiny_model.inpaint, name) is getattr(tiny_model.t2i, name), name


def test_a_bf16_model_stays_bf16_in_every_pipeline_and_generates(tiny_dir: Path, tiny_edit_dir: Path) -> None:
    """What a GPU serves in: diffusers' from_pipe once cast the shared modules back to fp32."""
    model = load_pipelines(tiny_dir, device="cpu", dtype=torch.bfloat16, batch_invariant=False)
    model = dataclasses.replace(
        model, edit=load_edit_pipeline(tiny_edit_dir, device="cpu", dtype=torch.bfloat16, main=model)
    )
    assert model.edit is not None
    for pipe in (model.t2i, model.inpaint, model.edit.pipe):
        for name in ("transformer", "vae", "text_encoder"):
            assert {parameter.dtype for parameter in getattr(pipe, name).parameters()} == {torch.bfloat16}, name
    assert _direct_png(model.t2i, seed=3).startswith(b"\x89PNG")


def test_template_start_index_is_set_on_both_pipelines(tiny_model: LoadedModel) -> None:
    assert tiny_model.t2i.prompt_template_encode_start_idx == 34
    assert tiny_model.inpaint.prompt_template_encode_start_idx == 34


def test_model_identity_and_limits(tiny_model: LoadedModel, tiny_dir: Path) -> None:
    assert tiny_model.model_id == "tiny"
    assert len(tiny_model.revision) == 12
    int(tiny_model.revision, 16)
    assert tiny_model.limits.vae_scale_factor == 4
    assert tiny_model.limits.size_multiple == 16
    assert tiny_model.limits.max_sequence_length == 1024
    assert tiny_model.limits.count_prompt_tokens is not None
    assert tiny_model.limits.count_prompt_tokens("a cat") == 2 + 5  # the prompt + the template's tail
    assert (tiny_dir / REVISION_CACHE_FILE).is_file()
    assert compute_revision(tiny_dir) == tiny_model.revision


def test_revision_changes_when_a_weight_changes(tiny_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_dir, copy)
    assert compute_revision(copy) == compute_revision(tiny_dir)

    weights_file = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1.0
    save_file(weights, weights_file, metadata={"format": "pt"})
    assert compute_revision(copy) != compute_revision(tiny_dir)


def test_revision_is_cached_per_directory(tiny_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_dir, copy)
    (copy / REVISION_CACHE_FILE).unlink()
    revision = compute_revision(copy)
    cache = json.loads((copy / REVISION_CACHE_FILE).read_text())
    assert cache["revision"] == revision
    # A forged cache entry is believed while the files are unchanged: proof the files were not re-read.
    (copy / REVISION_CACHE_FILE).write_text(json.dumps({**cache, "revision": "feedfeedfeed"}))
    assert compute_revision(copy) == "feedfeedfeed"


def _broken(tmp_path: Path, tiny_dir: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope"
    if case == "file":
        path = tmp_path / "file"
        path.write_text("x")
        return path
    path = tmp_path / "model"
    if case == "empty":
        path.mkdir()
        return path
    shutil.copytree(tiny_dir, path)
    index = json.loads((path / "model_index.json").read_text())
    if case == "other-pipeline":
        index["_class_name"] = "StableDiffusionPipeline"
        (path / "model_index.json").write_text(json.dumps(index))
    elif case == "no-vae":
        shutil.rmtree(path / "vae")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such directory"),
        ("file", "not a directory"),
        ("empty", "no model_index.json"),
        ("other-pipeline", "not a QwenImage pipeline"),
        ("no-vae", "vae/"),
    ],
)
def test_bad_directories_are_refused_precisely(tmp_path: Path, tiny_dir: Path, case: str, message: str) -> None:
    path = _broken(tmp_path, tiny_dir, case)
    with pytest.raises(ModelDirectoryError, match=message) as caught:
        load_pipelines(path, device="cpu", dtype=torch.float32)
    assert isinstance(caught.value, InvalidArgument)
    assert isinstance(caught.value, ValueError)
    assert caught.value.violations[0].field == "model_path"
