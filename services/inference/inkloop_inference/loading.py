"""Load a Qwen-Image model from a local diffusers directory, offline.

One directory gives two pipelines that share every module (nothing is copied): text-to-image
(`QwenImagePipeline`) and inpaint (`QwenImageInpaintPipeline` on the same modules), plus a `revision` that
names the exact weights, and the `Limits` that requests are validated against.

    model = load_pipelines(Path("var/models/tiny"), device="cpu", dtype=torch.float32)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel

# Concrete modules, not `from diffusers import ...`: type checkers resolve that to dummy classes.
from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_inpaint import QwenImageInpaintPipeline

from inkloop.errors import InvalidArgument
from inkloop.generation import SIZE_MULTIPLE, Limits
from inkloop_inference import memory
from inkloop_inference.acceleration import Acceleration, BatchedCfgHook, apply

if TYPE_CHECKING:
    from inkloop_inference.editing import LoadedEdit

logger = logging.getLogger(__name__)

#: The components a diffusers Qwen-Image directory must have, each a folder named in model_index.json.
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
#: Files whose contents define the model: configs, weights and tokenizer files.
REVISION_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".jinja", ".model")
#: Cache of the content hash, beside the weights, keyed by the (path, size, mtime, ctime) of each file.
REVISION_CACHE_FILE = ".inkloop-revision"
#: Where the image's tokens begin in the edit pipeline's chat template.
VISION_START = "<|vision_start|>"
#: `max_sequence_length` above this raises in diffusers 0.42.1.
MAX_SEQUENCE_LENGTH = 1024


class ModelDirectoryError(InvalidArgument, ValueError):
    """The model directory is missing or is not a diffusers Qwen-Image layout."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__("model_path", f"{path}: {problem}")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: both pipelines share the same modules."""

    model_id: str
    revision: str
    t2i: QwenImagePipeline
    inpaint: QwenImageInpaintPipeline
    device: str
    dtype: torch.dtype
    limits: Limits
    path: Path
    #: True: the transformer and VAE run one sample at a time, so an image does not depend on what
    #: else shared its pipeline call (see `make_batch_invariant`).
    batch_invariant: bool = True
    #: Set when batched CFG is on (`acceleration.apply`): `run` tells it the unconditional inputs.
    cfg_hook: BatchedCfgHook | None = field(default=None, compare=False, repr=False)
    #: The pipelines are not re-entrant (they share modules, scheduler and hooks): hold this to run.
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    #: The variants served on these weights (`variants.ServedVariants`); None until they are loaded.
    variants: Any = field(default=None, compare=False, repr=False)
    #: Where the weights live (`memory.MEMORY_MODES`): "full" keeps every component on `device`.
    memory_mode: str = "full"
    #: The instruction-editing model beside this one (`editing.load_edit_pipeline`), when served.
    edit: LoadedEdit | None = field(default=None, compare=False, repr=False)

    def limits_of(self, kind: str) -> Limits:
        """The limits a request of `kind` is checked against (edit: the edit model's tokenizer and template)."""
        return self.edit.limits if kind == "edit" and self.edit is not None else self.limits


