"""Memory modes: where the weights live, so Qwen-Image fits GPUs smaller than 80 GB.

Qwen-Image is a 20B transformer (about 41 GB in bfloat16) and a 7B text encoder (about 16 GB).
The `memory-mode` setting picks one of:

- `full`: every component on the device (the default, and the only mode on CPU).
- `model-offload`: diffusers' model CPU offload. The components live in CPU memory and each moves
  whole to the GPU while it runs (text encoder, then transformer, then VAE): the GPU holds the
  largest component, the transformer, plus activations.
- `group-offload`: diffusers' group offloading with CUDA streams. The transformer's blocks (one per
  group) and the text encoder's layers stay in pinned CPU memory and are copied to the GPU as they
  run, the next one while the current one computes; the VAE stays on the GPU. The GPU holds a few
  blocks plus activations; every transformer forward copies all of its weights once.
- `fp8`: the transformer's linear weights stored as float8 e4m3 (torchao weight-only: arithmetic in
  the model's dtype), about half the transformer's memory; everything on the GPU. Images differ
  from `full`.
- `nf4`: the transformer's linear weights stored as 4-bit NF4 (bitsandbytes, arithmetic in the
  model's dtype), about a quarter; everything on the GPU. Images differ from `full`.

Every mode but `full` needs CUDA, and is refused on a CPU at start (no silent fallback): the
offload modes move weights between CPU memory and a GPU, and between CPU and CPU they would only
add copies (diffusers runs group offloading between CPU and CPU, which the tests use to check the
wiring, not to serve); diffusers' bitsandbytes loader refuses to quantize without a GPU, and fp8
weights save nothing a CPU needs saved. torchao and bitsandbytes are optional (the `gpu-quant`
extra), imported only when their mode is asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from inkloop.errors import InvalidArgument

if TYPE_CHECKING:
    import torch

MemoryMode = Literal["full", "model-offload", "group-offload", "fp8", "nf4"]
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)
#: Modes that change the transformer's weights (so the images, and the revision results name).
QUANTIZED = ("fp8", "nf4")
#: Modes that keep weights in CPU memory and move them to the GPU as they run.
OFFLOADED = ("model-offload", "group-offload")
#: The package each quantized mode imports, and the extra that installs it.
QUANTIZATION_PACKAGES = {"fp8": "torchao", "nf4": "bitsandbytes"}
EXTRA = "gpu-quant"

_WHY_CUDA = {
    "model-offload": "moves each component from CPU memory to the GPU while it runs",
    "group-offload": "streams the transformer's blocks from pinned CPU memory to the GPU on CUDA streams",
    "fp8": "stores the transformer's weights in float8 (torchao) to fit a GPU's memory",
    "nf4": "stores the transformer's weights in 4-bit NF4 (bitsandbytes, which quantizes on the GPU only)",
}


class MemoryModeError(InvalidArgument, ValueError):
    """The memory mode cannot run here (no CUDA, or its optional package is not installed)."""

    def __init__(self, message: str) -> None:
        super().__init__("memory_mode", message)


def cpu_refusal(mode: str, device: str) -> str | None:
    """Why `mode` cannot run on `device` ("cpu", "cuda", "cuda:1"), or None when it can.

    The reason reads after the setting's name: "memory_mode: nf4 stores ..., so it needs a CUDA device".
    """
    if mode not in MEMORY_MODES:
        return f"{mode!r} is not one of {list(MEMORY_MODES)}"
    if mode == "full" or device.split(":")[0] == "cuda":
        return None
    return (
        f"{mode} {_WHY_CUDA[mode]}, so it needs a CUDA device, but the device is {device}; "
        "on a CPU use memory_mode full"
    )


def check_memory_mode(mode: str, device: str) -> None:
    """Raise `MemoryModeError` unless `mode` can run on `device` with the packages installed here."""
    refusal = cpu_refusal(mode, device)
    if refusal is not None:
        raise MemoryModeError(refusal)
    package = QUANTIZATION_PACKAGES.get(mode)
    if package is not None and importlib.util.find_spec(package) is None:
        raise MemoryModeError(
            f"{mode} needs the {package} package, which is not installed: install the "
            f"{EXTRA} extra (pip install 'inkloop[inference,{EXTRA}]')"
        )


def revision_for(revision: str, mode: str) -> str:
    """The revision results name: the weights' own, or a different one when the mode quantizes them.

    Quantized weights give other images, and the gateway's result cache is keyed by the revision.
    """
    if mode not in QUANTIZED:
        return revision
    return hashlib.sha256(f"{revision}+{mode}".encode()).hexdigest()[:12]


def places_on_device(mode: str) -> bool:
    """True when the whole pipeline is moved to the device after loading (not the offload modes)."""
    return mode not in OFFLOADED


def load_kwargs(mode: str, dtype: torch.dtype, device: str) -> dict[str, Any]:
    """Extra `from_pretrained` arguments of `mode`: the transformer's quantization, loaded on the GPU."""
    if mode not in QUANTIZED:
        return {}
    from diffusers.quantizers.pipe_quant_config import PipelineQuantizationConfig

    return {
        "quantization_config": PipelineQuantizationConfig(quant_mapping={"transformer": _quantization(mode, dtype)}),
        # Weights go straight to the GPU and are quantized there (not 41 GB quantized on the CPU).
        "device_map": device,
    }


def _quantization(mode: str, dtype: torch.dtype) -> Any:
    if mode == "fp8":
        from diffusers.quantizers.quantization_config import TorchAoConfig
        from torchao.quantization import Float8WeightOnlyConfig

        return TorchAoConfig(Float8WeightOnlyConfig())
    from diffusers.quantizers.quantization_config import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def apply_offload(pipes: Sequence[Any], mode: str, device: str) -> None:
    """Offload the pipelines' shared modules as `mode` says (nothing for the other modes).

    `pipes` share their modules (t2i first). Called last at load, after the per-sample and
    acceleration hooks, so the offload hooks see the modules as they will run. `device` is the
    onload device; the checks above allow only CUDA in the service, the tests pass "cpu".
    """
    import torch

    if mode == "model-offload":
        # Each pipeline re-installs the hooks at the end of its own calls, so both get them.
        for pipe in pipes:
            pipe.enable_model_cpu_offload(device=device)
    elif mode == "group-offload":
        from diffusers.hooks import apply_group_offloading

        onload = torch.device(device)
        streams = onload.type == "cuda"
        pipe = pipes[0]
        pipe.transformer.enable_group_offload(
            onload_device=onload,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            non_blocking=streams,
            use_stream=streams,
        )
        # A transformers model has no top-level list of blocks: offload it leaf by leaf.
        apply_group_offloading(
            pipe.text_encoder,
            onload_device=onload,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            non_blocking=streams,
            use_stream=streams,
        )
        pipe.vae.to(onload)  # about 0.25 GB: not worth a copy per decode
