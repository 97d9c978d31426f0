"""Model variants on one set of base weights: LoRA adapters with scales, a schedule and defaults.

A variant is what an A/B split or a product tier needs from the model: the base model itself, the
base with a style LoRA, or a few-step distilled setup in the style of Qwen-Image-Lightning (8 steps,
CFG off, its own shifted flow-match schedule). Every adapter is loaded once, at start, into the
shared transformer (both pipelines see it); a batch runs one variant (its name is in the batch
key), and switching between batches only changes which adapters are active and at what scale
(diffusers' `set_adapters`) and which scheduler runs: the base weights are never reloaded. An
adapter file that is missing, or whose tensors fit no layer of the transformer, stops the start
with the file named.

Variants come from `variants-file` (YAML):

    variants:
      - name: base                    # the first one is the default
      - name: fast
        scheduler: lightning          # or "base", or a mapping of scheduler config overrides
        steps: 8
        true_cfg_scale: 1.0           # 1 = CFG off
        adapters:
          - path: /models/qwen-image-lightning/lightning-8step.safetensors
            scale: 1.0

Without the file, the presets serve `base` and `fast` (a random LoRA of the preset's own shapes,
built offline beside it), and a weights directory serves `base` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler

from inkloop.errors import InvalidArgument
from inkloop.generation import Defaults
from inkloop_inference.presets import QWEN_IMAGE_SCHEDULER_CONFIG

#: Qwen-Image-Lightning's scheduler (its published scheduler config): Qwen-Image's own with ln 3
#: shifts and no terminal shift.
LIGHTNING_SCHEDULER: dict[str, Any] = {
    **QWEN_IMAGE_SCHEDULER_CONFIG,
    "base_shift": math.log(3),
    "max_shift": math.log(3),
    "shift_terminal": None,
}
FAST_STEPS = 8


class VariantError(InvalidArgument, ValueError):
    """A variant cannot be served as configured (the start stops, naming the field and file)."""


@dataclass(frozen=True)
class Adapter:
    path: Path
    scale: float = 1.0


@dataclass(frozen=True)
class VariantSpec:
    name: str
    adapters: tuple[Adapter, ...] = ()
    #: "base", "lightning", or scheduler config overrides.
    scheduler: str | dict[str, Any] = "base"
    steps: int = 0  # 0 = the model's
    true_cfg_scale: float = 0.0  # 0 = the model's; 1 = CFG off

    def defaults(self, model: Defaults) -> Defaults:
        return Defaults(
            width=model.width,
            height=model.height,
            steps=self.steps or model.steps,
            true_cfg_scale=self.true_cfg_scale or model.true_cfg_scale,
        )

    @property
    def scheduler_name(self) -> str:
        return self.scheduler if isinstance(self.scheduler, str) else "custom"


def fast_tier(lora: Path | None) -> VariantSpec:
    """The few-step tier: Lightning's schedule, 8 steps, CFG off, its distilled LoRA when there is one."""
    return VariantSpec(
        name="fast",
        adapters=(Adapter(lora),) if lora is not None else (),
        scheduler="lightning",
        steps=FAST_STEPS,
        true_cfg_scale=1.0,
    )


def read_variants_file(path: Path) -> list[VariantSpec]:
    """The variants of a YAML file (see the module docstring), checked field by field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise VariantError("variants_file", f"{path}: {error}") from None
    entries = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise VariantError("variants_file", f"{path}: needs a non-empty list `variants`")
    specs = []
    for index, entry in enumerate(entries):
        where = f"variants[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise VariantError(f"{where}.name", "required")
        adapters = []
        for number, item in enumerate(entry.get("adapters") or []):
            if not isinstance(item, dict) or "path" not in item:
                raise VariantError(f"{where}.adapters[{number}].path", "required")
            file = Path(item["path"])
            adapters.append(Adapter(file if file.is_absolute() else path.parent / file, float(item.get("scale", 1.0))))
        scheduler = entry.get("scheduler", "base")
        if not (scheduler in ("base", "lightning") or isinstance(scheduler, dict)):
            raise VariantError(f"{where}.scheduler", "must be base, lightning or a mapping of overrides")
        specs.append(
            VariantSpec(
                name=entry["name"],
                adapters=tuple(adapters),
                scheduler=scheduler,
                steps=int(entry.get("steps", 0)),
                true_cfg_scale=float(entry.get("true_cfg_scale", 0.0)),
            )
        )
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise VariantError("variants", f"names must be unique, got {names}")
    return specs


@dataclass
class ServedVariants:
    """The variants of a loaded model and which one its pipelines run now."""

    specs: Sequence[VariantSpec]
    pipes: Sequence[Any]
    schedulers: dict[str, Any] = field(default_factory=dict)
    active: str = ""
    #: Adapter files loaded since start (each once) and variant switches: the base is never reloaded.
    adapter_loads: int = 0
    switches: int = 0

    @classmethod
    def load(cls, specs: Sequence[VariantSpec], pipes: Sequence[Any]) -> ServedVariants:
        """Loads every adapter into the shared transformer (once) and builds each variant's scheduler."""
        served = cls(list(specs), list(pipes))
        base = pipes[0]
        base_config = dict(base.scheduler.config)
        for index, spec in enumerate(specs):
            for number, adapter in enumerate(spec.adapters):
                served._load_adapter(base, f"variants[{index}].adapters[{number}].path", spec, number, adapter)
            if spec.scheduler == "base":
                served.schedulers[spec.name] = base.scheduler
                continue
            overrides = LIGHTNING_SCHEDULER if isinstance(spec.scheduler, str) else spec.scheduler
            served.schedulers[spec.name] = FlowMatchEulerDiscreteScheduler.from_config({**base_config, **overrides})
        served.active = ""
        served.activate(specs[0].name)
        served.switches = 0
        return served

    @property
    def default(self) -> VariantSpec:
        return self.specs[0]

    def spec(self, name: str) -> VariantSpec:
        for spec in self.specs:
            if spec.name == (name or self.default.name):
                return spec
        raise InvalidArgument("model_variant", f"not served here; one of {[s.name for s in self.specs]}")

    def activate(self, name: str) -> None:
        """Makes `name` (or the default) the variant the pipelines run; cheap when it already is."""
        spec = self.spec(name)
        if spec.name == self.active:
            return
        base = self.pipes[0]
        if any(s.adapters for s in self.specs):
            if spec.adapters:
                base.enable_lora()
                base.set_adapters(
                    [_adapter_name(spec, number) for number in range(len(spec.adapters))],
                    [adapter.scale for adapter in spec.adapters],
                )
            else:
                base.disable_lora()
        for pipe in self.pipes:
            pipe.scheduler = self.schedulers[spec.name]
        self.active = spec.name
        self.switches += 1

    def _load_adapter(self, base: Any, where: str, spec: VariantSpec, number: int, adapter: Adapter) -> None:
        if not adapter.path.is_file():
            raise VariantError(where, f"{adapter.path} does not exist")
        name = _adapter_name(spec, number)
        try:
            base.load_lora_weights(str(adapter.path.parent), weight_name=adapter.path.name, adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as error:
            raise VariantError(where, f"{adapter.path} does not fit this model: {str(error)[:300]}") from None
        fitted = [m for m in base.transformer.modules() if name in getattr(m, "lora_A", {})]
        if not fitted:
            raise VariantError(where, f"{adapter.path} fits no layer of this model's transformer")
        self.adapter_loads += 1


def _adapter_name(spec: VariantSpec, number: int) -> str:
    return f"{spec.name}_{number}".replace(".", "_")
