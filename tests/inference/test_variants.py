"""Model variants on one set of base weights: LoRA scale 0 is the base byte for byte, scale 1 is not;
variants alternate between batches without reloading anything; the fast tier runs Lightning's
schedule with its own defaults; bad adapter files stop the start, named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel

from inkloop_inference.loading import LoadedModel, load_pipelines
from inkloop_inference.pipelines import run
from inkloop_inference.presets import FAST_LORA, TINY, save_random_lora
from inkloop_inference.variants import (
    LIGHTNING_SCHEDULER,
    Adapter,
    ServedVariants,
    VariantError,
    VariantSpec,
    fast_tier,
    read_variants_file,
)

from .test_pipelines import t2i


@pytest.fixture(scope="module")
def with_variants(tiny_dir: Path) -> LoadedModel:
    model = load_pipelines(tiny_dir, device="cpu", dtype=torch.float32)
    lora = tiny_dir / FAST_LORA
    specs = [
        VariantSpec("base"),
        VariantSpec("off", adapters=(Adapter(lora, 0.0),)),
        VariantSpec("styled", adapters=(Adapter(lora, 1.0),)),
        fast_tier(lora),
    ]
    return replace(model, variants=ServedVariants.load(specs, [model.t2i, model.inpaint]))


def _checksum(model: LoadedModel) -> float:
    return float(sum(p.double().sum() for name, p in model.t2i.transformer.named_parameters() if "lora" not in name))


def test_scale_zero_is_the_base_byte_for_byte_and_scale_one_is_not(with_variants: LoadedModel) -> None:
    base = run(with_variants, [t2i(seed=5)])[0].images
    assert run(with_variants, [t2i(seed=5, model_variant="off")])[0].images == base
    assert run(with_variants, [t2i(seed=5, model_variant="styled")])[0].images != base
    assert run(with_variants, [t2i(seed=5, model_variant="base")])[0].images == base  # and back


def test_variants_alternate_without_reloading_anything(with_variants: LoadedModel) -> None:
    served = with_variants.variants
    loads, weights = served.adapter_loads, _checksum(with_variants)
    switches = served.switches
    first = {name: run(with_variants, [t2i(seed=2, model_variant=name)])[0].images for name in ("base", "styled")}
    for _ in range(2):
        for name in ("base", "styled"):
            assert run(with_variants, [t2i(seed=2, model_variant=name)])[0].images == first[name]
    assert served.adapter_loads == loads == 3  # one load per adapter entry, at start
    assert _checksum(with_variants) == weights  # the base weights are untouched
    assert served.switches >= switches + 5


def test_the_fast_tier_runs_lightnings_schedule_with_its_own_defaults(with_variants: LoadedModel) -> None:
    served = with_variants.variants
    fast = served.spec("fast")
    assert (fast.steps, fast.true_cfg_scale, fast.scheduler_name) == (8, 1.0, "lightning")
    config = served.schedulers["fast"].config
    assert config["base_shift"] == LIGHTNING_SCHEDULER["base_shift"] and config["shift_terminal"] is None
    assert served.schedulers["base"].config["shift_terminal"] != config["shift_terminal"]
    result = run(with_variants, [t2i(seed=1, steps=8, true_cfg_scale=1.0, model_variant="fast")])[0]
    assert result.images and with_variants.variants.active == "fast"


def test_a_missing_or_mismatched_adapter_stops_the_start_naming_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    model = load_pipelines(tiny_dir, device="cpu", dtype=torch.float32)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(VariantError) as absent:
        ServedVariants.load([VariantSpec("base"), VariantSpec("x", adapters=(Adapter(missing),))], [model.t2i])
    assert absent.value.violations[0].field == "variants[1].adapters[0].path" and str(missing) in str(absent.value)
    other = QwenImageTransformer2DModel(**{**TINY.transformer, "attention_head_dim": 8})  # other shapes
    mismatched = tmp_path / "other.safetensors"
    save_random_lora(other, mismatched, seed=3)
    with pytest.raises(VariantError) as wrong:
        ServedVariants.load([VariantSpec("base"), VariantSpec("y", adapters=(Adapter(mismatched),))], [model.t2i])
    assert "other.safetensors" in str(wrong.value)


def test_a_variants_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "variants.yaml"
    good.write_text(
        "variants:\n  - name: base\n  - name: fast\n    scheduler: lightning\n    steps: 8\n"
        "    true_cfg_scale: 1.0\n    adapters:\n      - path: loras/fast.safetensors\n        scale: 0.8\n"
    )
    base, fast = read_variants_file(good)
    assert base == VariantSpec("base")
    assert fast.adapters == (Adapter(tmp_path / "loras" / "fast.safetensors", 0.8),) and fast.steps == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants:\n  - name: a\n  - name: b\n    scheduler: ddim\n")
    with pytest.raises(VariantError) as refused:
        read_variants_file(bad)
    assert refused.value.violations[0].field == "variants[1].scheduler"
