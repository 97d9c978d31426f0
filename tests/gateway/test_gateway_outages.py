"""Jobs wait out inference outages within their deadline: the only replica stopped and started again,
one of two replicas stopped mid-job, a full inference queue, and an outage longer than the deadline.

The replicas are real gRPC inference servers on fixed ports. Stopping one closes its listener and
aborts its calls, as a crashed or restarting pod looks from the gateway; starting it binds the same
port again. They serve the session's loaded tiny model, so a restart costs no model load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from harness import free_ports
from inkloop.rpc.server import RunningServer, start_server
from inkloop.v1 import common_pb2, gateway_pb2
from inkloop_gateway.jobs.dispatch import NO_REPLICA

from .conftest import Gateway, Inference, StartGateway, events_of, text_task

#: Bound of every wait for a condition below: far above what it takes, so only a hang reaches it.
PATIENCE_S = 60.0


class Replica:
    """An inference server on a fixed port, over an already loaded inference app, that can stop and start."""

    def __init__(self, app: object) -> None:
        self.app = app
        [self.port] = free_ports(1)
        self.running: RunningServer | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.running = await start_server(self.app, "127.0.0.1", self.port)  # type: ignore[arg-type]
        await self.running.set_serving(True)

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.server.stop(0)
            self.running = None


@pytest.fixture
async def replicas(inference: Inference) -> AsyncIterator[Callable[[], Awaitable[Replica]]]:
    """Starts replicas over the session's inference app; stops those still up at the end."""
    started: list[Replica] = []

    async def start() -> Replica:
        replica = Replica(inference.app)
        await replica.start()
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.stop()


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        met = condition()
        if not isinstance(met, bool):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def submit(gateway: Gateway, task: common_pb2.GenerationTask) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(task=task)
    return (await gateway.jobs.SubmitJob(request, metadata=gateway.auth())).job


def watch(gateway: Gateway, job_id: str) -> grpc.aio.UnaryStreamCall:
    return gateway.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), metadata=gateway.auth())


async def jobs_of(gateway: Gateway, ids: list[str]) -> list[gateway_pb2.Job]:
    return [(await gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=i), metadata=gateway.auth())).job for i in ids]


async def reference_images(
    start_gateway: StartGateway, tmp_path: Path, tasks: list[common_pb2.GenerationTask]
) -> list[bytes]:
    """The images of `tasks` from an undisturbed gateway on the session's inference service."""
    gateway = await start_gateway(tmp_path / "reference")
    images = []
    for task in tasks:
        events = await events_of(gateway.jobs.Generate(gateway_pb2.GenerateRequest(task=task), metadata=gateway.auth()))
        images.append(events[-1].succeeded.images[0].data)
    return images


def kinds(events: list[gateway_pb2.JobEvent]) -> Iterator[str]:
    """The kinds of a job's events, with repeats of the same kind collapsed."""
    last = None
    for event in events:
        kind = event.WhichOneof("event")
        if kind != last:
            yield kind or ""
        last = kind


async def test_jobs_wait_for_the_only_replica_and_rerun_with_the_same_bytes(
    start_gateway: StartGateway, replicas: Callable[[], Awaitable[Replica]], tmp_path: Path
) -> None:
    long_task = text_task("a lighthouse in a storm", steps=6, seed=100)
    short_tasks = [text_task(f"a paper boat {i}", seed=i) for i in range(4)]
    expected = await reference_images(start_gateway, tmp_path, [long_task, *short_tasks])
    replica = await replicas()
    gateway = await start_gateway(tmp_path / "gateway", inference_target=replica.target, workers=2)

    # The long job is mid-run when its only replica stops.
    first = await submit(gateway, long_task)
    first_events = watch(gateway, first.job_id)
    seen = []
    async for event in first_events:
        seen.append(event)
        if event.HasField("running"):
            break
    await replica.stop()
    jobs = [first, *[await submit(gateway, task) for task in short_tasks]]  # accepted and queued while down
    ids = [job.job_id for job in jobs]

    async def all_queued() -> bool:
        return all(job.state == gateway_pb2.JOB_STATE_QUEUED for job in await jobs_of(gateway, ids))

    await until(all_queued, "every job queued")
    assert sorted(job.queue_position for job in await jobs_of(gateway, ids)) == list(range(len(ids)))
    last = watch(gateway, ids[-1])
    queued = await anext(aiter(last))
    last.cancel()
    assert queued.queued.reason == NO_REPLICA and queued.queued.position == len(ids) - 1
    # The gateway itself stays ready: it accepts and queues; its metrics show the jobs waiting.
    health = await health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    await until(lambda: sample("inkloop_gateway_jobs_waiting", reason="no_replica") == 2, "both workers waiting")
    assert sample("inkloop_gateway_inference_replicas", target=replica.target, health="down") == 1

    await asyncio.sleep(3.0)  # the outage lasts (several backoff rounds), then the replica is back
    await replica.start()
    seen += await events_of(first_events)
    ends = await asyncio.gather(*(events_of(watch(gateway, job_id)) for job_id in ids))
    assert [end[-1].WhichOneof("event") for end in ends] == ["succeeded"] * len(ids)
    assert [end[-1].succeeded.images[0].data for end in ends] == expected
    # The long job went back to the queue when it lost its replica, then ran again from the start.
    assert list(kinds(seen)) == ["running", "queued", "running", "succeeded"]
    assert sample("inkloop_gateway_jobs_waiting", reason="no_replica") == 0


