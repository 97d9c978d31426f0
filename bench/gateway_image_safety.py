"""Latency of the output-image safety check (NudeNet's ONNX detector on this CPU) per image size, and
what it adds to a generation end to end.

    .venv/bin/python bench/gateway_image_safety.py [--rounds 20]

Images are random noise of each size (the detector's cost does not depend on content: it
letterboxes every image to 320²); the first call, which loads the model, is timed apart. The end-to-
end effect is the check's time over a generation's own: the tiny model's 128² 20-step image through
`pipelines.run` on this machine, the demo's 512² if `--demo`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from inkloop_gateway.admission.image_safety import NudeNet


def _png(size: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--demo", action="store_true", help="compare with the demo model's 512² image")
    args = parser.parse_args()
    detector = NudeNet(threshold=0.5)
    started = time.perf_counter()
    detector.findings(_png(64, 0))
    print(f"first call (loads the ONNX model): {time.perf_counter() - started:.3f} s")
    per_size = {}
    for size in (256, 512, 1024):
        images = [_png(size, seed) for seed in range(args.rounds)]
        times = []
        for data in images:
            began = time.perf_counter()
            detector.findings(data)
            times.append(time.perf_counter() - began)
        per_size[size] = statistics.median(times)
        print(f"{size}²: {1000 * per_size[size]:.1f} ms per image (median of {args.rounds})")

    import torch

    from inkloop_inference import pipelines
    from inkloop_inference.loading import load_pipelines
    from inkloop_inference.pipelines import GenerationRequest
    from inkloop_inference.presets import ensure_preset

    name, size = ("demo", 512) if args.demo else ("tiny", 128)
    model = load_pipelines(ensure_preset(name, Path("var")), device="cpu", dtype=torch.float32)
    request = GenerationRequest(kind="text_to_image", prompt="a fox", width=size, height=size, steps=20, seed=1)
    pipelines.run(model, [request])
    began = time.perf_counter()
    pipelines.run(model, [request])
    generation = time.perf_counter() - began
    check = per_size[min(per_size, key=lambda s: abs(s - size))]
    print(
        f"end to end, {name} {size}² 20 steps: {generation:.2f} s per image; the check adds {1000 * check:.0f} ms "
        f"({100 * check / generation:.1f}%)"
    )


if __name__ == "__main__":
    main()
