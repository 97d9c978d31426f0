"""Memory modes (`memory-mode`): settings, the refusals on a CPU, ModelInfo, `full` unchanged, and the
offload and quantization wiring as far as a CPU runs it (the GPU suite measures the rest)."""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from inkloop_inference import memory, pipelines
from inkloop_inference.acceleration import Acceleration, apply, use_compile_cache_dir
from inkloop_inference.loading import LoadedModel, compute_revision, load_pipelines
from inkloop_inference.memory import MEMORY_MODES, MemoryModeError, check_memory_mode
from inkloop_inference.model import InferenceModel
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.settings import InferenceSettings

NEEDS_CUDA = [mode for mode in MEMORY_MODES if mode != "full"]
REQUEST = GenerationRequest(
    kind="text_to_image", prompt="a red bicycle 红色自行车", width=64, height=64, steps=2, seed=3, true_cfg_scale=4.0
)


def _images(model: LoadedModel) -> tuple[bytes, ...]:
    return pipelines.run(model, [REQUEST])[0].images


def _inpaint_images(model: LoadedModel, image: bytes) -> tuple[bytes, ...]:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    request = replace(REQUEST, kind="inpaint", image=image, mask=buffer.getvalue())
    return pipelines.run(model, [request])[0].images


# --- settings --------------------------------------------------------------------------------------


def test_the_default_is_full_and_every_mode_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InferenceSettings().memory_mode == "full"
    assert MEMORY_MODES == ("full", "model-offload", "group-offload", "fp8", "nf4")
    for mode in MEMORY_MODES:
        assert InferenceSettings(memory_mode=mode, device="cuda").memory_mode == mode
    monkeypatch.setenv("INKLOOP_INFERENCE_MEMORY_MODE", "group-offload")
    assert InferenceSettings().memory_mode == "group-offload"
    flags = InferenceSettings.from_args(["--memory-mode", "nf4", "--device", "cuda"], prog="test")
    assert flags.memory_mode == "nf4"


def test_an_unknown_mode_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="memory_mode"):
        InferenceSettings(memory_mode="fp4")


@pytest.mark.parametrize("mode", NEEDS_CUDA)
def test_device_cpu_with_a_cuda_mode_is_refused_by_the_settings(mode: str) -> None:
    with pytest.raises(ValidationError, match=f"memory_mode {mode} .*needs a CUDA device, but the device is cpu"):
        InferenceSettings(memory_mode=mode, device="cpu")
    assert InferenceSettings(memory_mode="full", device="cpu").memory_mode == "full"


# --- refusals at start -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", NEEDS_CUDA)
def test_each_cuda_mode_is_refused_on_a_cpu_with_the_reason(mode: str) -> None:
    with pytest.raises(MemoryModeError) as refused:
        check_memory_mode(mode, "cpu")
    assert refused.value.violations[0].field == "memory_mode"
    message = str(refused.value)
    assert message.startswith(f"memory_mode: {mode} ")
    assert "needs a CUDA device" in message and "use memory_mode full" in message
    check_memory_mode("full", "cpu")  # full runs anywhere


