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

The same is measured for a bare relay (`--relay`, on by default): a grpc.aio process whose Generate
only forwards the call to inference and relays each event, with no auth, queue, store or images. It
is the floor for any Python gateway that adds a hop on this machine; the gateway's own cost is what
it adds above that floor.

With `--tracing`, both services export every span by OTLP/gRPC to a sink in this process (a real
exporter, batching in the background, as in production); the figure is then the gateway's overhead
with tracing on, and the sink's span count is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from gateway_cache import start_stack, stop_stack  # type: ignore[import-not-found]

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, inference_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import free_ports

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


class Relay(gateway_pb2_grpc.GatewayServiceServicer):
    """Generate as a pure relay: the inference stream's events, re-wrapped, and nothing else."""

    def __init__(self, inference: str) -> None:
        self.channel = grpc.aio.insecure_channel(inference)
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)

    async def Generate(self, request, context):
        async for event in self.inference.TextToImage(request.task.text_to_image):
            if event.HasField("step"):
                yield gateway_pb2.JobEvent(job_id="relay", running=event.step)
            elif event.HasField("result"):
                yield gateway_pb2.JobEvent(job_id="relay", succeeded=event.result)


async def serve_relay(port: int, inference: str) -> None:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Relay(inference), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def measure(label: str, gateway: str, inference: str, secret: str, args: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(gateway) as g, grpc.aio.insecure_channel(inference) as i:
        pairs = Pairs(g, i, secret, args.size, args.steps)
        for _ in range(_WARMUP_PAIRS):
            await pairs.one()
        print(f"== {label}: {args.rounds} rounds of {args.pairs} pairs, {args.size}x{args.size}, {args.steps} steps")
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
    print(f"{label} overhead (median of rounds): {statistics.median(rounds) * 1000:.2f} ms")
    print(f"  rounds range {low:.2f} .. {high:.2f} ms" + ("   (goal <= 2)" if label == "gateway" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100, help="pairs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of each pair")
    parser.add_argument("--no-relay", dest="relay", action="store_false", help="skip the bare relay's floor")
    parser.add_argument("--serve-relay", nargs=2, metavar=("PORT", "INFERENCE"), help=argparse.SUPPRESS)
    parser.add_argument("--tracing", action="store_true", help="export spans by OTLP to an in-process sink")
    args = parser.parse_args()
    if args.serve_relay:
        asyncio.run(serve_relay(int(args.serve_relay[0]), args.serve_relay[1]))
        return
    random.seed(args.seed)
    sink = start_span_sink() if args.tracing else None
    with tempfile.TemporaryDirectory(prefix="bench-gateway-overhead-") as directory:
        processes, address, secret = start_stack(Path(directory), cache_max_bytes="0", poll_interval_s="0.2")
        inference_address = _inference_address(processes)
        try:
            asyncio.run(measure("gateway", address, inference_address, secret, args))
            if args.relay:
                [port] = free_ports(1)
                relay = subprocess.Popen([sys.executable, __file__, "--serve-relay", str(port), inference_address])
                processes.append(relay)
                _wait_listening(port)
                asyncio.run(measure("bare relay", f"127.0.0.1:{port}", inference_address, secret, args))
        finally:
            stop_stack(processes)
            if sink is not None:
                server, received = sink
                server.stop(0)
                print(f"tracing: the OTLP sink received {received[0]} spans")


def start_span_sink() -> tuple[grpc.Server, list[int]]:
    """An OTLP/gRPC trace receiver that counts spans; both services are pointed at it."""
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = [0]

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # type: ignore[no-untyped-def]
            received[0] += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    [port] = free_ports(1)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    for service in ("GATEWAY", "INFERENCE"):
        os.environ[f"INKLOOP_{service}_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    return server, received


def _wait_listening(port: int) -> None:
    async def probe() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 60)

    asyncio.run(probe())


def _inference_address(processes: list) -> str:
    command = processes[1].args
    return f"127.0.0.1:{command[command.index('--port') + 1]}"


if __name__ == "__main__":
    main()
