"""The model a running inference service holds: where it comes from, its defaults, and its batcher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import diffusers
import torch
import transformers

from inkloop import errors
from inkloop.generation import KINDS, PB_OF_KIND, Defaults, Limits, defaults_to_pb, limits_to_pb
from inkloop.v1 import inference_pb2
from inkloop_inference import pipelines
from inkloop_inference.acceleration import Acceleration, use_compile_cache_dir
from inkloop_inference.batching import Batcher, OnStep
from inkloop_inference.editing import load_edit_pipeline
from inkloop_inference.loading import LoadedModel, load_pipelines
from inkloop_inference.memory import check_memory_mode
from inkloop_inference.pipelines import GenerationRequest, GenerationResult
from inkloop_inference.presets import FAST_LORA, ensure_preset
from inkloop_inference.protocol import recommended_sizes
from inkloop_inference.settings import InferenceSettings
from inkloop_inference.variants import ServedVariants, VariantSpec, fast_tier, read_variants_file

log = logging.getLogger(__name__)

# Real Qwen-Image defaults (1024², 50 steps, true CFG 4.0); the random-weight presets default to
# small, quick images so `inkloop up` answers in about a second on a CPU.
_DEFAULTS = {
    "tiny": Defaults(width=128, height=128, steps=20, true_cfg_scale=4.0),
    "demo": Defaults(width=512, height=512, steps=20, true_cfg_scale=4.0),
    "weights": Defaults(width=1024, height=1024, steps=50, true_cfg_scale=4.0),
}


def _configured_defaults(model: Defaults, settings: InferenceSettings) -> Defaults:
    """The model's defaults, each replaced where the operator set one (a variant's own steps, say)."""
    return Defaults(
        width=settings.default_width or model.width,
        height=settings.default_height or model.height,
        steps=settings.default_steps or model.steps,
        true_cfg_scale=settings.default_true_cfg_scale or model.true_cfg_scale,
    )


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return setting


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[setting]


class InferenceModel:
    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self._loaded: LoadedModel | None = None
        self._batcher: Batcher[GenerationRequest, GenerationResult] | None = None
        self.defaults = _configured_defaults(_DEFAULTS["weights" if settings.model_path else settings.model], settings)

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            raise errors.Unavailable("the model is still loading")
        return self._loaded

    @property
    def batcher(self) -> Batcher[GenerationRequest, GenerationResult]:
        if self._batcher is None:
            raise errors.Unavailable("the model is still loading")
        return self._batcher

    def load(self) -> None:
        """Loads the weights (blocking): from --model-path, or the preset built once into the data dir."""
        # Library progress bars would interleave with the structured logs.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        device = resolve_device(self.settings.device)
        check_memory_mode(self.settings.memory_mode, device)  # before any slow work
        if self.settings.compile_cache_dir is not None:
            use_compile_cache_dir(self.settings.compile_cache_dir)
        path = self.settings.model_path or ensure_preset(self.settings.model, Path(self.settings.data_dir))
        specs = self._variant_specs(path)
        loaded = load_pipelines(
            path,
            device=device,
            dtype=resolve_dtype(self.settings.dtype, device),
            batch_invariant=self.settings.batch_invariant,
            acceleration=Acceleration(
                batched_cfg=self.settings.batched_cfg,
                step_cache_threshold=self.settings.step_cache_threshold,
                compile=self.settings.compile,
                attention_backend=self.settings.attention_backend,
            ),
            memory_mode=self.settings.memory_mode,
        )
        variants = ServedVariants.load(specs, [loaded.t2i, loaded.inpaint])
        edit_path = self._edit_model_path()
        edit = None
        if edit_path is not None:
            edit = load_edit_pipeline(
                edit_path,
                device=device,
                dtype=loaded.dtype,
                batch_invariant=self.settings.batch_invariant,
                memory_mode=self.settings.memory_mode,
                main=loaded,
            )
        self._loaded = replace(loaded, variants=variants, edit=edit)

    def _edit_model_path(self) -> Path | None:
        """`edit-model-path`, else the preset's edit companion when `edit-preset` asks for it."""
        if self.settings.edit_model_path is not None:
            return self.settings.edit_model_path
        if self.settings.edit_preset and self.settings.model_path is None:
            return ensure_preset(self.settings.model, Path(self.settings.data_dir), edit=True)
        return None

    def _variant_specs(self, path: Path) -> list[VariantSpec]:
        """`variants-file`'s, else the preset's base and fast tier, else the weights' base alone."""
        if self.settings.variants_file is not None:
            return read_variants_file(self.settings.variants_file)
        if self.settings.model_path is None:
            return [VariantSpec("base"), fast_tier(path / FAST_LORA)]
        return [VariantSpec("base")]

    def edit_defaults(self, variant: str) -> Defaults:
        """The defaults of an edit request: the model's, sizes from the image; the edit model has no variants."""
        if variant:
            raise errors.InvalidArgument("parameters.model_variant", "must be empty: the edit model serves no variants")
        return self.defaults

    def defaults_for(self, variant: str) -> Defaults:
        """The defaults of a served variant ("" = the default one); INVALID_ARGUMENT for another name."""
        served = self.loaded.variants
        if served is None:
            if variant:
                raise errors.InvalidArgument("model_variant", "this model serves no variants")
            return self.defaults
        return served.spec(variant).defaults(self.defaults)

    def start_batching(self) -> None:
        self._batcher = Batcher(
            self._run_batch,
            pipelines.batch_key,
            max_batch_size=self.settings.max_batch_size,
            max_queue_delay_s=self.settings.max_queue_delay_ms / 1000,
            capacity=self.settings.queue_capacity,
        )
        self._batcher.start()

    def _run_batch(
        self,
        requests: list[GenerationRequest],
        *,
        on_step: OnStep,
        should_cancel: Callable[[], bool],
    ) -> list[GenerationResult]:
        try:
            return pipelines.run(self.loaded, requests, on_step=on_step, should_cancel=should_cancel)
        except torch.OutOfMemoryError:
            # Free what the failed call held so the next request starts clean.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of GPU memory", extra={"batch_size": len(requests)})
            raise errors.ResourceExhausted(
                "out of GPU memory for this request; retry with fewer images or a smaller size", retry_after_s=1.0
            ) from None

    async def warm_up(self) -> None:
        """One small generation, so the first real request does not pay for lazy initialisation."""
        size = self.loaded.limits.min_size
        request = GenerationRequest(kind="text_to_image", prompt="warm-up", width=size, height=size, steps=2, seed=0)
        async for _event in self.batcher.generate(request):
            pass

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()

    def _defaults_pb(self, limits: Limits, of: Defaults | None = None) -> inference_pb2.ModelDefaults:
        defaults = defaults_to_pb(of or self.defaults)
        sizes = recommended_sizes(
            self.defaults, multiple=limits.size_multiple, min_size=limits.min_size, max_size=limits.max_size
        )
        defaults.sizes.extend(
            inference_pb2.RecommendedSize(aspect_ratio=ratio, width=width, height=height)
            for ratio, width, height in sizes
        )
        return defaults

    def info(self) -> inference_pb2.GetModelInfoResponse:
        loaded = self.loaded
        limits = loaded.limits
        transformer = loaded.t2i.transformer
        return inference_pb2.GetModelInfoResponse(
            model_id=loaded.model_id,
            model_revision=loaded.revision,
            architecture=type(transformer).__name__,
            transformer_parameters=sum(p.numel() for p in transformer.parameters()),
            dtype=str(loaded.dtype).removeprefix("torch."),
            device=str(loaded.device),
            memory_mode=loaded.memory_mode,
            limits=limits_to_pb(limits),
            defaults=self._defaults_pb(limits),
            batching=inference_pb2.BatchingInfo(
                max_batch_size=self.settings.max_batch_size,
                max_queue_delay_ms=self.settings.max_queue_delay_ms,
                queue_capacity=self.settings.queue_capacity,
            ),
            kinds=[PB_OF_KIND[kind] for kind in KINDS if kind != "edit" or loaded.edit is not None],
            edit_model=(
                inference_pb2.EditModelInfo(
                    model_id=loaded.edit.model_id,
                    model_revision=loaded.edit.revision,
                    # Its size is the image's: no default width, height or sizes.
                    defaults=inference_pb2.ModelDefaults(
                        steps=self.defaults.steps, true_cfg_scale=self.defaults.true_cfg_scale
                    ),
                )
                if loaded.edit is not None
                else None
            ),
            variants=[
                inference_pb2.ServedVariant(
                    name=spec.name,
                    defaults=self._defaults_pb(limits, spec.defaults(self.defaults)),
                    adapters=[inference_pb2.ServedAdapter(file=a.path.name, scale=a.scale) for a in spec.adapters],
                    scheduler=spec.scheduler_name,
                )
                for spec in (loaded.variants.specs if loaded.variants is not None else ())
            ],
        )
