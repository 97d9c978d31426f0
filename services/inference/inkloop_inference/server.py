"""gRPC glue of the inference service: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from inkloop.v1 import inference_pb2_grpc
from inkloop_inference.settings import InferenceSettings


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Every method still answers UNIMPLEMENTED (the base class) until the pipelines land."""


class InferenceApp:
    service_names: Sequence[str] = ("inkloop.v1.InferenceService",)

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings

    def register(self, server: grpc.aio.Server) -> None:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(), server)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
