"""API keys through real gateways: replicas sharing a real redis-server, and the key file, over gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from inkloop.v1 import gateway_pb2
from inkloop_gateway.admission.keys import ApiKey, Role, StoredKey, hash_secret, new_secret, prefix_of
from inkloop_gateway.admission.keys_file import key_line

from .conftest import Gateway, StartGateway, text_task

CACHE_TTL_S = 0.3


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def list_jobs(gateway: Gateway, secret: str) -> grpc.StatusCode:
    return await code_of(gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=bearer(secret)))


async def list_keys(gateway: Gateway, secret: str) -> grpc.StatusCode:
    return await code_of(gateway.admin.ListApiKeys(gateway_pb2.ListApiKeysRequest(), metadata=bearer(secret)))


@pytest.fixture
async def replicas(start_gateway: StartGateway, tmp_path: Path, redis_url: str) -> tuple[Gateway, Gateway]:
    settings = {"redis_url": redis_url, "api_keys_cache_ttl_s": CACHE_TTL_S, "workers": 1}
    return await start_gateway(tmp_path / "a", **settings), await start_gateway(tmp_path / "b", **settings)


async def test_a_key_created_on_one_replica_works_on_the_other_with_its_role_and_tenant(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    created = await a.admin.CreateApiKey(
        gateway_pb2.CreateApiKeyRequest(tenant_id="initech", role=gateway_pb2.ROLE_USER, name="shared"),
        metadata=a.auth("admin"),
    )
    secret = created.secret
    assert await list_jobs(b, secret) == grpc.StatusCode.OK
    assert await list_keys(b, secret) == grpc.StatusCode.PERMISSION_DENIED  # a user key, on any replica
    submitted = await a.jobs.SubmitJob(gateway_pb2.SubmitJobRequest(task=text_task()), metadata=a.auth("acme"))
    with pytest.raises(grpc.aio.AioRpcError) as other_tenant:
        await b.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=submitted.job.job_id), metadata=bearer(secret))
    assert other_tenant.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await b.admin.ListApiKeys(gateway_pb2.ListApiKeysRequest(tenant_id="initech"), metadata=b.auth("admin"))
    assert [k.key_id for k in listed.keys] == [created.key.key_id]


async def test_a_key_revoked_on_one_replica_is_refused_on_the_other_within_the_cache_ttl(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    created = await b.admin.CreateApiKey(
        gateway_pb2.CreateApiKeyRequest(tenant_id="initech", role=gateway_pb2.ROLE_USER), metadata=b.auth("admin")
    )
    assert await list_jobs(a, created.secret) == grpc.StatusCode.OK
    assert await list_jobs(b, created.secret) == grpc.StatusCode.OK  # now cached on b
    await a.admin.RevokeApiKey(gateway_pb2.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=a.auth("admin"))
    assert await list_jobs(a, created.secret) == grpc.StatusCode.UNAUTHENTICATED
    await asyncio.sleep(CACHE_TTL_S + 0.05)
    assert await list_jobs(b, created.secret) == grpc.StatusCode.UNAUTHENTICATED


def write_key(path: Path, role: Role, *, extra: str = "") -> str:
    key_id, secret = new_secret()
    key = ApiKey(key_id, "hooli", role, "", prefix_of(key_id), 0.0)
    path.write_text(f"{extra}{key_line(StoredKey(key, hash_secret(secret)))}\n")
    return secret


async def test_key_file_keys_authenticate_with_their_role_and_a_changed_file_is_picked_up(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    path = tmp_path / "api-key-hashes.txt"
    analyst = write_key(path, Role.ANALYST, extra='{"key_id": "broken"}\nnot json\n')  # bad lines: logged, skipped
    gateway = await start_gateway(api_keys_file=path)
    assert await list_jobs(gateway, analyst) == grpc.StatusCode.OK
    assert await list_keys(gateway, analyst) == grpc.StatusCode.PERMISSION_DENIED
    admin = write_key(path, Role.ADMIN)
    for _ in range(30):  # the file is checked once a second
        if await list_keys(gateway, admin) == grpc.StatusCode.OK:
            break
        await asyncio.sleep(0.1)
    assert await list_keys(gateway, admin) == grpc.StatusCode.OK
    assert await list_jobs(gateway, analyst) == grpc.StatusCode.UNAUTHENTICATED  # its line is gone
    listed = await gateway.admin.ListApiKeys(gateway_pb2.ListApiKeysRequest(tenant_id="hooli"), metadata=bearer(admin))
    assert [(k.tenant_id, k.role, k.from_key_file) for k in listed.keys] == [("hooli", gateway_pb2.ROLE_ADMIN, True)]
    everyone = await gateway.admin.ListApiKeys(gateway_pb2.ListApiKeysRequest(), metadata=bearer(admin))
    assert {k.from_key_file for k in everyone.keys if k.tenant_id != "hooli"} == {False}  # the store's own keys
