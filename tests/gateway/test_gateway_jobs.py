"""The gateway's jobs API over real gRPC, against the real inference service with the tiny model."""

from __future__ import annotations

import asyncio
import io
import time

import grpc
import pytest
from PIL import Image

from inkloop.rpc.status import field_violations, retry_delay_s
from inkloop.v1 import gateway_pb2

from .conftest import Gateway, StartGateway, events_of, finished, text_task


async def _submit(gateway: Gateway, task=None, who: str = "acme", **fields: object) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(task=task or text_task(), **fields)  # type: ignore[arg-type]
    return (await gateway.jobs.SubmitJob(request, metadata=gateway.auth(who))).job


async def test_submit_then_watch_ends_succeeded_with_image_bytes(gateway: Gateway) -> None:
    job = await _submit(gateway, text_task(seed=7))
    assert job.job_id and job.state in (gateway_pb2.JOB_STATE_QUEUED, gateway_pb2.JOB_STATE_RUNNING)
    assert job.parameters.seed == 7 and job.parameters.steps == 2 and job.variant == "default"
    last = await finished(gateway, job.job_id)
    assert last.WhichOneof("event") == "succeeded" and last.variant == "default"
    image = last.succeeded.images[0]
    assert Image.open(io.BytesIO(image.data)).size == (64, 64)
    assert image.image_id and image.download_url.startswith(f"/v1/images/{image.image_id}.png?")
    got = await gateway.jobs.GetJob(
        gateway_pb2.GetJobRequest(job_id=job.job_id, include_images=True), metadata=gateway.auth()
    )
    assert got.job.state == gateway_pb2.JOB_STATE_SUCCEEDED and got.job.result.images[0].data == image.data
    assert got.job.finished_at.seconds > 0 and not got.job.cache_hit
    plain = await gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), metadata=gateway.auth())
    assert plain.job.result.images[0].data == b"" and plain.job.result.images[0].image_id == image.image_id


async def test_generate_streams_progress_then_the_result(gateway: Gateway) -> None:
    request = gateway_pb2.GenerateRequest(task=text_task(steps=3))
    events = await events_of(gateway.jobs.Generate(request, metadata=gateway.auth()))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "succeeded" and kinds.count("succeeded") == 1
    steps = [event.running.step for event in events if event.HasField("running")]
    assert steps == sorted(steps) and all(1 <= s <= 3 for s in steps)
    assert events[-1].succeeded.images[0].seed > 0  # assigned by the gateway
    assert len({event.job_id for event in events}) == 1


async def test_request_id_makes_submission_idempotent(gateway: Gateway) -> None:
    first = await _submit(gateway, request_id="click-123")
    again = await _submit(gateway, text_task("something else entirely"), request_id="click-123")
    assert again.job_id == first.job_id and again.request_id == "click-123"
    other_tenant = await _submit(gateway, who="globex", request_id="click-123")
    assert other_tenant.job_id != first.job_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(gateway, request_id="spaces are not allowed")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await finished(gateway, first.job_id)


async def test_another_tenants_job_is_not_found(gateway: Gateway) -> None:
    job = await _submit(gateway)
    calls = [
        gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), metadata=gateway.auth("globex")),
        gateway.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=gateway.auth("globex")),
        events_of(
            gateway.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=gateway.auth("globex"))
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=gateway.auth("globex"))
    assert job.job_id not in [j.job_id for j in listed.jobs]
    await finished(gateway, job.job_id)


