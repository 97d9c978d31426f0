"""The shared gRPC plumbing, on real grpc.aio servers bound to port 0.

A small servicer of the real InferenceService API stands in for a service here so each behaviour of
the plumbing (error mapping, request ids, deadlines, health, drain) can be provoked on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inkloop import errors
from inkloop.config import ServiceSettings
from inkloop.logs import request_id_var
from inkloop.rpc.client import open_channel
from inkloop.rpc.interceptors import REQUEST_ID_KEY, deadline_var
from inkloop.rpc.server import RunningServer, server_options, start_server, tls_credentials
from inkloop.rpc.status import field_violations, retry_delay_s
from inkloop.v1 import common_pb2, inference_pb2, inference_pb2_grpc


class ProbeServicer(inference_pb2_grpc.InferenceServiceServicer):
    """GetModelInfo answers from the request context; TextToImage raises what the prompt names."""

    def __init__(self, downstream: str | None = None) -> None:
        self.downstream = downstream
        self.seen_request_ids: list[str] = []
        self.seen_deadlines: list[float | None] = []

    async def GetModelInfo(self, request, context):
        self.seen_request_ids.append(request_id_var.get())
        self.seen_deadlines.append(deadline_var.get())
        if self.downstream:
            async with open_channel(self.downstream) as channel:
                return await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(request)
        return inference_pb2.GetModelInfoResponse(model_id=request_id_var.get())

    async def TextToImage(self, request, context) -> AsyncIterator[common_pb2.GenerationEvent]:
        yield common_pb2.GenerationEvent(queued=common_pb2.Queued(position=3))
        match request.parameters.prompt:
            case "invalid":
                raise errors.InvalidArgument("parameters.width", "must be a multiple of 16, got 100")
            case "busy":
                raise errors.ResourceExhausted("queue full", retry_after_s=2.5, subject="queue", quota="64 requests")
            case "bug":
                raise KeyError("/secret/path/weights.safetensors")
            case "missing":
                raise errors.NotFound("no such job")


class ProbeApp:
    service_names: Sequence[str] = ("inkloop.v1.InferenceService",)
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()

    def __init__(self, servicer: ProbeServicer) -> None:
        self.servicer = servicer

    def register(self, server: grpc.aio.Server) -> None:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
async def probe() -> AsyncIterator[tuple[RunningServer, ProbeServicer]]:
    servicer = ProbeServicer()
    running = await start_server(ProbeApp(servicer), "127.0.0.1", 0)
    await running.set_serving(True)
    yield running, servicer
    await running.server.stop(0)


def _t2i(prompt: str) -> common_pb2.TextToImageRequest:
    return common_pb2.TextToImageRequest(parameters=common_pb2.GenerationParameters(prompt=prompt))


async def _stream_error(port: int, prompt: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).TextToImage(_t2i(prompt))
        first = await call.read()
        assert first.queued.position == 3  # messages before the error still arrive
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        return caught.value


async def test_invalid_argument_names_the_field(probe) -> None:
    running, _ = probe
    error = await _stream_error(running.port, "invalid")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [("parameters.width", "must be a multiple of 16, got 100")]


async def test_resource_exhausted_carries_retry_info(probe) -> None:
    running, _ = probe
    error = await _stream_error(running.port, "busy")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay_s(error) == pytest.approx(2.5)


async def test_unexpected_errors_are_internal_without_leaking_details(probe) -> None:
    running, _ = probe
    error = await _stream_error(running.port, "bug")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "")


async def test_not_found_maps_to_not_found(probe) -> None:
    running, _ = probe
    assert (await _stream_error(running.port, "missing")).code() == grpc.StatusCode.NOT_FOUND


async def test_request_id_is_taken_from_metadata_and_echoed(probe) -> None:
    running, servicer = probe
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
            inference_pb2.GetModelInfoRequest(), metadata=((REQUEST_ID_KEY, "req-123"),)
        )
        reply = await call
        initial = dict(await call.initial_metadata())
    assert reply.model_id == "req-123"
    assert initial[REQUEST_ID_KEY] == "req-123"
    assert servicer.seen_request_ids == ["req-123"]


async def test_request_id_is_created_when_missing(probe) -> None:
    running, _ = probe
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(inference_pb2.GetModelInfoRequest())
        reply = await call
        initial = dict(await call.initial_metadata())
    assert len(reply.model_id) == 32
    assert initial[REQUEST_ID_KEY] == reply.model_id


async def test_request_id_and_deadline_propagate_downstream() -> None:
    downstream = ProbeServicer()
    down = await start_server(ProbeApp(downstream), "127.0.0.1", 0)
    upstream = ProbeServicer(downstream=f"127.0.0.1:{down.port}")
    up = await start_server(ProbeApp(upstream), "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{up.port}") as channel:
            reply = await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
                inference_pb2.GetModelInfoRequest(), metadata=((REQUEST_ID_KEY, "chain-1"),), timeout=5.0
            )
    finally:
        await up.server.stop(0)
        await down.server.stop(0)
    assert reply.model_id == "chain-1"  # answered by the downstream server, from its own context
    assert downstream.seen_request_ids == ["chain-1"]
    up_deadline, down_deadline = upstream.seen_deadlines[0], downstream.seen_deadlines[0]
    assert up_deadline is not None and down_deadline is not None  # without propagation: None downstream
    # The same absolute deadline, give or take the grpc-timeout header's rounding (a millisecond).
    assert abs(down_deadline - up_deadline) < 0.01


async def test_downstream_call_fails_when_inherited_deadline_is_spent() -> None:
    class Slow(ProbeServicer):
        async def GetModelInfo(self, request, context):
            await asyncio.sleep(0.3)
            return await super().GetModelInfo(request, context)

    downstream = await start_server(ProbeApp(ProbeServicer()), "127.0.0.1", 0)
    slow = await start_server(ProbeApp(Slow(downstream=f"127.0.0.1:{downstream.port}")), "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{slow.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
                    inference_pb2.GetModelInfoRequest(), timeout=0.2
                )
    finally:
        await slow.server.stop(0)
        await downstream.server.stop(0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def _health(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def test_health_is_not_serving_until_ready_and_after_drain() -> None:
    running = await start_server(ProbeApp(ProbeServicer()), "127.0.0.1", 0)
    try:
        assert await _health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _health(running.port, "inkloop.v1.InferenceService") == health_pb2.HealthCheckResponse.NOT_SERVING
        await running.set_serving(True)
        assert await _health(running.port) == health_pb2.HealthCheckResponse.SERVING
        assert await _health(running.port, "inkloop.v1.InferenceService") == health_pb2.HealthCheckResponse.SERVING
        await running.set_serving(False)
        assert await _health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await running.server.stop(0)


async def test_drain_lets_in_flight_calls_finish() -> None:
    class Slow(ProbeServicer):
        async def GetModelInfo(self, request, context):
            await asyncio.sleep(0.5)
            return inference_pb2.GetModelInfoResponse(model_id="finished")

    running = await start_server(ProbeApp(Slow()), "127.0.0.1", 0)
    await running.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(inference_pb2.GetModelInfoRequest())
        await asyncio.sleep(0.1)
        drain = asyncio.create_task(running.drain(grace_s=5))
        reply = await call
        await drain
    assert reply.model_id == "finished"


async def test_reflection_lists_the_services(probe) -> None:
    running, _ = probe
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert set(names) == {
        "inkloop.v1.InferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_mtls_serves_only_clients_with_a_certificate(pki: Path) -> None:
    settings = ServiceSettings(
        tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key", tls_client_ca_file=pki / "ca.pem"
    )
    running = await start_server(
        ProbeApp(ProbeServicer()), "127.0.0.1", 0, server_credentials=tls_credentials(settings)
    )
    ca = (pki / "ca.pem").read_bytes()
    with_cert = grpc.ssl_channel_credentials(ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes())
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", with_cert) as channel:
            reply = await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
                inference_pb2.GetModelInfoRequest(), timeout=10
            )
        assert len(reply.model_id) == 32
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
                    inference_pb2.GetModelInfoRequest(), timeout=10
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.server.stop(0)


def test_tls_needs_both_certificate_and_key(pki: Path) -> None:
    with pytest.raises(ValueError, match="tls_key_file"):
        tls_credentials(ServiceSettings(tls_cert_file=pki / "server.pem"))
    assert tls_credentials(ServiceSettings()) is None


def test_max_connection_age_becomes_server_options() -> None:
    options = dict(server_options(ServiceSettings(max_connection_age_s=300, max_connection_age_grace_s=600)))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 600_000
    assert "grpc.max_connection_age_ms" not in dict(server_options(ServiceSettings()))
