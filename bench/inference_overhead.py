"""Service overhead: end-to-end gRPC latency of one generation divided by a direct in-process
`pipelines.run` call on the same model with the same arguments (goal: <= 1.05).

    .venv/bin/python bench/inference_overhead.py [--model tiny|demo] [--size 256] [--steps 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _inference_service import inference_service, run, timed_generation

from inkloop.v1 import common_pb2
from inkloop_inference import pipelines
from inkloop_inference.loading import load_pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.presets import ensure_preset


async def main(args: argparse.Namespace) -> None:
    model_path = ensure_preset(args.model, Path(args.data_dir))
    model = load_pipelines(model_path, device="cpu", dtype=torch.float32)
    request = GenerationRequest(
        kind="text_to_image",
        prompt="a watercolour fox 水彩狐狸",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=1,
        true_cfg_scale=args.cfg,
    )
    pipelines.run(model, [request])  # warm-up
    direct = []
    for _ in range(args.runs):
        started = time.perf_counter()
        pipelines.run(model, [request])
        direct.append(time.perf_counter() - started)
    del model

    parameters = common_pb2.GenerationParameters(
        prompt=request.prompt, width=args.size, height=args.size, steps=args.steps, seed=1, true_cfg_scale=args.cfg
    )
    served = []
    for delay_ms in (args.delay_ms, 0):
        async with inference_service(model_path, max_queue_delay_ms=delay_ms) as stub:
            await timed_generation(stub, parameters)  # warm-up
            times = [(await timed_generation(stub, parameters))[0] for _ in range(args.runs)]
        served.append((delay_ms, times))

    base = statistics.median(direct)
    print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, CFG {args.cfg}, {args.runs} runs each")
    print(f"direct pipelines.run        median {base * 1000:8.1f} ms")
    for delay_ms, times in served:
        median = statistics.median(times)
        print(f"gRPC, batching window {delay_ms:3d} ms median {median * 1000:8.1f} ms  ratio {median / base:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny", choices=["tiny", "demo"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay-ms", type=int, default=10, help="the service's default batching window")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "inkloop-bench"))
    run(main(parser.parse_args()))
