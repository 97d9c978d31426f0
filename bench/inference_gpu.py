"""GPU: seconds per image at 1024x1024, 50 steps, true CFG, with the full-size Qwen-Image transformer
(60 dual-stream blocks, 24 heads x 128, random weights built from the published config: nothing is
downloaded) and the real-size VAE; stock diffusers vs inkloop's path, in the same run.

Anchors on one H100: stock diffusers about 18.5 s, SGLang-Diffusion about 12.8 s, compute floor
about 7 s (about 70 TFLOPs per forward, 100 forwards). Goal: <= 10 s without step skipping.

    .venv/bin/python bench/inference_gpu.py                       # on a CUDA machine
    .venv/bin/python bench/inference_gpu.py --compile --step-cache 0.08
    .venv/bin/python bench/inference_gpu.py --device cpu --layers 2 --size 128 --steps 2   # smoke test

The text encoder is not part of the measurement (prompt embeddings of the real width, 3584, are
made at random), so the figures are transformer + scheduler + VAE decode, as in the anchors.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline

from inkloop_inference.acceleration import Acceleration, apply
from inkloop_inference.presets import QWEN_IMAGE_SCHEDULER_CONFIG, build_preset

# Qwen/Qwen-Image transformer/config.json as published.
FULL_TRANSFORMER = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    guidance_embeds=False,
    axes_dims_rope=(16, 56, 56),
)


def build_pipeline(args: argparse.Namespace, dtype: torch.dtype) -> QwenImagePipeline:
    torch.manual_seed(0)
    with torch.device(args.device):
        transformer = QwenImageTransformer2DModel(**{**FULL_TRANSFORMER, "num_layers": args.layers}).to(dtype)
        vae = AutoencoderKLQwenImage().to(dtype)  # the class defaults are Qwen-Image's VAE
    tiny = build_preset("tiny")  # only its tokenizer and text encoder objects; prompts come as embeddings
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(QWEN_IMAGE_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_embeddings(args: argparse.Namespace, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)

    def embeds(tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        values = torch.randn(1, tokens, FULL_TRANSFORMER["joint_attention_dim"], generator=generator)  # type: ignore[call-overload]
        return values.to(args.device, dtype), torch.ones(1, tokens, dtype=torch.long, device=args.device)

    prompt, mask = embeds(args.prompt_tokens)
    negative, negative_mask = embeds(8)
    return dict(
        prompt_embeds=prompt,
        prompt_embeds_mask=mask,
        negative_prompt_embeds=negative,
        negative_prompt_embeds_mask=negative_mask,
    )


def timed(
    pipe: QwenImagePipeline,
    args: argparse.Namespace,
    embeddings: dict[str, torch.Tensor],
    steps: int,
    hook: object | None = None,
) -> tuple[float, np.ndarray]:
    if hook is not None:
        hook.arm(embeddings["negative_prompt_embeds"], embeddings["negative_prompt_embeds_mask"])  # type: ignore[attr-defined]
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        image = pipe(
            **embeddings,
            true_cfg_scale=4.0,
            width=args.size,
            height=args.size,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(7),
            output_type="np",
        ).images[0]
    if args.device == "cuda":
        torch.cuda.synchronize()
    if hook is not None:
        hook.disarm()  # type: ignore[attr-defined]
    return time.perf_counter() - started, np.asarray(image)


def measure(
    label: str,
    pipe: QwenImagePipeline,
    args: argparse.Namespace,
    embeddings: dict[str, torch.Tensor],
    hook: object | None = None,
) -> np.ndarray:
    timed(pipe, args, embeddings, steps=2, hook=hook)  # warm-up (and compilation)
    runs = [timed(pipe, args, embeddings, args.steps, hook) for _ in range(args.runs)]
    seconds = min(r[0] for r in runs)
    memory = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device == "cuda" else ""
    print(f"{label:<44} {seconds:8.2f} s/image{memory}")
    return runs[0][1]


def main(args: argparse.Namespace) -> None:
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    print(
        f"{args.layers}-layer Qwen-Image transformer, {args.size}x{args.size}, {args.steps} steps, true CFG 4.0, "
        f"{args.dtype} on {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'})"
    )
    embeddings = prompt_embeddings(args, dtype)

    stock = build_pipeline(args, dtype)
    stock_image = measure("stock diffusers (two CFG passes per step)", stock, args, embeddings)
    del stock
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    ours = build_pipeline(args, dtype)
    hook = apply(ours, Acceleration(batched_cfg=True, compile=args.compile, attention_backend=args.attention))
    label = "inkloop: batched CFG" + (" + compile" if args.compile else "") + f", {args.attention} attention"
    ours_image = measure(label, ours, args, embeddings, hook)
    print(
        f"  image difference to stock: max {np.abs(ours_image - stock_image).max() * 255:.1f}/255, "
        f"mean {np.abs(ours_image - stock_image).mean() * 255:.2f}/255"
    )

    if args.step_cache > 0:
        cached = build_pipeline(args, dtype)
        cached_hook = apply(
            cached,
            Acceleration(
                batched_cfg=True,
                compile=args.compile,
                attention_backend=args.attention,
                step_cache_threshold=args.step_cache,
            ),
        )
        cached_image = measure(
            f"inkloop + step cache (threshold {args.step_cache})", cached, args, embeddings, cached_hook
        )
        difference = np.abs(cached_image - ours_image)
        mse = float((difference**2).mean())
        psnr = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
        print(f"  image difference to no cache: mean {difference.mean() * 255:.2f}/255, PSNR {psnr:.1f} dB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--layers", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=120)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--attention", default="native", help="diffusers attention backend")
    parser.add_argument("--step-cache", type=float, default=0.0, help="also measure the step cache at this threshold")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "inkloop-bench"))
    main(parser.parse_args())
