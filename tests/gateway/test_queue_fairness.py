"""Priority and weighted fair queueing, on both job stores and across Redis replicas: interactive jobs
never wait behind another tenant's batch flood, flooding tenants share by weight, and queue positions
are the order claims really take; end to end, a tenant capped to batch gets batch and one tenant's
200 batch jobs hold back another's interactive job by at most the job already running."""

from __future__ import annotations

import contextlib
from collections import Counter

import grpc

from inkloop.v1 import gateway_pb2
from inkloop_gateway.jobs.shares import QueueShares
from inkloop_gateway.jobs.store import Job, JobStore, Priority, next_fair_tag
from inkloop_gateway.jobs.store_redis import RedisJobStore

from .conftest import StartGateway, finished, text_task
from .test_jobs import _job

BATCH, INTERACTIVE = Priority.BATCH, Priority.INTERACTIVE


async def _claim_all(store: JobStore, limit: int = 10_000) -> list[Job]:
    claimed = []
    while len(claimed) < limit and (job := await store.claim("w", 60)) is not None:
        claimed.append(job)
    return claimed


async def test_an_interactive_job_goes_before_another_tenants_batch_flood(store: JobStore) -> None:
    for _ in range(200):
        await store.submit(_job("flood", priority=BATCH))
    urgent, _ = await store.submit(_job("person", priority=INTERACTIVE))
    assert await store.queue_position(urgent) == 0
    [first] = await _claim_all(store, 1)
    assert first.job_id == urgent.job_id


async def test_flooding_tenants_share_by_weight_and_positions_are_the_claim_order(store: JobStore) -> None:
    queued = []
    for _ in range(100):  # A floods first; B arrives with all of its jobs afterwards
        queued.append((await store.submit(_job("a", priority=BATCH, weight=1.0)))[0])
    for _ in range(100):
        queued.append((await store.submit(_job("b", priority=BATCH, weight=3.0)))[0])
    positions = {job.job_id: await store.queue_position(job) for job in queued}
    claimed = await _claim_all(store)
    assert [positions[job.job_id] for job in claimed] == list(range(200))
    shares = Counter(job.tenant_id for job in claimed[:100])
    assert abs(shares["b"] / 100 - 0.75) <= 0.075, shares  # within 10% of its weight's share


async def test_an_idle_tenant_saves_no_credit() -> None:
    # A tenant back after idling starts at the clock, not at its old tag: no burst ahead of the others.
    assert next_fair_tag(clock=50.0, tenant_last=3.0, weight=1.0) == 51.0
    assert next_fair_tag(clock=50.0, tenant_last=60.0, weight=2.0) == 60.5


async def test_replicas_sharing_redis_claim_in_one_order(redis_url: str) -> None:
    one, two = RedisJobStore(redis_url), RedisJobStore(redis_url)
    try:
        for tenant, weight in (("a", 1.0), ("b", 1.0), ("a", 1.0), ("b", 1.0), ("a", 1.0), ("a", 1.0)):
            await one.submit(_job(tenant, priority=BATCH, weight=weight))
        await two.submit(_job("c", priority=INTERACTIVE))
        order = []
        for replica in (one, two) * 4:
            job = await replica.claim(f"replica-{id(replica)}", 60)
            if job is not None:
                order.append(job.tenant_id)
        assert order == ["c", "a", "b", "a", "b", "a", "a"]
    finally:
        await one.close()
        await two.close()


def test_a_capped_tenant_gets_batch_and_weights_default_to_one() -> None:
    shares = QueueShares(weights={"big": 3.0}, max_priority={"bulk": BATCH})
    assert shares.place("bulk", INTERACTIVE) == (BATCH, 1.0)
    assert shares.place("big", INTERACTIVE) == (INTERACTIVE, 3.0)
    assert shares.place("big", BATCH) == (BATCH, 3.0)


async def test_an_interactive_job_waits_at_most_for_the_running_one(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(workers=1, tenant_max_priority={"globex": "batch"})
    flood = []
    for i in range(200):
        reply = await gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(
                task=text_task(f"a batch kite {i}", seed=i + 1), priority=gateway_pb2.JOB_PRIORITY_BATCH
            ),
            metadata=gateway.auth("acme"),
        )
        flood.append(reply.job.job_id)
    urgent = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("one person waits", seed=7)), metadata=gateway.auth("globex")
    )
    assert urgent.job.priority == gateway_pb2.JOB_PRIORITY_BATCH  # globex is capped to batch
    person = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("someone waits", seed=8)), metadata=gateway.auth("admin")
    )
    assert person.job.priority == gateway_pb2.JOB_PRIORITY_INTERACTIVE
    assert person.job.queue_position == 0
    await finished(gateway, person.job.job_id, who="admin")
    ended = (
        await gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=person.job.job_id), metadata=gateway.auth("admin"))
    ).job
    arrived, started = ended.created_at.ToDatetime(), ended.started_at.ToDatetime()
    jobs = [
        (await gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), metadata=gateway.auth("acme"))).job
        for job_id in flood
    ]
    # Of the flood, none started between the person's arrival and its start: it waited only for the
    # job already running, so no longer than one job's run time.
    cut_in = [job for job in jobs if job.HasField("started_at") and arrived < job.started_at.ToDatetime() < started]
    assert cut_in == []
    run_times = [
        (job.finished_at.ToDatetime() - job.started_at.ToDatetime()).total_seconds()
        for job in jobs
        if job.HasField("finished_at") and job.HasField("started_at")
    ]
    assert run_times and (started - arrived).total_seconds() <= max(run_times) + 0.5
    for job_id in flood:  # the rest need not run
        with contextlib.suppress(grpc.aio.AioRpcError):
            await gateway.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), metadata=gateway.auth("acme"))
