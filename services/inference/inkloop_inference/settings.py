"""Settings of the inference service (flags, or INKLOOP_INFERENCE_* environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from inkloop.config import ServiceSettings
from inkloop_inference.memory import MemoryMode, cpu_refusal


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INKLOOP_INFERENCE_")

    port: int = Field(50052, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9092, ge=0, le=65535, description="Prometheus /metrics port.")
    model: Literal["tiny", "demo"] = Field(
        "tiny", description="Preset built offline when --model-path is not given (random weights)."
    )
    model_path: Path | None = Field(
        None, description="Local diffusers-format Qwen-Image directory; never downloaded from a hub."
    )
    edit_model_path: Path | None = Field(
        None,
        description="Local diffusers-format Qwen-Image-Edit directory served for instruction edits (kind edit) beside "
        "the main model; components identical to the main model's are shared, not loaded twice.",
    )
    edit_preset: bool = Field(
        False,
        description="Without --model-path: also serve the preset's instruction-editing companion (random weights, "
        "built offline like the preset).",
    )
    default_width: int = Field(0, ge=0, le=4096, description="Width a request without one gets; 0 = the model's own.")
    default_height: int = Field(0, ge=0, le=4096, description="Height a request without one gets; 0 = the model's own.")
    variants_file: Path | None = Field(
        None,
        description="YAML of model variants (LoRA adapters, schedule, defaults) served on the base weights; unset = "
        "base (plus the fast tier on the presets).",
    )
    default_steps: int = Field(0, ge=0, le=1000, description="Steps a request without them gets; 0 = the model's own.")
    default_true_cfg_scale: float = Field(
        0.0, ge=0, le=100, description="True CFG scale a request without one gets; 0 = the model's own."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU."
    )
    max_batch_size: int = Field(4, ge=1, le=64, description="Most requests in one pipeline call.")
    max_queue_delay_ms: int = Field(
        10, ge=0, le=10_000, description="How long a batch waits for companions before it runs."
    )
    queue_capacity: int = Field(64, ge=1, description="Requests that may wait; beyond: RESOURCE_EXHAUSTED.")
    warmup: bool = Field(True, description="Run one generation before reporting SERVING.")
    batch_invariant: bool = Field(
        True,
        description="Run the transformer one sample at a time inside a batch, so an image is byte-identical "
        "whatever shares its pipeline call; off = batched matrix products (faster, ±1/255 rounding).",
    )
    batched_cfg: bool = Field(
        False, description="Run the conditional and unconditional CFG passes as one transformer batch (GPU)."
    )
    step_cache_threshold: float = Field(
        0.0, ge=0, le=1, description="First-block step cache threshold; 0 = off (skips steps: changes images)."
    )
    compile: bool = Field(False, description="torch.compile the repeated transformer blocks at load.")
    attention_backend: str = Field(
        "native", description="diffusers attention backend: native (PyTorch SDPA), flash, _native_flash, …"
    )
    memory_mode: MemoryMode = Field(
        "full",
        description="Where the weights live: full (all on the device), model-offload / group-offload (in CPU "
        "memory, moved to the GPU as they run), fp8 / nf4 (the transformer quantized; gpu-quant extra). "
        "All but full need CUDA.",
    )
    compile_cache_dir: Path | None = Field(
        None,
        description="Directory for torch.compile's artefacts (PyTorch's inductor cache), kept across restarts so "
        "a second start skips most compilation; unset = PyTorch's default under /tmp.",
    )

    @model_validator(mode="after")
    def _default_size_is_a_whole_size(self) -> InferenceSettings:
        if (self.default_width == 0) != (self.default_height == 0):
            raise ValueError("default_width and default_height are set together (or both 0 for the model's own)")
        if self.default_width % 16 or self.default_height % 16:
            raise ValueError("default_width and default_height must be multiples of 16")
        return self

    @model_validator(mode="after")
    def _memory_mode_fits_the_device(self) -> InferenceSettings:
        # device auto is resolved at start, where the same check runs again (memory.check_memory_mode).
        refusal = cpu_refusal(self.memory_mode, self.device) if self.device == "cpu" else None
        if refusal is not None:
            raise ValueError(f"memory_mode {refusal}")
        return self

    @model_validator(mode="after")
    def _batched_cfg_needs_batched_kernels(self) -> InferenceSettings:
        if self.batched_cfg and self.batch_invariant:
            raise ValueError("batched_cfg batches the transformer: turn batch_invariant off to use it")
        return self
