"""Dispatch and durability: A/B variants, the result cache, replica failover, restarts mid-job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from inkloop.v1 import gateway_pb2
from inkloop_gateway.admission.variants import Variant, assign

from .conftest import Gateway, Inference, StartGateway, dead_address, finished, text_task


async def _submit(gateway: Gateway, task=None, who: str = "acme", **fields: object) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(task=task or text_task(), **fields)  # type: ignore[arg-type]
    return (await gateway.jobs.SubmitJob(request, metadata=gateway.auth(who))).job


async def test_variant_is_assigned_sticky_and_recorded_on_job_and_result(
    gateway: Gateway, inference: Inference
) -> None:
    variants = [
        gateway_pb2.ModelVariant(name="control", target=inference.target, weight=1),
        gateway_pb2.ModelVariant(name="candidate", target=inference.target, weight=1),
    ]
    await gateway.admin.SetVariants(gateway_pb2.SetVariantsRequest(variants=variants), metadata=gateway.auth("admin"))
    listed = await gateway.admin.ListVariants(gateway_pb2.ListVariantsRequest(), metadata=gateway.auth("admin"))
    assert [v.name for v in listed.variants] == ["control", "candidate"]
    domain = [Variant(v.name, v.target, v.weight) for v in variants]
    users = [f"user-{i}" for i in range(6)]
    jobs = [await _submit(gateway, text_task(seed=1), user_id=user) for user in users]
    for user, job in zip(users, jobs, strict=True):
        assert job.variant == assign(domain, user).name and job.user_id == user
    assert {job.variant for job in jobs} == {"control", "candidate"}
    for job in jobs:
        end = await finished(gateway, job.job_id)
        assert end.variant == job.variant and end.WhichOneof("event") == "succeeded"
    again = await _submit(gateway, text_task(seed=2), user_id=users[0])
    assert again.variant == jobs[0].variant  # sticky
    await finished(gateway, again.job_id)


async def test_second_identical_request_is_a_cache_hit_with_the_same_bytes(gateway: Gateway) -> None:
    first = await _submit(gateway, text_task("a lighthouse at dusk", seed=42))
    first_end = await finished(gateway, first.job_id)
    second = await _submit(gateway, text_task("a  lighthouse at dusk ", seed=42))  # normalised: same entry
    assert second.state == gateway_pb2.JOB_STATE_SUCCEEDED and second.cache_hit
    second_end = await finished(gateway, second.job_id)
    assert second_end.succeeded.images[0].data == first_end.succeeded.images[0].data
    # Another tenant gets the hit too, with its own copy of the image.
    other = await _submit(gateway, text_task("a lighthouse at dusk", seed=42), who="globex")
    other_end = await finished(gateway, other.job_id, who="globex")
    assert other.cache_hit and other_end.succeeded.images[0].data == first_end.succeeded.images[0].data
    assert other_end.succeeded.images[0].image_id != first_end.succeeded.images[0].image_id


async def test_unseeded_requests_get_a_seed_that_reproduces_them(gateway: Gateway) -> None:
    job = await _submit(gateway, text_task("a quiet harbour"))
    seed = job.parameters.seed
    assert 0 < seed < 2**63
    end = await finished(gateway, job.job_id)
    assert end.succeeded.images[0].seed == seed
    replay = await _submit(gateway, text_task("a quiet harbour", seed=seed))
    assert replay.cache_hit


async def test_unavailable_replica_is_skipped_for_another(start_gateway: StartGateway, inference: Inference) -> None:
    dead = dead_address()
    gateway = await start_gateway(inference_target=f"{dead},{inference.target}")
    pool = await gateway.app.pools.get(f"{dead},{inference.target}")
    pool.replicas[inference.target].in_flight = 1  # the dead one looks least loaded: it is tried first
    job = await _submit(gateway)
    pool.replicas[inference.target].in_flight = 0
    end = await finished(gateway, job.job_id)
    assert end.WhichOneof("event") == "succeeded"
    assert pool.replicas[dead].failures >= 1 and not pool.replicas[dead].healthy


async def test_a_target_no_variant_names_any_more_is_closed(gateway: Gateway, inference: Inference) -> None:
    retired = dead_address()
    admin = gateway.auth("admin")
    variants = [
        gateway_pb2.ModelVariant(name="control", target=inference.target, weight=1),
        gateway_pb2.ModelVariant(name="old", target=retired, weight=1),
    ]
    await gateway.admin.SetVariants(gateway_pb2.SetVariantsRequest(variants=variants), metadata=admin)
    old_pool = await gateway.app.pools.get(retired)  # as a submission assigned to "old" makes it
    kept_pool = await gateway.app.pools.get(inference.target)
    await gateway.admin.SetVariants(gateway_pb2.SetVariantsRequest(variants=variants[:1]), metadata=admin)
    assert gateway.app.pools.known(retired) is None and old_pool._task is not None and old_pool._task.done()
    assert gateway.app.pools.known(inference.target) is kept_pool
    replicas = [
        REGISTRY.get_sample_value("inkloop_gateway_inference_replicas", {"target": retired, "health": h})
        for h in ("up", "down")
    ]
    assert replicas == [0.0, 0.0]
    # A job still queued for it would make it again: retiring never strands work.
    assert (await gateway.app.pools.get(retired)).target == retired


async def test_all_replicas_down_fails_the_job_with_unavailable(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    dead = dead_address()
    variants = [gateway_pb2.ModelVariant(name="broken", target=dead, weight=1)]
    await gateway.admin.SetVariants(gateway_pb2.SetVariantsRequest(variants=variants), metadata=gateway.auth("admin"))
    await asyncio.sleep(1.1)  # variant lists are cached for a second
    with pytest.raises(Exception) as caught:
        await _submit(gateway)
    assert "UNAVAILABLE" in str(caught.value)


async def test_deadline_fails_the_job(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(job_deadline_s=0.5, workers=1)
    job = await _submit(gateway, text_task(width=256, height=256, steps=60))
    end = await finished(gateway, job.job_id)
    assert end.WhichOneof("event") == "failed" and end.failed.code == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_restart_with_jobs_queued_and_running_ends_every_job(
    start_gateway: StartGateway, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    extra: dict[str, object] = {"workers": 1}
    if backend == "redis":
        extra["redis_url"] = request.getfixturevalue("redis_url")
    data_dir = tmp_path / "restarted"
    first = await start_gateway(data_dir, **extra)
    jobs = [await _submit(first, text_task(width=128, height=128, steps=12, seed=i)) for i in range(3)]
    watch = first.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=jobs[0].job_id), metadata=first.auth())
    async for event in watch:
        if event.HasField("running"):
            break
    await first.stop()  # mid-job: one running, two queued

    second = await start_gateway(data_dir, **extra)
    ends = await asyncio.gather(*(finished(second, job.job_id) for job in jobs))
    assert [end.WhichOneof("event") for end in ends] == ["succeeded"] * 3
    states = await second.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=second.auth())
    assert {job.state for job in states.jobs} == {gateway_pb2.JOB_STATE_SUCCEEDED}


async def test_job_of_a_replica_that_died_is_recovered_by_another(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    # Two replicas share Redis; the first "dies" without releasing its job (its heartbeat stops).
    first = await start_gateway(tmp_path / "a", redis_url=redis_url, lease_s=0.5, workers=1)
    job = await _submit(first, text_task(width=128, height=128, steps=12))
    watch = first.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=first.auth())
    async for event in watch:
        if event.HasField("running"):
            break
    dispatcher = first.app.dispatcher
    for task in [*dispatcher._tasks, *dispatcher._runs]:  # a crash: no release, no more heartbeats
        task.cancel()
    dispatcher._tasks = []
    first.app.store.release = _never  # type: ignore[method-assign]
    second = await start_gateway(tmp_path / "b", redis_url=redis_url, lease_s=0.5, workers=1)
    end = await finished(second, job.job_id)
    assert end.WhichOneof("event") == "succeeded"


async def _never(*_args: object) -> None:
    return None


async def test_progress_of_a_job_reaches_watchers_on_another_replica(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    # Steps go to this replica's watchers from memory; the store gets them throttled, for the others.
    first = await start_gateway(tmp_path / "a", redis_url=redis_url, workers=1)
    job = await _submit(first, text_task(width=256, height=256, steps=60))
    local = first.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=first.auth())
    async for event in local:
        if event.HasField("running"):
            break
    local.cancel()
    second = await start_gateway(tmp_path / "b", redis_url=redis_url, workers=1)
    steps: list[int] = []
    remote = second.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=second.auth())
    async for event in remote:
        if event.HasField("running"):
            steps.append(event.running.step)
        if len(steps) == 2 or not event.HasField("running"):
            break
    remote.cancel()
    assert steps and steps[0] > 0 and steps == sorted(steps)
    await second.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=second.auth())
    end = await finished(first, job.job_id)
    assert end.WhichOneof("event") == "cancelled" and end.cancelled.steps_completed > 0


async def test_jobs_start_at_once_on_free_workers_and_never_exceed_them(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(workers=2)
    first = await _submit(gateway, text_task(width=128, height=128, steps=8, seed=1))
    assert first.state == gateway_pb2.JOB_STATE_RUNNING  # a free worker: no trip through the queue
    rest = await asyncio.gather(
        *(_submit(gateway, text_task(width=128, height=128, steps=8, seed=i)) for i in range(2, 7))
    )
    assert sum(job.state == gateway_pb2.JOB_STATE_RUNNING for job in rest) <= 1
    ids = [first.job_id, *(job.job_id for job in rest)]
    most_running = 0
    while True:
        listed = await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(page_size=10), metadata=gateway.auth())
        states = [job.state for job in listed.jobs if job.job_id in ids]
        most_running = max(most_running, states.count(gateway_pb2.JOB_STATE_RUNNING))
        if all(state == gateway_pb2.JOB_STATE_SUCCEEDED for state in states):
            break
        await asyncio.sleep(0.01)
    assert most_running == 2  # both workers were used, and never more
