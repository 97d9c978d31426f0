"""What an instruction edit costs: seconds per edit beside a text-to-image of the same output size, where
the time goes (encoding the image for the text encoder and the VAE), and the memory the edit model adds
when it shares the main model's identical components.

    .venv/bin/python bench/inference_edit.py [--model tiny|demo] [--size 128] [--steps 8] [--rounds 3]

The edit pipeline encodes its input at about a megapixel whatever the output size (`editing.condition_size`),
so on a CPU with a random-weight preset that fixed cost dominates; on real weights the denoising steps do.
Medians over `rounds`, CFG on (4.0) as the model's default.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inkloop_inference import pipelines
from inkloop_inference.editing import condition_size, load_edit_pipeline
from inkloop_inference.loading import load_pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.presets import ensure_preset


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "demo"], default="tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default="var")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    model = load_pipelines(ensure_preset(args.model, data_dir), device="cpu", dtype=torch.float32)
    started = time.perf_counter()
    edit = load_edit_pipeline(
        ensure_preset(args.model, data_dir, edit=True), device="cpu", dtype=torch.float32, main=model
    )
    load_s = time.perf_counter() - started
    model = replace(model, edit=edit)

    pixels = np.random.default_rng(0).integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    t2i = GenerationRequest(
        kind="text_to_image", prompt="a red house", width=args.size, height=args.size, steps=args.steps, seed=1
    )
    requests = {
        "text_to_image": t2i,
        "edit": replace(t2i, kind="edit", prompt="把房子涂成蓝色", image=buffer.getvalue()),
    }
    seconds: dict[str, list[float]] = {name: [] for name in requests}
    stages: dict[str, list[float]] = {"text_encode": [], "denoise": [], "decode": []}
    for _ in range(args.rounds):
        for name, request in requests.items():
            begun = time.perf_counter()
            [result] = pipelines.run(model, [request])
            seconds[name].append(time.perf_counter() - begun)
            if name == "edit":
                stages["text_encode"].append(result.timings.text_encode_s)
                stages["denoise"].append(result.timings.denoise_s)
                stages["decode"].append(result.timings.decode_s)

    width, height = condition_size((args.size, args.size))
    encodes = []
    with torch.inference_mode():
        for _ in range(args.rounds):
            begun = time.perf_counter()
            edit.pipe.vae.encode(torch.zeros(1, 3, 1, height, width))
            encodes.append(time.perf_counter() - begun)

    base = statistics.median(seconds["text_to_image"])
    edited = statistics.median(seconds["edit"])
    print(f"model {args.model}, {args.size}×{args.size}, {args.steps} steps, CFG 4, CPU, {args.rounds} rounds")
    print(f"text_to_image  {base:.2f} s/image")
    print(f"edit           {edited:.2f} s/image ({edited / base:.1f}× text_to_image)")
    print("edit stages    " + ", ".join(f"{name} {statistics.median(v):.2f} s" for name, v in stages.items()))
    print(f"  of denoise: the VAE encode of the {width}×{height} condition image {statistics.median(encodes):.2f} s")
    own = [name for name in ("transformer", "vae", "text_encoder") if name not in edit.shared]
    added = sum(parameters(getattr(edit.pipe, name)) for name in own)
    saved = sum(parameters(getattr(edit.pipe, name)) for name in edit.shared if name != "tokenizer")
    print(f"edit model load {load_s:.2f} s; shared with the main model: {', '.join(edit.shared) or 'nothing'}")
    print(f"parameters added {added:,}; not loaded twice thanks to sharing {saved:,}")


if __name__ == "__main__":
    main()
