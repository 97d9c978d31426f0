"""Batching: throughput of N concurrent requests through the real service with dynamic batching vs
without (max batch size 1), same model and arguments (goal: >= 1.3x on CPU tiny, >= 1.8x on GPU).

    .venv/bin/python bench/inference_batching.py [--model tiny] [--size 128] [--steps 8] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _inference_service import inference_service, run, timed_generation

from inkloop.v1 import common_pb2
from inkloop_inference.presets import ensure_preset


async def throughput(
    model_path: Path, args: argparse.Namespace, *, max_batch_size: int, batch_invariant: bool
) -> tuple[float, list[int]]:
    async with inference_service(
        model_path, max_batch_size=max_batch_size, max_queue_delay_ms=args.delay_ms, batch_invariant=batch_invariant
    ) as (stub, _app):

        def parameters(i: int) -> common_pb2.GenerationParameters:
            return common_pb2.GenerationParameters(
                prompt=f"a lantern festival, variation {i}", width=args.size, height=args.size, steps=args.steps, seed=i
            )

        await timed_generation(stub, parameters(0))  # warm-up
        started = time.perf_counter()
        results = []
        for _round in range(args.rounds):
            results += await asyncio.gather(*(timed_generation(stub, parameters(i)) for i in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return args.rounds * args.concurrency / elapsed, sorted({r.batch_size for _, r in results})


async def main(args: argparse.Namespace) -> None:
    model_path = ensure_preset(args.model, Path(args.data_dir))
    print(
        f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, CFG on, "
        f"{args.concurrency} concurrent requests x {args.rounds} rounds"
    )
    single, _ = await throughput(model_path, args, max_batch_size=1, batch_invariant=True)
    print(f"no batching                      {single:6.2f} images/s")
    for invariant in (True, False):
        batched, sizes = await throughput(model_path, args, max_batch_size=args.concurrency, batch_invariant=invariant)
        label = "batch-invariant (byte-identical)" if invariant else "batched GEMMs (±1/255 rounding)"
        print(f"batching, {label} {batched:6.2f} images/s  speed-up {batched / single:.2f}x  batch sizes {sizes}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny", choices=["tiny", "demo"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "inkloop-bench"))
    run(main(parser.parse_args()))