@pytest.mark.parametrize(("mode", "package"), [("fp8", "torchao"), ("nf4", "bitsandbytes")])
def test_a_quantized_mode_without_its_package_names_the_extra(
    mode: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(MemoryModeError, match=f"{mode} needs the {package} package.*gpu-quant extra"):
        check_memory_mode(mode, "cuda")
    check_memory_mode("model-offload", "cuda")  # the offload modes need no extra
    check_memory_mode("group-offload", "cuda:1")


@pytest.mark.parametrize("mode", NEEDS_CUDA)
def test_load_pipelines_refuses_before_loading(mode: str, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("from_pretrained ran")

    monkeypatch.setattr(QwenImagePipeline, "from_pretrained", never)
    with pytest.raises(MemoryModeError, match="needs a CUDA device"):
        load_pipelines(tiny_dir, device="cpu", dtype=torch.float32, memory_mode=mode)


def test_the_service_refuses_at_start_when_auto_finds_no_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = InferenceModel(InferenceSettings(memory_mode="model-offload", device="auto", data_dir=tmp_path))
    with pytest.raises(MemoryModeError, match=r"model-offload .* the device is cpu"):
        model.load()
    assert not (tmp_path / "models").exists()  # refused before building the preset


# --- full, and ModelInfo ---------------------------------------------------------------------------


def test_full_is_unchanged(tiny_dir: Path, tiny_model: LoadedModel) -> None:
    full = load_pipelines(tiny_dir, device="cpu", dtype=torch.float32, memory_mode="full")
    assert full.memory_mode == tiny_model.memory_mode == "full"
    assert full.revision == tiny_model.revision == compute_revision(tiny_dir)
    assert {p.device.type for p in full.t2i.transformer.parameters()} == {"cpu"}
    assert not hasattr(full.t2i.transformer, "_hf_hook")
    assert _images(full) == _images(tiny_model)


def test_model_info_reports_the_memory_mode(tiny_dir: Path) -> None:
    model = InferenceModel(InferenceSettings(model_path=tiny_dir))
    model.load()
    assert model.info().memory_mode == "full"
    model._loaded = replace(model.loaded, memory_mode="group-offload")
    assert model.info().memory_mode == "group-offload"


def test_quantized_modes_name_another_revision() -> None:
    assert memory.revision_for("0123456789ab", "full") == "0123456789ab"
    assert memory.revision_for("0123456789ab", "model-offload") == "0123456789ab"
    assert memory.revision_for("0123456789ab", "group-offload") == "0123456789ab"
    fp8, nf4 = memory.revision_for("0123456789ab", "fp8"), memory.revision_for("0123456789ab", "nf4")
    assert len({fp8, nf4, "0123456789ab"}) == 3 and len(fp8) == len(nf4) == 12
    int(fp8, 16)


# --- the wiring, run on a CPU (the service itself refuses these modes there) -------------------------


def test_model_offload_wiring_gives_the_same_images(tiny_dir: Path, tiny_model: LoadedModel) -> None:
    """accelerate's hooks with onload device cpu: meaningless for memory, but the hooks run for real,
    around inkloop's per-sample hook, on both pipelines."""
    model = load_pipelines(tiny_dir, device="cpu", dtype=torch.float32)
    memory.apply_offload([model.t2i, model.inpaint], "model-offload", "cpu")
    assert hasattr(model.t2i.transformer, "_hf_hook") and hasattr(model.t2i.text_encoder, "_hf_hook")
    assert _images(model) == _images(tiny_model)
    assert _images(model) == _images(tiny_model)  # the hooks re-installed after a call still work
    image = _images(tiny_model)[0]
    assert _inpaint_images(model, image) == _inpaint_images(tiny_model, image)


def test_group_offload_wiring_gives_the_same_images(tiny_dir: Path, tiny_model: LoadedModel) -> None:
    """diffusers' group offloading between CPU and CPU (no streams): the block-level hooks run."""
    from diffusers.hooks.group_offloading import _get_group_onload_device

    model = load_pipelines(
        tiny_dir, device="cpu", dtype=torch.float32, batch_invariant=False, acceleration=Acceleration(batched_cfg=True)
    )
    memory.apply_offload([model.t2i, model.inpaint], "group-offload", "cpu")
    assert _get_group_onload_device(model.t2i.transformer) == torch.device("cpu")
    assert _get_group_onload_device(model.t2i.text_encoder) == torch.device("cpu")
    plain = load_pipelines(
        tiny_dir, device="cpu", dtype=torch.float32, batch_invariant=False, acceleration=Acceleration(batched_cfg=True)
    )
    assert _images(model) == _images(plain)


def test_offload_modes_leave_the_weights_in_cpu_memory_and_full_moves_them() -> None:
    assert not memory.places_on_device("model-offload") and not memory.places_on_device("group-offload")
    assert all(memory.places_on_device(mode) for mode in ("full", "fp8", "nf4"))
    assert memory.load_kwargs("full", torch.bfloat16, "cuda") == {}
    assert memory.load_kwargs("group-offload", torch.bfloat16, "cuda") == {}


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="the gpu-quant extra is not installed")
def test_nf4_asks_diffusers_for_4_bit_nf4_on_the_transformer() -> None:
    kwargs = memory.load_kwargs("nf4", torch.bfloat16, "cuda")
    assert kwargs["device_map"] == "cuda"
    config = kwargs["quantization_config"].quant_mapping["transformer"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="the gpu-quant extra is not installed")
def test_fp8_wiring_loads_float8_weights_and_generates(tiny_dir: Path) -> None:
    """The from_pretrained arguments of fp8, on the CPU (torchao's weight-only float8 runs there too)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

    kwargs = memory.load_kwargs("fp8", torch.bfloat16, "cpu")
    pipe = QwenImagePipeline.from_pretrained(tiny_dir, local_files_only=True, dtype=torch.bfloat16, **kwargs)
    weight = pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert "Float8" in type(weight).__name__
    image = pipe(prompt="a cat", width=64, height=64, num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)


# --- compile: its cache directory, and the step cache ------------------------------------------------


def test_compile_cache_dir_sets_the_inductor_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    use_compile_cache_dir(tmp_path / "compile")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "compile").resolve())
    assert (tmp_path / "compile").is_dir()

    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str((tmp_path / "compile").resolve())


def test_the_service_uses_the_compile_cache_dir(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    InferenceModel(InferenceSettings(model_path=tiny_dir, compile_cache_dir=tmp_path / "cc")).load()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "cc").resolve())


@pytest.mark.parametrize(("threshold", "fullgraph"), [(0.0, True), (0.05, False)])
def test_compile_with_the_step_cache_allows_its_graph_break(
    tiny_dir: Path, threshold: float, fullgraph: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step cache decides in Python whether blocks run: fullgraph=True fails at the first forward."""
    model = load_pipelines(tiny_dir, device="cpu", dtype=torch.float32)
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(model.t2i.transformer, "compile_repeated_blocks", lambda **kw: calls.append(kw))
    apply(model.t2i, Acceleration(compile=True, step_cache_threshold=threshold))
    assert calls == [{"fullgraph": fullgraph}]