async def test_jobs_fail_at_their_deadline_naming_the_outage(
    start_gateway: StartGateway, replicas: Callable[[], Awaitable[Replica]], tmp_path: Path
) -> None:
    replica = await replicas()
    gateway = await start_gateway(inference_target=replica.target, workers=2, job_deadline_s=2.0)
    await (await gateway.app.pools.get(replica.target)).model_info()  # what it validates jobs against
    await replica.stop()
    jobs = [await submit(gateway, text_task(seed=seed)) for seed in range(2, 6)]
    ends = await asyncio.wait_for(asyncio.gather(*(events_of(watch(gateway, job.job_id)) for job in jobs)), PATIENCE_S)
    for events in ends:
        assert events[-1].WhichOneof("event") == "failed"
        assert events[-1].failed.code == "DEADLINE_EXCEEDED"
        assert "no inference replica for" in events[-1].failed.message
    listed = await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=gateway.auth())
    assert [job.state for job in listed.jobs] == [gateway_pb2.JOB_STATE_FAILED] * len(jobs)  # none left behind


async def test_a_replica_stopped_mid_job_hands_its_jobs_to_the_other(
    start_gateway: StartGateway, replicas: Callable[[], Awaitable[Replica]], tmp_path: Path
) -> None:
    tasks = [text_task("a windmill", steps=6, seed=10), *(text_task(f"a windmill {i}", seed=10 + i) for i in range(3))]
    expected = await reference_images(start_gateway, tmp_path, tasks)
    one, other = await replicas(), await replicas()
    target = f"{one.target},{other.target}"
    # A job that lost its replica pauses in the queue for at least half of retry_initial_s.
    gateway = await start_gateway(tmp_path / "gateway", inference_target=target, workers=4, retry_initial_s=0.5)
    pool = await gateway.app.pools.get(target)

    # Alone, the first job goes to the first replica (ties go to the first listed); the others spread
    # and wait in inference's queue behind it.
    first = await submit(gateway, tasks[0])
    first_events = watch(gateway, first.job_id)
    seen = []
    async for event in first_events:
        seen.append(event)
        if event.HasField("running"):
            break
    jobs = [first, *[await submit(gateway, task) for task in tasks[1:]]]
    await until(
        lambda: pool.replicas[one.target].in_flight == 2 and pool.replicas[other.target].in_flight == 2,
        "two jobs on each replica",
    )
    await one.stop()
    seen += await events_of(first_events)
    ends = await asyncio.gather(*(events_of(watch(gateway, job.job_id)) for job in jobs))
    assert [events[-1].WhichOneof("event") for events in ends] == ["succeeded"] * len(jobs)
    assert [events[-1].succeeded.images[0].data for events in ends] == expected
    assert list(kinds(seen)) == ["running", "queued", "running", "succeeded"]  # reran from the start
    assert pool.replicas[one.target].failures >= 1 and not pool.replicas[one.target].healthy

    # Back up, it is found by its probes (health rounds are 30 s apart in tests), not by traffic.
    await one.start()
    await until(lambda: pool.replicas[one.target].healthy, "the first replica marked up again")
    assert sample("inkloop_gateway_inference_replicas", target=target, health="up") == 2


async def test_a_full_inference_queue_is_backpressure_not_failure(
    start_gateway: StartGateway, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from inkloop_inference.server import InferenceApp
    from inkloop_inference.settings import InferenceSettings

    settings = InferenceSettings(
        model_path=tiny_model_dir, port=0, warmup=False, max_queue_delay_ms=0, max_batch_size=1, queue_capacity=1
    )
    app = InferenceApp(settings)
    running = await start_server(app, "127.0.0.1", 0)
    await app.start()
    await running.set_serving(True)
    try:
        gateway = await start_gateway(inference_target=f"127.0.0.1:{running.port}", workers=8)
        refused = sample("inkloop_gateway_inference_retries_total", code="RESOURCE_EXHAUSTED")
        jobs = await asyncio.gather(*(submit(gateway, text_task(f"a tin robot {i}", seed=i)) for i in range(8)))
        ends = await asyncio.gather(*(events_of(watch(gateway, job.job_id)) for job in jobs))
        assert [events[-1].WhichOneof("event") for events in ends] == ["succeeded"] * 8
        # Inference did refuse some of them for a while: they waited and tried again.
        assert sample("inkloop_gateway_inference_retries_total", code="RESOURCE_EXHAUSTED") > refused
    finally:
        await running.server.stop(0)
        await app.stop()
