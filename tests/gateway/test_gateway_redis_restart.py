"""A Redis restart under load, with persistence on as the prod manifests configure it: every accepted
job ends, none twice, and calls made while Redis is down answer UNAVAILABLE, never INTERNAL or a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from prometheus_client import REGISTRY

from harness.redis import RedisServer
from inkloop.v1 import gateway_pb2

from .conftest import StartGateway, events_of, text_task

#: Jobs submitted at least; the load goes on until Redis is back.
JOBS = 12
#: Bound of each call and of every wait below: far above what they take, so only a hang reaches it.
PATIENCE_S = 120.0


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", persistent=True) as server:
        yield server


def succeeded_so_far() -> float:
    return (
        REGISTRY.get_sample_value("inkloop_gateway_job_events_total", {"type": "succeeded", "variant": "default"})
        or 0.0
    )


async def test_a_redis_restart_mid_load_loses_no_job_and_ends_none_twice(
    persistent_redis: RedisServer, start_gateway: StartGateway, tmp_path: Path
) -> None:
    # Redis is set up first, so it is torn down last: the gateway stops while its store still answers.
    gateway = await start_gateway(tmp_path / "gateway", redis_url=persistent_redis.url, workers=2, lease_s=3.0)
    succeeded_before = succeeded_so_far()
    accepted: dict[str, str] = {}  # request id -> job id
    refused: list[tuple[grpc.StatusCode, str]] = []

    async def submit_until_accepted(request_id: str, seed: int) -> None:
        request = gateway_pb2.SubmitJobRequest(request_id=request_id, task=text_task(f"a kite {seed}", seed=seed))
        while True:
            try:
                reply = await gateway.jobs.SubmitJob(request, metadata=gateway.auth(), timeout=PATIENCE_S)
            except grpc.aio.AioRpcError as error:
                refused.append((error.code(), error.details() or ""))
                await asyncio.sleep(0.05)  # a client's retry, with the same request id
                continue
            accepted[request_id] = reply.job.job_id
            return

    restarted = asyncio.Event()

    async def load() -> None:
        i = 0
        while i < JOBS or not restarted.is_set():
            await submit_until_accepted(f"kite-{i}", i)
            i += 1
            await asyncio.sleep(0.02)  # a steady stream of submissions: before, during and after the restart

    loader = asyncio.create_task(load())
    await until(lambda: len(accepted) >= JOBS // 3, "a third of the jobs accepted")
    await asyncio.to_thread(persistent_redis.stop)  # SIGTERM: Redis syncs its append-only file and exits
    # The load may have got every job in before the stop: a read of a known job meets the outage too.
    known = gateway_pb2.GetJobRequest(job_id=next(iter(accepted.values())))
    while not refused:
        try:
            await gateway.jobs.GetJob(known, metadata=gateway.auth(), timeout=PATIENCE_S)
        except grpc.aio.AioRpcError as error:
            refused.append((error.code(), error.details() or ""))
        await asyncio.sleep(0.05)
    # The page's bridge meets the same outage: a 503 to retry after, never a 500.
    body = {"requestId": "kite-over-http", "task": json_format.MessageToDict(text_task("a kite over http", seed=7))}
    async with (
        aiohttp.ClientSession(gateway.http_url) as http,
        http.post("/v1/jobs", json=body, headers=dict(gateway.auth())) as reply,
    ):
        http_refusal = (reply.status, (await reply.json())["code"], reply.headers.get("Retry-After"))
    await asyncio.to_thread(persistent_redis.start)  # same port, same data directory
    restarted.set()
    await asyncio.wait_for(loader, PATIENCE_S)

    async def end_of(job_id: str) -> gateway_pb2.JobEvent:
        request = gateway_pb2.WatchJobRequest(job_id=job_id)
        while True:
            try:
                return (await events_of(gateway.jobs.WatchJob(request, metadata=gateway.auth())))[-1]
            except grpc.aio.AioRpcError as error:  # a connection of the gateway's found dead by this call
                refused.append((error.code(), error.details() or ""))
                await asyncio.sleep(0.05)

    ends = await asyncio.wait_for(asyncio.gather(*(end_of(job_id) for job_id in accepted.values())), PATIENCE_S)
    assert [end.WhichOneof("event") for end in ends] == ["succeeded"] * len(accepted)
    assert refused and {code for code, _ in refused} == {grpc.StatusCode.UNAVAILABLE}
    assert http_refusal == (503, "UNAVAILABLE", "2")
    # Each says what is missing (the store, or the rate limiter that lives in it).
    assert all("Redis" in details or "unavailable" in details for _, details in refused), refused
    # None lost, none made twice: one job per request id, each ended once.
    listed = await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(page_size=100), metadata=gateway.auth())
    assert sorted((job.request_id, job.job_id) for job in listed.jobs) == sorted(accepted.items())
    assert succeeded_so_far() - succeeded_before == len(accepted)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)
