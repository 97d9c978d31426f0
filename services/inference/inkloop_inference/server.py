"""gRPC glue of the inference service: translates calls to domain objects and back. No logic lives here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from inkloop import tracing
from inkloop.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from inkloop_inference import metrics, protocol
from inkloop_inference.batching import Done
from inkloop_inference.model import InferenceModel
from inkloop_inference.pipelines import GenerationRequest, GenerationResult
from inkloop_inference.settings import InferenceSettings

log = logging.getLogger(__name__)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, model: InferenceModel) -> None:
        self.model = model

    async def TextToImage(
        self, request: common_pb2.TextToImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.GenerationEvent]:
        async for event in self._generate(
            protocol.text_to_image_from_pb(request, self.model.defaults_for(request.parameters.model_variant))
        ):
            yield event

    async def Inpaint(
        self, request: common_pb2.InpaintRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.GenerationEvent]:
        async for event in self._generate(
            protocol.inpaint_from_pb(request, self.model.defaults_for(request.parameters.model_variant))
        ):
            yield event

    async def Outpaint(
        self, request: common_pb2.OutpaintRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.GenerationEvent]:
        async for event in self._generate(
            protocol.outpaint_from_pb(request, self.model.defaults_for(request.parameters.model_variant))
        ):
            yield event

    async def Edit(
        self, request: common_pb2.EditRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.GenerationEvent]:
        async for event in self._generate(
            protocol.edit_from_pb(request, self.model.edit_defaults(request.parameters.model_variant))
        ):
            yield event

    async def GetModelInfo(
        self, request: inference_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.GetModelInfoResponse:
        return self.model.info()

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[common_pb2.GenerationEvent]:
        accepted_at = time.monotonic()
        loaded = self.model.loaded
        protocol.validate(request, loaded)
        async for event in self.model.batcher.generate(request):
            if isinstance(event, Done):
                metrics.observe(request, event)
                _trace_stages(event)
            yield protocol.event_to_pb(event, request, loaded, accepted_at)


def _trace_stages(done: Done[GenerationResult]) -> None:
    """The stages of the request's batch, as child spans of its call (they ended just now)."""
    timings = done.result.timings
    tracing.record_stages(
        [
            ("batch wait", done.queue_s),
            ("text encode", timings.text_encode_s),
            ("denoise", timings.denoise_s),
            ("decode", timings.decode_s + timings.postprocess_s),
        ],
        batch_size=done.batch_size,
    )


class InferenceApp:
    service_names: Sequence[str] = ("inkloop.v1.InferenceService",)
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.model = InferenceModel(settings)

    def register(self, server: grpc.aio.Server) -> None:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(self.model), server)

    async def start(self) -> None:
        # Loading blocks for seconds (minutes for real weights): keep the event loop answering health checks.
        await asyncio.to_thread(self.model.load)
        self.model.start_batching()
        if self.settings.warmup:
            await self.model.warm_up()

    async def stop(self) -> None:
        await self.model.stop()
