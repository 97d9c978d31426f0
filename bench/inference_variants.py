"""What model variants cost: seconds per image of the base, the base with a LoRA active, and the fast
tier (Lightning schedule, 8 steps, CFG off), and the time to switch variants between batches.

    .venv/bin/python bench/inference_variants.py [--model tiny|demo] [--size 512] [--steps 20] [--rounds 5]

All on one load of the preset (its random fast-tier LoRA, `loras/fast.safetensors`); a switch only
activates adapters and swaps the scheduler, so it is timed alone too. Medians over `rounds`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from inkloop_inference import pipelines
from inkloop_inference.loading import load_pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.presets import FAST_LORA, ensure_preset
from inkloop_inference.variants import Adapter, ServedVariants, VariantSpec, fast_tier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "demo"], default="demo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default="var")
    args = parser.parse_args()
    path = ensure_preset(args.model, Path(args.data_dir))
    model = load_pipelines(path, device="cpu", dtype=torch.float32)
    specs = [
        VariantSpec("base"),
        VariantSpec("styled", adapters=(Adapter(path / FAST_LORA),)),
        fast_tier(path / FAST_LORA),
    ]
    started = time.perf_counter()
    model = replace(model, variants=ServedVariants.load(specs, [model.t2i, model.inpaint]))
    load_s = time.perf_counter() - started
    base = GenerationRequest(
        kind="text_to_image",
        prompt="a watercolour fox 水彩狐狸",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=1,
        true_cfg_scale=4.0,
    )
    requests = {
        "base": base,
        "styled": replace(base, model_variant="styled"),
        "fast": replace(base, model_variant="fast", steps=8, true_cfg_scale=1.0),
    }
    seconds: dict[str, list[float]] = {name: [] for name in requests}
    switches: list[float] = []
    for request in requests.values():  # warm-up
        pipelines.run(model, [request])
    for _ in range(args.rounds):
        for name, request in requests.items():
            began = time.perf_counter()
            pipelines.run(model, [request])
            seconds[name].append(time.perf_counter() - began)
        for name in ("styled", "base"):
            began = time.perf_counter()
            model.variants.activate(name)
            switches.append(time.perf_counter() - began)
    base_s = statistics.median(seconds["base"])
    print(f"{args.model} {args.size}², loading 3 variants' adapters: {load_s:.2f} s")
    for name, values in seconds.items():
        print(f"  {name:7s} {statistics.median(values):.3f} s/image ({statistics.median(values) / base_s:.2f}× base)")
    print(f"  switch  {1000 * statistics.median(switches):.2f} ms (median of {len(switches)})")


if __name__ == "__main__":
    main()
