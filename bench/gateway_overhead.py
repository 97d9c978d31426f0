"""Gateway overhead over a direct inference call, measured so that a shared, noisy machine still gives
a stable figure: many paired calls, the median of the per-pair differences, over several rounds.

    .venv/bin/python bench/gateway_overhead.py [--pairs 100] [--rounds 5] [--size 64] [--steps 2]

Both services run as their own processes (see gateway_cache.py; tiny model). One pair is a
TextToImage straight to inference and a Generate through the gateway with the same parameters and
different seeds, one request at a time, in random order within the pair (so neither side always
runs on the warmer or the quieter moment). The result cache is off, so every gateway call really
runs on inference: the difference is auth, validation, safety, rate limit, the durable queue,
dispatch, image storage, events and the extra gRPC hop.

A round reports the median of its per-pair differences; the figure is the median over rounds, with
the rounds' range as its spread. Goal: <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from gateway_cache import start_stack, stop_stack  # type: ignore[import-not-found]

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, inference_pb2_grpc

_WARMUP_PAIRS = 10


def _task(seed: int, size: int, steps: int) -> common_pb2.GenerationTask:
    parameters = common_pb2.GenerationParameters(
        prompt="a lighthouse at dusk", width=size, height=size, steps=steps, seed=seed
    )
    return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


class Pairs:
    """Runs one direct call and one gateway call per pair, in random order; returns both latencies."""

    def __init__(self, gateway: grpc.aio.Channel, inference: grpc.aio.Channel, secret: str, size: int, steps: int):
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(gateway)
        self.inference = inference_pb2_grpc.InferenceServiceStub(inference)
        self.metadata = (("authorization", f"Bearer {secret}"),)
        self.size = size
        self.steps = steps
        self.seed = 1000

    async def _direct(self) -> float:
        self.seed += 1
        request = _task(self.seed, self.size, self.steps).text_to_image
        started = time.perf_counter()
        async for _event in self.inference.TextToImage(request):
            pass
        return time.perf_counter() - started

    async def _through(self) -> float:
        self.seed += 1
        request = gateway_pb2.GenerateRequest(task=_task(self.seed, self.size, self.steps))
        started = time.perf_counter()
        async for _event in self.gateway.Generate(request, metadata=self.metadata):
            pass
        return time.perf_counter() - started

    async def one(self) -> tuple[float, float]:
        if random.random() < 0.5:
            direct = await self._direct()
            return direct, await self._through()
        through = await self._through()
        return await self._direct(), through


async def measure(gateway: str, inference: str, secret: str, args: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(gateway) as g, grpc.aio.insecure_channel(inference) as i:
        pairs = Pairs(g, i, secret, args.size, args.steps)
        for _ in range(_WARMUP_PAIRS):
            await pairs.one()
        print(f"{args.rounds} rounds of {args.pairs} pairs, {args.size}x{args.size}, {args.steps} steps")
        rounds: list[float] = []
        for n in range(args.rounds):
            measured = [await pairs.one() for _ in range(args.pairs)]
            direct = [d for d, _ in measured]
            through = [t for _, t in measured]
            overhead = statistics.median(t - d for d, t in measured)
            rounds.append(overhead)
            print(
                f"  round {n + 1}: direct p50 {statistics.median(direct) * 1000:7.2f} ms, "
                f"gateway p50 {statistics.median(through) * 1000:7.2f} ms, "
                f"paired overhead p50 {overhead * 1000:6.2f} ms"
            )
    low, high = min(rounds) * 1000, max(rounds) * 1000
    print(f"gateway overhead (median of rounds): {statistics.median(rounds) * 1000:.2f} ms")
    print(f"  rounds range {low:.2f} .. {high:.2f} ms   (goal <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100, help="pairs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of each pair")
    args = parser.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-overhead-") as directory:
        processes, address, secret = start_stack(Path(directory), cache_max_bytes="0", poll_interval_s="0.2")
        inference_address = _inference_address(processes)
        try:
            asyncio.run(measure(address, inference_address, secret, args))
        finally:
            stop_stack(processes)


def _inference_address(processes: list) -> str:
    command = processes[1].args
    return f"127.0.0.1:{command[command.index('--port') + 1]}"


if __name__ == "__main__":
    main()