def load_pipelines(
    model_path: Path,
    *,
    device: str,
    dtype: torch.dtype,
    batch_invariant: bool = True,
    acceleration: Acceleration | None = None,
    memory_mode: str = "full",
) -> LoadedModel:
    """Load the model at `model_path` (local files only) onto `device` in `dtype`, placed as
    `memory_mode` says (`memory.py`)."""
    # 1. Check the directory and the memory mode before diffusers sees them: its own errors are less precise.
    model_path = Path(model_path).resolve()
    check_layout(model_path)
    memory.check_memory_mode(memory_mode, device)

    # 2. Hash configs and weights (cached per directory) so results can name the exact model.
    revision = memory.revision_for(compute_revision(model_path), memory_mode)

    # 3. Load text-to-image from local files only, and build inpaint from the same modules.
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    # `dtype` is diffusers 0.42's name for the deprecated `torch_dtype`.
    t2i = QwenImagePipeline.from_pretrained(
        model_path, local_files_only=True, dtype=dtype, **memory.load_kwargs(memory_mode, dtype, device)
    )
    if memory.places_on_device(memory_mode) and t2i.device != torch.device(device):
        t2i.to(device)
    t2i.set_progress_bar_config(disable=True)
    # Not `from_pipe`: diffusers 0.42 ends it with `.to(dtype=float32)` unless told otherwise, which
    # cast the shared modules of a bf16 model to fp32 (seen on the GPU: 86 GB resident, then a dtype
    # error at the first step) and refuses quantized ones.
    inpaint = QwenImageInpaintPipeline(**t2i.components)
    inpaint.set_progress_bar_config(disable=True)

    # 4. The pipeline constructors reset the template start index to 34; set it for this tokenizer.
    set_prompt_template_start(t2i)
    set_prompt_template_start(inpaint)

    # 5. Same image for a request whatever else is batched with it (at the cost of batched GEMMs).
    if batch_invariant:
        make_batch_invariant(t2i)

    # 6. Optional speed-ups (batched CFG, step cache, compile); all off by default.
    cfg_hook = apply(t2i, acceleration or Acceleration())

    # 7. Offload modes: the weights stay in CPU memory and move to the GPU as they run (last, so the
    #    offload hooks wrap the modules as they will run).
    memory.apply_offload([t2i, inpaint], memory_mode, device)
    logger.info(
        "loaded %s (revision %s) on %s/%s, memory mode %s, in %.2f s",
        model_path.name,
        revision,
        device,
        dtype,
        memory_mode,
        time.perf_counter() - started,
    )

    return LoadedModel(
        model_id=model_path.name,
        revision=revision,
        t2i=t2i,
        inpaint=inpaint,
        device=device,
        dtype=dtype,
        limits=limits_for(t2i),
        path=model_path,
        batch_invariant=batch_invariant,
        cfg_hook=cfg_hook,
        memory_mode=memory_mode,
    )


def check_layout(
    model_path: Path, *, components: tuple[str, ...] = COMPONENTS, pipeline_class: str | None = None
) -> None:
    """Raise `ModelDirectoryError` unless `model_path` is a saved diffusers Qwen-Image pipeline (of
    `pipeline_class`, when given) with `components`."""
    if not model_path.exists():
        raise ModelDirectoryError(model_path, "no such directory")
    if not model_path.is_dir():
        raise ModelDirectoryError(model_path, "not a directory")
    index_file = model_path / "model_index.json"
    if not index_file.is_file():
        raise ModelDirectoryError(model_path, "no model_index.json: not a diffusers pipeline directory")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelDirectoryError(model_path, f"model_index.json is unreadable: {exc}") from exc
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(class_name, str) or not class_name.startswith("QwenImage"):
        raise ModelDirectoryError(model_path, f"model_index.json names {class_name!r}, not a QwenImage pipeline")
    if pipeline_class is not None and class_name != pipeline_class:
        raise ModelDirectoryError(model_path, f"model_index.json names {class_name!r}, not {pipeline_class}")
    missing = [name for name in components if name not in index]
    if missing:
        raise ModelDirectoryError(model_path, f"model_index.json lacks components {missing}")
    for name in components:
        folder = model_path / name
        if not folder.is_dir() or not any(folder.glob("*.json")):
            raise ModelDirectoryError(model_path, f"component folder {name}/ is missing or has no config")


def set_prompt_template_start(pipe: Any) -> int:
    """Set how many template tokens the pipeline drops, counted with the pipeline's own tokenizer.

    The prompt is wrapped in a chat template; the hidden states of its fixed prefix are dropped (up to
    the image's tokens, which the edit pipeline keeps). Stock diffusers hard-codes 34 (64 for edit),
    right for the real Qwen vocabulary, and resets it on every construction and load, so call this
    after each one.
    """
    prefix = pipe.prompt_template_encode.split("{}")[0].split(VISION_START)[0]
    start = len(pipe.tokenizer(prefix)["input_ids"])
    pipe.prompt_template_encode_start_idx = start
    return start


def make_batch_invariant(pipe: Any) -> None:
    """Run the transformer and the VAE one sample at a time, each with its text padding removed.

    Batched matrix products are not bit-identical to single ones (on CPU and GPU alike: kernels are
    picked and blocked by shape), and a batch pads shorter prompts. Split per sample, each image of a
    batched call is computed exactly as in a call of its own, while the batch still shares one
    denoising loop, one progress stream and one cancellation point. The modules are shared, so
    this applies to every pipeline built from them.
    """
    pipe.vae.enable_slicing()  # diffusers' own per-sample VAE encode/decode
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    if registry.get_hook(PerSampleTransformerHook.name) is None:
        registry.register_hook(PerSampleTransformerHook(), PerSampleTransformerHook.name)


