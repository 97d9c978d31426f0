"""Shared by the inference benchmarks: the real inference service in-process on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from inkloop.rpc.server import start_server
from inkloop.v1 import common_pb2, inference_pb2_grpc
from inkloop_inference.server import InferenceApp
from inkloop_inference.settings import InferenceSettings


@asynccontextmanager
async def inference_service(
    model_path: Path, **settings: object
) -> AsyncIterator[tuple[inference_pb2_grpc.InferenceServiceStub, InferenceApp]]:
    """A stub on the running service, and the app (its `model.loaded` is the served model)."""
    app = InferenceApp(InferenceSettings(model_path=model_path, port=0, **settings))  # type: ignore[arg-type]
    running = await start_server(app, "127.0.0.1", 0)
    await app.start()
    await running.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel), app
    await running.server.stop(0)
    await app.stop()


async def timed_generation(
    stub: inference_pb2_grpc.InferenceServiceStub, parameters: common_pb2.GenerationParameters
) -> tuple[float, common_pb2.GenerationResult]:
    started = time.perf_counter()
    result = None
    async for event in stub.TextToImage(common_pb2.TextToImageRequest(parameters=parameters)):
        if event.HasField("result"):
            result = event.result
    assert result is not None
    return time.perf_counter() - started, result


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]
