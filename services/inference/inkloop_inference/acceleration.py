"""Optional speed-ups for the GPU path, each a setting, all off by default on the CPU.

- Batched CFG: stock diffusers runs the conditional and the unconditional transformer pass one after
  the other; `BatchedCfgHook` runs both as one batch of twice the size, which keeps a GPU busier.
- Step cache: diffusers' First-Block Cache skips the rest of the transformer on steps where the
  first block's output barely changed (speed for a small, measured image difference).
- torch.compile of the repeated transformer blocks (regional compilation: quick to compile), its
  artefacts optionally kept in a directory that outlives the process (`use_compile_cache_dir`).
- Attention backend: diffusers' dispatcher; "native" is PyTorch SDPA, which picks flash attention on
  CUDA for bf16 without a mask.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, ModelHook
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

log = logging.getLogger(__name__)


@dataclass
class _Negative:
    embeds: torch.Tensor
    mask: torch.Tensor  # bool, never None: all-True when the prompt has no padding


@dataclass
class _Stash:
    latents: torch.Tensor  # the `hidden_states` object of the conditional call
    negative: _Negative
    output: torch.Tensor


def _bool_mask(embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
    return mask.to(torch.bool)


def _pad(embeds: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - embeds.shape[1]
    if extra == 0:
        return embeds, mask
    return (
        torch.nn.functional.pad(embeds, (0, 0, 0, extra)),
        torch.nn.functional.pad(mask, (0, extra), value=False),
    )


class BatchedCfgHook(ModelHook):
    """Computes the unconditional pass together with the conditional one, as one batch.

    `arm(negative_embeds, negative_mask)` before a pipeline call says what the unconditional pass
    will be given. The conditional call then runs [cond; uncond] in one forward (text padded to one
    length, padding masked) and keeps the unconditional half; the next call, if it really is that
    unconditional pass (same latents object, equal text), gets the kept half without running the
    model. Any call that does not match runs normally, so results never depend on guessing right.
    """

    name = "inkloop_batched_cfg"

    def __init__(self) -> None:
        super().__init__()
        self._negative: _Negative | None = None
        self._stash: _Stash | None = None
        self.batched_calls = 0

    def arm(self, negative_embeds: torch.Tensor, negative_mask: torch.Tensor | None) -> None:
        self._negative = _Negative(negative_embeds, _bool_mask(negative_embeds, negative_mask))
        self._stash = None

    def disarm(self) -> None:
        self._negative = None
        self._stash = None

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        original = cast(Callable[..., Any], self.fn_ref.original_forward)
        return_dict = kwargs.pop("return_dict", True)
        if args or self._negative is None:
            return original(*args, return_dict=return_dict, **kwargs)
        hidden_states: torch.Tensor = kwargs["hidden_states"]
        text: torch.Tensor = kwargs["encoder_hidden_states"]
        text_mask = _bool_mask(text, kwargs.get("encoder_hidden_states_mask"))

        stash, self._stash = self._stash, None
        if stash is not None and self._is_unconditional_of(stash, hidden_states, text, text_mask):
            sample = stash.output
        elif self._negative.embeds.shape[0] == text.shape[0]:
            sample = self._forward_both(original, kwargs, hidden_states, text, text_mask)
        else:
            sample = original(**kwargs, return_dict=False)[0]
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def _forward_both(
        self,
        original: Any,
        kwargs: dict[str, Any],
        hidden_states: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        assert self._negative is not None
        negative = self._negative
        length = max(text.shape[1], negative.embeds.shape[1])
        cond_text, cond_mask = _pad(text, text_mask, length)
        uncond_text, uncond_mask = _pad(negative.embeds, negative.mask, length)
        batch = hidden_states.shape[0]
        both = dict(kwargs)
        both["hidden_states"] = torch.cat([hidden_states, hidden_states])
        both["encoder_hidden_states"] = torch.cat([cond_text, uncond_text])
        both["encoder_hidden_states_mask"] = torch.cat([cond_mask, uncond_mask])
        for name in ("timestep", "guidance"):
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                both[name] = torch.cat([value, value])
        if kwargs.get("img_shapes") is not None:
            both["img_shapes"] = list(kwargs["img_shapes"]) * 2
        output = original(**both, return_dict=False)[0]
        self.batched_calls += 1
        self._stash = _Stash(hidden_states, negative, output[batch:])
        return output[:batch]

    @staticmethod
    def _is_unconditional_of(
        stash: _Stash, hidden_states: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> bool:
        negative = stash.negative
        return (
            hidden_states is stash.latents
            and text.shape == negative.embeds.shape
            and torch.equal(text, negative.embeds)
            and torch.equal(text_mask, negative.mask)
        )


@dataclass(frozen=True)
class Acceleration:
    """Which speed-ups to apply; see the module docstring."""

    batched_cfg: bool = False
    step_cache_threshold: float = 0.0  # 0 = off; 0.05–0.1 is diffusers' suggested range
    compile: bool = False
    attention_backend: str = "native"


def apply(pipe: QwenImagePipeline, acceleration: Acceleration) -> BatchedCfgHook | None:
    """Applies `acceleration` to the pipeline's transformer (shared by every pipeline built from it)."""
    transformer = pipe.transformer
    if acceleration.attention_backend != "native":
        transformer.set_attention_backend(acceleration.attention_backend)
    # The step cache goes on first so the CFG hook, registered after it, wraps it from outside.
    if acceleration.step_cache_threshold > 0:
        transformer.enable_cache(FirstBlockCacheConfig(threshold=acceleration.step_cache_threshold))
    hook = None
    if acceleration.batched_cfg:
        hook = BatchedCfgHook()
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, BatchedCfgHook.name)
    if acceleration.compile:
        # The step cache decides per step, in Python (`.item()`, torch.compiler.disable), whether the
        # blocks run: a graph break inside the first block, which fullgraph=True refuses.
        transformer.compile_repeated_blocks(fullgraph=acceleration.step_cache_threshold == 0)
    log.info("acceleration: %s", acceleration)
    return hook


def use_compile_cache_dir(path: Path) -> None:
    """Keep torch.compile's artefacts in `path` (PyTorch's inductor cache: FX graphs, generated code, and
    Triton's kernels under it), so a restart with the same directory skips most of the compilation.

    Call before anything compiles; unset, PyTorch uses /tmp/torchinductor_<user>, gone with the pod.
    """
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path.resolve())
    log.info("torch.compile cache: %s", path)