class PerSampleTransformerHook(ModelHook):
    """A diffusers hook: one transformer forward per sample, text padding stripped, outputs stacked."""

    name = "inkloop_per_sample"
    _signature = inspect.signature(QwenImageTransformer2DModel.forward)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        call = self._signature.bind(module, *args, **kwargs).arguments
        call.pop("self")
        if call.get("controlnet_block_samples") is not None:
            raise NotImplementedError("per-sample transformer forward does not support controlnet residuals")
        hidden_states: torch.Tensor = call["hidden_states"]
        text: torch.Tensor = call["encoder_hidden_states"]
        text_mask: torch.Tensor | None = call.get("encoder_hidden_states_mask")
        batch = hidden_states.shape[0]
        forward = cast(Callable[..., Any], self.fn_ref.original_forward)

        outputs = []
        for i in range(batch):
            one = dict(call, return_dict=False)
            length = int(text_mask[i].sum()) if text_mask is not None else text.shape[1]
            one["hidden_states"] = hidden_states[i : i + 1].contiguous()
            one["encoder_hidden_states"] = text[i : i + 1, :length].contiguous()
            one["encoder_hidden_states_mask"] = None  # what a lone, unpadded prompt gets
            for name in ("timestep", "guidance", "additional_t_cond"):
                value = call.get(name)
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                    one[name] = value[i : i + 1]
            if call.get("img_shapes") is not None:
                one["img_shapes"] = call["img_shapes"][i : i + 1]
            outputs.append(forward(**one)[0])
        sample = torch.cat(outputs)
        return Transformer2DModelOutput(sample=sample) if call.get("return_dict", True) else (sample,)


def limits_for(pipe: Any) -> Limits:
    """Limits of a loaded pipeline: sizes a multiple of lcm(16, what its VAE and patching need)."""
    vae_scale_factor = int(pipe.vae_scale_factor)
    template = pipe.prompt_template_encode
    tokenizer = pipe.tokenizer

    def count_prompt_tokens(prompt: str) -> int:
        # What `_get_qwen_prompt_embeds` keeps: the templated prompt minus the dropped prefix.
        ids = tokenizer(template.format(prompt))["input_ids"]
        return len(ids) - int(pipe.prompt_template_encode_start_idx)

    return Limits(
        size_multiple=math.lcm(SIZE_MULTIPLE, 2 * vae_scale_factor),
        max_sequence_length=min(MAX_SEQUENCE_LENGTH, int(pipe.tokenizer_max_length)),
        vae_scale_factor=vae_scale_factor,
        count_prompt_tokens=count_prompt_tokens,
    )


def compute_revision(model_path: Path) -> str:
    """A short, stable content hash (sha256, 12 hex) of the configs, tokenizer files and weights.

    Hashing a full-size model reads every byte once; the result is cached in `.inkloop-revision`,
    keyed by each file's path, size, mtime and ctime, so later loads only stat the files. A read-only
    directory is hashed on every load.
    """
    files = sorted(
        path
        for path in model_path.rglob("*")
        if path.is_file()
        and path.suffix in REVISION_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(model_path).parts)
    )
    key = [_file_key(model_path, path) for path in files]

    cache_file = model_path / REVISION_CACHE_FILE
    cached = _read_revision_cache(cache_file)
    if cached is not None and cached.get("files") == key:
        return str(cached["revision"])

    started = time.perf_counter()
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(model_path).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    revision = digest.hexdigest()[:12]
    logger.info(
        "hashed %d files of %s in %.2f s: revision %s", len(files), model_path, time.perf_counter() - started, revision
    )
    _write_revision_cache(cache_file, {"revision": revision, "files": key})
    return revision


def _file_key(root: Path, path: Path) -> list[str | int]:
    stat = path.stat()
    return [path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _read_revision_cache(cache_file: Path) -> dict[str, object] | None:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "revision" in data else None


def _write_revision_cache(cache_file: Path, data: dict[str, object]) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=REVISION_CACHE_FILE, dir=cache_file.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream)
        os.replace(tmp, cache_file)
    except OSError as exc:
        logger.warning("cannot cache the revision in %s (%s); it will be hashed again on next load", cache_file, exc)
