"""Gateway overhead over a direct inference call: p50 of Generate through the gateway minus p50 of
TextToImage on the inference service, one request at a time (64×64, 2 steps, tiny model).

    .venv/bin/python bench/gateway_overhead.py [--requests 40]

Both services run as their own processes (see gateway_cache.py); the result cache is off and every
request has its own seed, so each gateway call really runs on inference: the difference is auth,
validation, safety, rate limit, the durable queue, dispatch, image storage and events. Goal: <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from gateway_cache import start_stack, stop_stack, task  # type: ignore[import-not-found]

from inkloop.v1 import gateway_pb2, gateway_pb2_grpc, inference_pb2_grpc


async def measure(gateway: str, inference: str, secret: str, requests: int) -> None:
    metadata = (("authorization", f"Bearer {secret}"),)
    async with grpc.aio.insecure_channel(gateway) as g, grpc.aio.insecure_channel(inference) as i:
        gateway_stub = gateway_pb2_grpc.GatewayServiceStub(g)
        inference_stub = inference_pb2_grpc.InferenceServiceStub(i)
        direct: list[float] = []
        through: list[float] = []
        for n in range(requests + 3):  # the first three warm both paths up
            request = task(seed=1000 + n).text_to_image
            started = time.perf_counter()
            async for _event in inference_stub.TextToImage(request):
                pass
            elapsed_direct = time.perf_counter() - started
            started = time.perf_counter()
            async for _event in gateway_stub.Generate(
                gateway_pb2.GenerateRequest(task=task(seed=5000 + n)), metadata=metadata
            ):
                pass
            elapsed_gateway = time.perf_counter() - started
            if n >= 3:
                direct.append(elapsed_direct)
                through.append(elapsed_gateway)
    p50_direct, p50_gateway = statistics.median(direct), statistics.median(through)
    # Paired: each gateway call minus the direct call just before it, so load drifting on a shared
    # machine cancels out better than in the difference of two medians.
    paired = statistics.median(g - d for g, d in zip(through, direct, strict=True))
    spread = statistics.pstdev(direct)
    print(f"{requests} sequential requests, 64x64, 2 steps")
    print(f"  inference direct p50  {p50_direct * 1000:8.2f} ms   (stdev {spread * 1000:.1f} ms)")
    print(f"  through gateway  p50  {p50_gateway * 1000:8.2f} ms")
    print(f"  gateway overhead p50  {(p50_gateway - p50_direct) * 1000:8.2f} ms   (goal <= 2)")
    print(f"  paired overhead  p50  {paired * 1000:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-overhead-") as directory:
        processes, address, secret = start_stack(Path(directory), cache_max_bytes="0", poll_interval_s="0.2")
        inference_address = _inference_address(processes)
        try:
            asyncio.run(measure(address, inference_address, secret, args.requests))
        finally:
            stop_stack(processes)


def _inference_address(processes: list) -> str:
    command = processes[1].args
    return f"127.0.0.1:{command[command.index('--port') + 1]}"


if __name__ == "__main__":
    main()