async def test_cancel_reaches_inference_and_frees_the_worker(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(workers=1)
    job = await _submit(gateway, text_task(width=256, height=256, steps=60))
    watch = gateway.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=gateway.auth())
    async for event in watch:
        if event.HasField("running"):
            break
    started = time.monotonic()
    cancelled = await gateway.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=gateway.auth())
    assert cancelled.job.state == gateway_pb2.JOB_STATE_CANCELLED
    last = [event async for event in watch][-1]
    assert last.WhichOneof("event") == "cancelled" and last.cancelled.steps_completed < 60
    # The only worker is free again, and inference is not busy with the rest of the 60 steps.
    follow_up = await _submit(gateway)
    assert (await finished(gateway, follow_up.job_id)).WhichOneof("event") == "succeeded"
    assert time.monotonic() - started < 10
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=gateway.auth())
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancelling_a_queued_job_ends_it_at_once(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(workers=1)
    busy = await _submit(gateway, text_task(width=128, height=128, steps=20))
    queued = await _submit(gateway)
    assert queued.state == gateway_pb2.JOB_STATE_QUEUED and queued.queue_position >= 0
    reply = await gateway.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=queued.job_id), metadata=gateway.auth())
    assert reply.job.state == gateway_pb2.JOB_STATE_CANCELLED
    await gateway.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=busy.job_id), metadata=gateway.auth())


async def test_list_pages_newest_first_with_a_state_filter(gateway: Gateway) -> None:
    ids = [(await _submit(gateway, request_id=f"list-{i}")).job_id for i in range(5)]
    seen, token = [], ""
    while True:
        page = await gateway.jobs.ListJobs(
            gateway_pb2.ListJobsRequest(page_size=2, page_token=token), metadata=gateway.auth()
        )
        assert len(page.jobs) <= 2
        seen += [job.job_id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    for job_id in ids:
        await finished(gateway, job_id)
    succeeded = await gateway.jobs.ListJobs(
        gateway_pb2.ListJobsRequest(state=gateway_pb2.JOB_STATE_SUCCEEDED), metadata=gateway.auth()
    )
    assert {job.job_id for job in succeeded.jobs} == set(ids)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(page_size=500), metadata=gateway.auth())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_input_is_invalid_argument_naming_the_field(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(gateway, text_task(width=100))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task.text_to_image.parameters.width" in [f for f, _ in field_violations(caught.value)]


async def test_unsafe_prompt_is_refused_naming_the_policy(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(gateway, text_task("child porn"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sexual-minors" in (caught.value.details() or "") and "porn" not in (caught.value.details() or "")


async def test_over_the_rate_limit_is_resource_exhausted_with_retry_info(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(rate_key_requests_burst=1.0, rate_key_requests_per_s=0.1)
    job = await _submit(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(gateway)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (retry_delay_s(caught.value) or 0) > 0
    # A repeated request id is answered from the store and charges nothing.
    again = await _submit(gateway, request_id=job.request_id)
    assert again.job_id == job.job_id
    await finished(gateway, job.job_id)


async def test_missing_or_wrong_key_is_unauthenticated_and_user_keys_are_not_admins(gateway: Gateway) -> None:
    request = gateway_pb2.ListJobsRequest()
    for metadata in [(), (("authorization", "Bearer ink_AAAAAAAAAAAA_" + "x" * 43),)]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.jobs.ListJobs(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.admin.ListApiKeys(gateway_pb2.ListApiKeysRequest(), metadata=gateway.auth("acme"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    keys = await gateway.admin.ListApiKeys(gateway_pb2.ListApiKeysRequest(), metadata=gateway.auth("admin"))
    assert {key.tenant_id for key in keys.keys} == {"acme", "globex"}


async def test_admin_creates_and_revokes_keys(gateway: Gateway) -> None:
    created = await gateway.admin.CreateApiKey(
        gateway_pb2.CreateApiKeyRequest(tenant_id="initech", role=gateway_pb2.ROLE_USER, name="ci"),
        metadata=gateway.auth("admin"),
    )
    metadata = (("authorization", f"Bearer {created.secret}"),)
    assert (await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=metadata)).jobs == []
    revoked = await gateway.admin.RevokeApiKey(
        gateway_pb2.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=gateway.auth("admin")
    )
    assert revoked.key.revoked_at.seconds > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_concurrent_jobs_all_succeed(gateway: Gateway) -> None:
    jobs = await asyncio.gather(*(_submit(gateway, text_task(seed=i)) for i in range(4)))
    ends = await asyncio.gather(*(finished(gateway, job.job_id) for job in jobs))
    assert [end.WhichOneof("event") for end in ends] == ["succeeded"] * 4
