"""The instruction-editing model: a Qwen-Image-Edit directory, loaded offline beside the main model.

`QwenImageEditPipeline` conditions on the image twice: its text encoder is the vision-language
model (Qwen2.5-VL, the image through its vision tower and `processor`), and the transformer sees the
image's VAE latents beside the noise. Both take the image resized to about one megapixel at its
aspect ratio (`condition_size`), whatever the output size.

    edit = load_edit_pipeline(Path("var/models/tiny-edit"), device="cpu", dtype=torch.float32)

Components equal to the main model's (Qwen-Image-Edit ships Qwen-Image's own text encoder and VAE)
are shared instead of loaded twice (`main=`, compared by content hash).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import QwenImageEditPipeline, calculate_dimensions
from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from inkloop.generation import Limits
from inkloop_inference import memory
from inkloop_inference.loading import (
    COMPONENTS,
    LoadedModel,
    check_layout,
    compute_revision,
    limits_for,
    make_batch_invariant,
    set_prompt_template_start,
)

logger = logging.getLogger(__name__)

#: A Qwen-Image-Edit directory has the main model's components plus the VL processor.
EDIT_COMPONENTS = (*COMPONENTS, "processor")
EDIT_PIPELINE_CLASS = "QwenImageEditPipeline"
#: The pipeline resizes the image to this area (at its aspect ratio) for both of its encoders.
CONDITION_AREA = 1024 * 1024
NO_EDIT_MODEL = "this inference service serves no edit model (set edit-model-path)"
#: Components that may be shared with the main model when their files are identical.
SHAREABLE = ("text_encoder", "tokenizer", "vae")


class ImageTextProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor for images and text only.

    transformers builds Qwen2VLProcessor with a video processor, which needs torchvision (never
    installed here); the edit pipeline sends no video. Same files, same outputs for image + text.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **_: Any):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


@dataclass(frozen=True)
class LoadedEdit:
    """The edit pipeline, what names its weights, and the limits its requests are checked against."""

    model_id: str
    revision: str
    pipe: QwenImageEditPipeline
    limits: Limits
    #: Components taken from the main model instead of loaded (identical files).
    shared: tuple[str, ...] = ()


def load_edit_pipeline(
    model_path: Path,
    *,
    device: str,
    dtype: torch.dtype,
    batch_invariant: bool = True,
    memory_mode: str = "full",
    main: LoadedModel | None = None,
) -> LoadedEdit:
    """Load the Qwen-Image-Edit directory at `model_path` (local files only), sharing with `main` the
    components whose files are identical (in memory mode full: offloading hooks are per pipeline)."""
    model_path = Path(model_path).resolve()
    check_layout(model_path, components=EDIT_COMPONENTS, pipeline_class=EDIT_PIPELINE_CLASS)
    revision = memory.revision_for(compute_revision(model_path), memory_mode)
    started = time.perf_counter()
    shared = _identical_components(model_path, main) if main is not None and memory_mode == "full" else {}
    pipe = QwenImageEditPipeline.from_pretrained(
        model_path,
        local_files_only=True,
        dtype=dtype,
        processor=ImageTextProcessor.from_pretrained(model_path / "processor", local_files_only=True),
        **shared,
        **memory.load_kwargs(memory_mode, dtype, device),
    )
    if memory.places_on_device(memory_mode) and pipe.device != torch.device(device):
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    set_prompt_template_start(pipe)
    if batch_invariant:
        make_batch_invariant(pipe)
    memory.apply_offload([pipe], memory_mode, device)
    logger.info(
        "loaded edit model %s (revision %s, shared with the main model: %s) in %.2f s",
        model_path.name,
        revision,
        sorted(shared) or "nothing",
        time.perf_counter() - started,
    )
    return LoadedEdit(
        model_id=model_path.name, revision=revision, pipe=pipe, limits=limits_for(pipe), shared=tuple(sorted(shared))
    )


def condition_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) the pipeline resizes an image of `image_size` to before encoding it."""
    width, height, _ = calculate_dimensions(CONDITION_AREA, image_size[0] / image_size[1])
    return int(width), int(height)


def _identical_components(model_path: Path, main: LoadedModel) -> dict[str, Any]:
    """The main model's modules whose saved files equal this directory's."""
    return {
        name: getattr(main.t2i, name)
        for name in SHAREABLE
        if (main.path / name).is_dir() and compute_revision(main.path / name) == compute_revision(model_path / name)
    }
