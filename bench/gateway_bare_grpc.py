"""The floor under any Python gateway: a bare grpc.aio unary call on this machine, measured with the
same clients, messages and concurrency as gateway_cache.py.

    .venv/bin/python bench/gateway_bare_grpc.py [--seconds 5] [--concurrency 64] [--channels 4] [--runs 3]

A server process answers GatewayService.SubmitJob with a canned SUCCEEDED, cache-hit job of the
size a real cache hit returns, doing nothing else. Two servers are measured: a bare `grpc.aio.server`
(no interceptors: the upper bound for any grpc.aio gateway), and the same handler behind the common
`inkloop.rpc` server interceptor (request id, deadline, metrics, access log), as every service runs.
Gateway figures are meaningful only next to these.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from gateway_cache import load, print_median, task, wait_serving  # type: ignore[import-not-found]

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import free_ports


def canned_job() -> gateway_pb2.Job:
    """A SUCCEEDED cache-hit job shaped like the gateway's reply (one image id and signed URL)."""
    now = time.time()
    job = gateway_pb2.Job(
        job_id="job_19aaf0c2b3d4e5f60718293a4b5c6d7e",
        request_id="0" * 32,
        state=gateway_pb2.JOB_STATE_SUCCEEDED,
        kind=common_pb2.GENERATION_KIND_TEXT_TO_IMAGE,
        parameters=task().text_to_image.parameters,
        variant="default",
        cache_hit=True,
        user_id="AbCdEfGhJkLm",
    )
    for stamp in (job.created_at, job.started_at, job.finished_at):
        stamp.FromNanoseconds(int(now * 1e9))
    image = job.result.images.add(image_id="f" * 32, width=64, height=64, seed=1)
    image.download_url = "/v1/images/" + "f" * 32 + ".png?tenant=bench&expires=1900000000&sig=" + "a" * 64
    return job


class CannedJobs(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self) -> None:
        self.reply = gateway_pb2.SubmitJobResponse(job=canned_job())

    async def SubmitJob(self, request, context):
        return self.reply


async def serve(port: int, with_interceptor: bool) -> None:
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    if with_interceptor:
        from inkloop.logs import configure_logging
        from inkloop.rpc.interceptors import ServerInterceptor

        configure_logging("bench", "warning")  # as the gateway runs in gateway_cache.py
        interceptors = (ServerInterceptor(),)
    server = grpc.aio.server(interceptors=interceptors)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(CannedJobs(), server)
    from grpc_health.v1 import health, health_pb2_grpc

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--with-interceptor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.with_interceptor))
        return
    print(f"cores: {os.cpu_count()}; server and clients share them")
    for label, flags in (("bare grpc.aio", []), ("grpc.aio + inkloop.rpc ServerInterceptor", ["--with-interceptor"])):
        [port] = free_ports(1)
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), *flags])
        try:
            wait_serving(f"127.0.0.1:{port}")
            print(f"== {label}")
            runs = [
                asyncio.run(
                    load(f"127.0.0.1:{port}", "unused", args.seconds, args.concurrency, args.channels, prime=False)
                )
                for _ in range(args.runs)
            ]
            print_median(runs)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
