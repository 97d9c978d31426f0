"""Cache-hit throughput and latency through the real gRPC gateway with many concurrent clients.

    .venv/bin/python bench/gateway_cache.py [--seconds 10] [--concurrency 64] [--channels 4]

Starts `inkloop serve inference` (tiny model) and `inkloop serve gateway` as their own processes
(SQLite backends, rate limits raised out of the way), primes the cache with one job, then has
`--concurrency` clients submit that same request (fresh request ids) for `--seconds`: every call is a
full SubmitJob — auth, validation, safety, rate limit, cache hit, a SUCCEEDED job written, events —
answered without inference. Goal: >= 5,000 req/s with p99 <= 10 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from inkloop_gateway.admission.keys import KeyStore, Role

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import free_ports


def start_stack(data_dir: Path, **gateway_flags: str) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    """Inference and gateway processes on free ports; returns them, the gateway address and an API key."""
    gateway_port, inference_port, m1, m2, http_port, analytics_port = free_ports(6)
    env = {**os.environ, "INKLOOP_GATEWAY_LOG_LEVEL": "warning", "INKLOOP_INFERENCE_LOG_LEVEL": "warning"}
    run = [sys.executable, "-m", "inkloop_cli", "serve"]
    inference = subprocess.Popen(
        [
            *run,
            "inference",
            "--port",
            str(inference_port),
            "--metrics-port",
            str(m1),
            "--data-dir",
            str(data_dir / "inference"),
            "--max-queue-delay-ms",
            "0",
        ],
        env=env,
    )
    store = KeyStore(data_dir / "gateway" / "keys.db")
    _key, secret = store.create("bench", Role.USER, "bench")
    store.close()
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in gateway_flags.items()]
    gateway = subprocess.Popen(
        [
            *run,
            "gateway",
            "--port",
            str(gateway_port),
            "--metrics-port",
            str(m2),
            "--http-port",
            str(http_port),
            "--data-dir",
            str(data_dir / "gateway"),
            "--inference-target",
            f"127.0.0.1:{inference_port}",
            "--analytics-target",
            f"127.0.0.1:{analytics_port}",
            *flags,
        ],
        env=env,
    )
    for port in (inference_port, gateway_port):
        wait_serving(f"127.0.0.1:{port}")
    return [gateway, inference], f"127.0.0.1:{gateway_port}", secret


def wait_serving(address: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{address} not SERVING after {timeout_s} s")


def stop_stack(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


def task(seed: int = 1) -> common_pb2.GenerationTask:
    parameters = common_pb2.GenerationParameters(prompt="a lighthouse at dusk", width=64, height=64, steps=2, seed=seed)
    return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def load(
    address: str, secret: str, seconds: float, concurrency: int, channels: int, *, prime: bool = True
) -> dict[str, float]:
    """Runs the clients; prints and returns throughput (req/s) and p50/p99 (ms)."""
    metadata = (("authorization", f"Bearer {secret}"),)
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [gateway_pb2_grpc.GatewayServiceStub(channel) for channel in opened]
    if prime:
        # The first request runs on inference and fills the cache.
        async for _event in stubs[0].Generate(gateway_pb2.GenerateRequest(task=task()), metadata=metadata):
            pass
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = 0.0

    async def client(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
        request = gateway_pb2.SubmitJobRequest(task=task())
        while time.perf_counter() < stop_at:
            request.request_id = uuid.uuid4().hex
            started = time.perf_counter()
            try:
                reply = await stub.SubmitJob(request, metadata=metadata)
                assert reply.job.cache_hit
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1

    # Warm-up (one second, not counted), then the measured run.
    stop_at = time.perf_counter() + 1.0
    await asyncio.gather(*(client(stubs[i % channels]) for i in range(concurrency)))
    latencies.clear()
    errors.clear()
    stop_at = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(client(stubs[i % channels]) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    for channel in opened:
        await channel.close()
    print(f"SubmitJob calls answered: {len(latencies)} in {elapsed:.1f} s, {concurrency} concurrent clients")
    print(f"  throughput  {len(latencies) / elapsed:8.0f} req/s   (goal >= 5000 on 2 cores)")
    print(f"  p50         {statistics.median(latencies) * 1000:8.2f} ms")
    print(f"  p99         {percentile(latencies, 0.99) * 1000:8.2f} ms   (goal <= 10)")
    if errors:
        print(f"  errors      {errors}")
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def print_median(runs: list[dict[str, float]]) -> None:
    """The median of each figure over the runs (a shared machine makes single runs noisy)."""
    figures = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    print(
        f"median of {len(runs)} runs: {figures['rps']:.0f} req/s, "
        f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="measured runs on one stack; the median is reported")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; gateway, inference and the clients share them")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-cache-") as directory:
        processes, address, secret = start_stack(
            Path(directory),
            rate_key_requests_per_s="1e9",
            rate_key_requests_burst="1e9",
            rate_tenant_requests_per_s="1e9",
            rate_tenant_requests_burst="1e9",
            rate_tenant_cost_per_s="1e12",
            rate_tenant_cost_burst="1e12",
        )
        try:
            runs = [
                asyncio.run(load(address, secret, args.seconds, args.concurrency, args.channels))
                for _ in range(args.runs)
            ]
            print_median(runs)
        finally:
            stop_stack(processes)


if __name__ == "__main__":
    main()
