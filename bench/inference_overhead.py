"""Service overhead: end-to-end gRPC latency of one generation divided by a direct in-process
`pipelines.run` call on the same loaded model with the same arguments (goal: <= 1.05).

    .venv/bin/python bench/inference_overhead.py [--model tiny|demo] [--size 256] [--steps 20] [--pairs 15]

The service runs in this process; the direct call uses the very model the service loaded, from a
worker thread as the service does. Calls come in pairs, direct and through gRPC in random order,
so a slow moment of a shared machine lands on both sides; the figure is the median of the per-pair
ratios. The gRPC side adds the batching window, the queue, the thread hop, one stream message per
step and the result message.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _inference_service import inference_service, run, timed_generation

from inkloop.v1 import common_pb2
from inkloop_inference import pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.presets import ensure_preset


async def main(args: argparse.Namespace) -> None:
    model_path = ensure_preset(args.model, Path(args.data_dir))
    request = GenerationRequest(
        kind="text_to_image",
        prompt="a watercolour fox 水彩狐狸",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=1,
        true_cfg_scale=args.cfg,
    )
    parameters = common_pb2.GenerationParameters(
        prompt=request.prompt, width=args.size, height=args.size, steps=args.steps, seed=1, true_cfg_scale=args.cfg
    )
    async with inference_service(model_path, max_queue_delay_ms=args.delay_ms) as (stub, app):
        loaded = app.model.loaded
        # One long-lived thread, like the service's worker (a fresh thread would pay thread-local set-up).
        worker = ThreadPoolExecutor(max_workers=1)

        async def direct() -> float:
            started = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(worker, pipelines.run, loaded, [request])
            return time.perf_counter() - started

        async def served() -> float:
            return (await timed_generation(stub, parameters))[0]

        await direct()
        await served()  # warm-up of both paths
        pairs = []
        for _ in range(args.pairs):
            if random.random() < 0.5:
                pairs.append((await direct(), await served()))
            else:
                through = await served()
                pairs.append((await direct(), through))
        worker.shutdown()

    direct_s = statistics.median(d for d, _ in pairs)
    served_s = statistics.median(s for _, s in pairs)
    ratios = sorted(s / d for d, s in pairs)
    print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, CFG {args.cfg}, {args.pairs} pairs")
    print(f"batching window {args.delay_ms} ms")
    print(f"direct pipelines.run  median {direct_s * 1000:8.1f} ms")
    print(f"gRPC TextToImage      median {served_s * 1000:8.1f} ms")
    print(
        f"overhead ratio (median of pairs) {statistics.median(ratios):.3f}"
        f"   quartiles {ratios[len(ratios) // 4]:.3f} .. {ratios[3 * len(ratios) // 4]:.3f}   (goal <= 1.05)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=["tiny", "demo"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--delay-ms", type=int, default=10, help="the service's batching window (its default)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order within each pair")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "inkloop-bench"))
    args = parser.parse_args()
    random.seed(args.seed)
    run(main(args))
