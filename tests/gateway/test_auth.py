"""API-key authentication on a real grpc.aio server: the common interceptor outside, auth inside."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inkloop import errors
from inkloop.rpc.server import RunningServer, start_server
from inkloop.v1 import gateway_pb2, gateway_pb2_grpc
from inkloop_gateway.admission.auth import (
    AuthInterceptor,
    Principal,
    authenticate_header,
    current_principal,
    principal_var,
    require_role,
)
from inkloop_gateway.admission.keys import KeyStore, Role, StoredKey


class EchoJobs(gateway_pb2_grpc.GatewayServiceServicer):
    """Answers with the principal the handler sees: tenant in ListJobs, key id in each WatchJob event."""

    async def ListJobs(self, request, context):
        return gateway_pb2.ListJobsResponse(next_page_token=current_principal().tenant_id)

    async def WatchJob(self, request, context) -> AsyncIterator[gateway_pb2.JobEvent]:
        for _ in range(2):
            yield gateway_pb2.JobEvent(job_id=current_principal().key_id)


class EchoAdmin(gateway_pb2_grpc.AdminServiceServicer):
    async def ListApiKeys(self, request, context):
        return gateway_pb2.ListApiKeysResponse(keys=[gateway_pb2.ApiKey(key_id=current_principal().key_id)])


class AuthApp:
    service_names: Sequence[str] = ("inkloop.v1.GatewayService", "inkloop.v1.AdminService")

    def __init__(self, store: KeyStore) -> None:
        self.interceptors: Sequence[grpc.aio.ServerInterceptor] = (AuthInterceptor(store),)

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(EchoJobs(), server)
        gateway_pb2_grpc.add_AdminServiceServicer_to_server(EchoAdmin(), server)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db")


@pytest.fixture
async def server(store: KeyStore) -> AsyncIterator[RunningServer]:
    running = await start_server(AuthApp(store), "127.0.0.1", 0)
    yield running
    await running.server.stop(0)


def _bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def _list_jobs(port: int, metadata: tuple = ()) -> gateway_pb2.ListJobsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await gateway_pb2_grpc.GatewayServiceStub(channel).ListJobs(
            gateway_pb2.ListJobsRequest(), metadata=metadata
        )


async def test_valid_key_sets_the_principal_for_unary_calls(server: RunningServer, store: KeyStore) -> None:
    _key, secret = store.create("acme", Role.USER)
    reply = await _list_jobs(server.port, _bearer(secret))
    assert reply.next_page_token == "acme"


async def test_valid_key_sets_the_principal_for_streaming_calls(server: RunningServer, store: KeyStore) -> None:
    key, secret = store.create("acme", Role.USER)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = gateway_pb2_grpc.GatewayServiceStub(channel).WatchJob(
            gateway_pb2.WatchJobRequest(), metadata=_bearer(secret)
        )
        events = [event async for event in call]
    assert [event.job_id for event in events] == [key.key_id, key.key_id]


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer ink_AAAAAAAAAAAA_" + "A" * 43),),
    ],
    ids=["missing", "empty", "other-scheme", "unknown-key"],
)
async def test_missing_or_wrong_key_is_unauthenticated(server: RunningServer, metadata: tuple) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list_jobs(server.port, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unauthenticated_streaming_call_is_refused(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = gateway_pb2_grpc.GatewayServiceStub(channel).WatchJob(gateway_pb2.WatchJobRequest())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_revoked_key_fails_on_its_next_call(server: RunningServer, store: KeyStore) -> None:
    key, secret = store.create("acme", Role.USER)
    await _list_jobs(server.port, _bearer(secret))
    store.revoke(key.key_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list_jobs(server.port, _bearer(secret))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("role", [Role.USER, Role.ANALYST])
async def test_admin_service_needs_the_admin_role(server: RunningServer, store: KeyStore, role: Role) -> None:
    _key, secret = store.create("acme", role)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway_pb2_grpc.AdminServiceStub(channel).ListApiKeys(
                gateway_pb2.ListApiKeysRequest(), metadata=_bearer(secret)
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_admin_key_reaches_the_admin_service(server: RunningServer, store: KeyStore) -> None:
    key, secret = store.create("ops", Role.ADMIN)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await gateway_pb2_grpc.AdminServiceStub(channel).ListApiKeys(
            gateway_pb2.ListApiKeysRequest(), metadata=_bearer(secret)
        )
    assert [k.key_id for k in reply.keys] == [key.key_id]


async def test_health_is_public(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # answered, not refused


async def test_authenticate_header_follows_the_same_rules(store: KeyStore) -> None:
    key, secret = store.create("acme", Role.ANALYST)
    assert await authenticate_header(store, f"Bearer {secret}") == Principal(key.key_id, "acme", Role.ANALYST)
    assert (await authenticate_header(store, f"bearer   {secret} ")).key_id == key.key_id
    with pytest.raises(errors.Unauthenticated):
        await authenticate_header(store, None)
    with pytest.raises(errors.Unauthenticated):
        await authenticate_header(store, secret)  # no scheme
    with pytest.raises(errors.PermissionDenied):
        await authenticate_header(store, f"Bearer {secret}", required=Role.ADMIN)


async def test_a_slow_key_storage_does_not_hold_the_event_loop(store: KeyStore) -> None:
    _key, secret = store.create("acme", Role.USER)
    lookup = store.storage.get

    def slow_get(key_id: str) -> StoredKey | None:
        time.sleep(0.3)  # a Redis far away, or a busy one
        return lookup(key_id)

    store.storage.get = slow_get  # type: ignore[method-assign]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert (await store.authenticate_async(secret)).tenant_id == "acme"  # a cache miss: one slow lookup
    finally:
        ticker.cancel()
    assert ticks >= 10  # the loop kept running during the 0.3 s lookup
    began = time.monotonic()
    await store.authenticate_async(secret)  # now cached: no lookup at all
    assert time.monotonic() - began < 0.1


def test_current_principal_and_require_role_outside_and_inside_a_call() -> None:
    with pytest.raises(errors.Unauthenticated):
        current_principal()
    token = principal_var.set(Principal("k1", "acme", Role.ANALYST))
    try:
        assert require_role(Role.USER).tenant_id == "acme"
        assert require_role(Role.ANALYST).key_id == "k1"
        with pytest.raises(errors.PermissionDenied):
            require_role(Role.ADMIN)
    finally:
        principal_var.reset(token)
