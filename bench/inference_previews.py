"""Cost of live previews: denoising seconds with a preview every 5 steps vs none (goal: <= 2%).

    .venv/bin/python bench/inference_previews.py [--model tiny|demo] [--size 512] [--steps 20] [--pairs 10]

The same request (same seed) is run with and without previews, in random order within each pair, on
the loaded model in this process; the figure is the median of the per-pair ratios of the denoising
time the pipeline reports (`Timings.denoise_s`, which holds the previews' work: the clean-image
estimate, the latent-to-RGB projection and the JPEG). The images are checked to be identical.
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from inkloop_inference import pipelines
from inkloop_inference.loading import load_pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.presets import ensure_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "demo"], default="demo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--data-dir", default="var")
    args = parser.parse_args()
    model = load_pipelines(ensure_preset(args.model, Path(args.data_dir)), device="cpu", dtype=torch.float32)
    plain = GenerationRequest(
        kind="text_to_image",
        prompt="a watercolour fox 水彩狐狸",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=1,
        true_cfg_scale=1.0,
    )
    previewed = replace(plain, preview_every_steps=args.every)
    pipelines.run(model, [previewed])  # warm-up
    ratios, off, on = [], [], []
    for _ in range(args.pairs):
        order = [plain, previewed]
        random.shuffle(order)
        seconds = {}
        for request in order:
            [result] = pipelines.run(model, [request], on_step=lambda step, total, previews: None)
            seconds[request.preview_every_steps] = result.timings.denoise_s
            images = result.images
        assert images == pipelines.run(model, [plain])[0].images, "previews changed the image"
        off.append(seconds[0])
        on.append(seconds[args.every])
        ratios.append(seconds[args.every] / seconds[0])
    low, _, high = (100 * (q - 1) for q in statistics.quantiles(ratios, n=4))
    print(
        f"{args.model} {args.size}² {args.steps} steps, a preview every {args.every}: denoise "
        f"{statistics.median(on):.3f} s vs {statistics.median(off):.3f} s without; "
        f"overhead {100 * (statistics.median(ratios) - 1):+.2f}% (median of {args.pairs} pairs; "
        f"quartiles {low:+.2f}%..{high:+.2f}%)"
    )


if __name__ == "__main__":
    main()
