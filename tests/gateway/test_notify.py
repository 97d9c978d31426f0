"""Change notifications across replicas (Redis pub/sub): watchers, idle workers and cancellations learn of
another replica's changes at once. Polling is set to 5 s here, so only a notification explains a quick update."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from inkloop.v1 import gateway_pb2
from inkloop_gateway.jobs.notify import ChangeRelay
from inkloop_gateway.jobs.store import Job, JobState
from inkloop_gateway.jobs.watch import Hub

from .conftest import Gateway, StartGateway, dead_address, text_task

SLOW_POLLING = {"poll_interval_s": 5.0, "notified_poll_interval_s": 5.0}
#: Far below the 5 s polls: what a notified update must take at most, even on a loaded test machine.
PROMPT_S = 2.0


async def _until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _two_replicas(start_gateway: StartGateway, tmp_path: Path, redis_url: str) -> tuple[Gateway, Gateway]:
    """Replicas A and B with one worker each, polling every 5 s, their change relays subscribed."""
    shared = {"redis_url": redis_url, "image_dir": tmp_path / "images", "workers": 1, **SLOW_POLLING}
    a = await start_gateway(tmp_path / "a", **shared)
    b = await start_gateway(tmp_path / "b", **shared)
    relays = [a.app.changes, b.app.changes]
    await _until(lambda: all(relay is not None and relay.subscribed for relay in relays))
    return a, b


async def _submit(gateway: Gateway, steps: int, seed: int = 1, size: int = 256) -> gateway_pb2.Job:
    request = gateway_pb2.SubmitJobRequest(task=text_task(width=size, height=size, steps=steps, seed=seed))
    return (await gateway.jobs.SubmitJob(request, metadata=gateway.auth())).job


async def _claimed_by_b(a: Gateway, b: Gateway) -> float:
    """Keeps A's only worker busy, queues a job through A, and returns the seconds until idle B ran it."""
    busy = await _submit(a, steps=100, size=512)
    assert busy.state == gateway_pb2.JOB_STATE_RUNNING  # started on A at submission
    submitted = time.monotonic()
    queued = await _submit(a, steps=2, seed=2)
    assert queued.state == gateway_pb2.JOB_STATE_QUEUED
    while (stored := await a.app.store.get(queued.job_id)).state == JobState.QUEUED:
        assert time.monotonic() - submitted < 10, "nobody started the queued job"
        await asyncio.sleep(0.01)
    waited = time.monotonic() - submitted
    assert stored.owner == b.app.dispatcher.settings.owner
    await a.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=busy.job_id), metadata=a.auth())
    return waited


async def _arrivals(gateway: Gateway, job_id: str) -> list[tuple[str, int, float]]:
    """(event, step, when it arrived) of each event of a watcher of the job on `gateway`."""
    watch = gateway.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), metadata=gateway.auth())
    return [(event.WhichOneof("event") or "", event.running.step, time.monotonic()) async for event in watch]


def _latencies(local: list[tuple[str, int, float]], remote: list[tuple[str, int, float]]) -> list[float]:
    """For each remote event, the seconds since the local watcher (which sees every step) had reached it."""
    return [
        at - min(seen for kind_seen, step_seen, seen in local if kind_seen == kind and step_seen >= step)
        for kind, step, at in remote
    ]


async def test_watcher_on_another_replica_sees_steps_and_the_end_at_once(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    a, b = await _two_replicas(start_gateway, tmp_path, redis_url)
    job = await _submit(a, steps=80)
    assert job.state == gateway_pb2.JOB_STATE_RUNNING and job.job_id in a.app.dispatcher._running
    local, remote = await asyncio.gather(_arrivals(a, job.job_id), _arrivals(b, job.job_id))
    kinds = [kind for kind, _step, _at in remote]
    steps = [step for kind, step, _at in remote if kind == "running"]
    assert kinds[-1] == "succeeded" and set(kinds[:-1]) == {"running"}
    assert len(steps) >= 2 and steps == sorted(set(steps))  # progress as A persists it (every 0.5 s)
    # Each step within A's persist interval plus the notification; with 5 s polls most would be seconds late.
    assert max(_latencies(local, remote)) < PROMPT_S


async def test_every_step_reaches_watchers_on_another_replica_without_store_writes(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    a, b = await _two_replicas(start_gateway, tmp_path, redis_url)
    a.app.dispatcher.settings.progress_persist_s = 60.0  # the store gets no progress while the job runs
    job = await _submit(a, steps=40)
    local, remote = await asyncio.gather(_arrivals(a, job.job_id), _arrivals(b, job.job_id))
    steps = [step for kind, step, _at in remote if kind == "running"]
    assert len(steps) >= 10 and steps == sorted(set(steps))  # announced steps, in order, never repeated
    assert max(_latencies(local, remote)) < PROMPT_S


async def test_idle_replica_starts_a_job_queued_through_a_busy_one_at_once(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    a, b = await _two_replicas(start_gateway, tmp_path, redis_url)
    assert await _claimed_by_b(a, b) < PROMPT_S


async def test_notifications_resume_after_the_subscriber_connection_is_killed(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    a, b = await _two_replicas(start_gateway, tmp_path, redis_url)
    relays = [gateway.app.changes for gateway in (a, b)]
    assert relays[0] is not None and relays[1] is not None
    before = [relay.subscriptions for relay in relays]
    async with aioredis.Redis.from_url(redis_url) as admin:
        assert await admin.client_kill_filter(_type="pubsub") == 2
    await _until(lambda: all(r.subscriptions > n and r.subscribed for r, n in zip(relays, before, strict=True)))
    assert all(gateway.app.ready for gateway in (a, b))
    assert await _claimed_by_b(a, b) < PROMPT_S


async def test_cancel_through_another_replica_stops_the_job_at_once(
    start_gateway: StartGateway, tmp_path: Path, redis_url: str
) -> None:
    a, b = await _two_replicas(start_gateway, tmp_path, redis_url)
    job = await _submit(a, steps=100, size=512)
    assert job.job_id in a.app.dispatcher._running
    watch = b.jobs.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=b.auth())
    async for event in watch:
        if event.running.step > 0:
            break
    asked = time.monotonic()
    reply = await b.jobs.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=b.auth())
    assert reply.job.state in (gateway_pb2.JOB_STATE_RUNNING, gateway_pb2.JOB_STATE_CANCELLED)
    last = [event async for event in watch][-1]
    # A learns of the request from its notification, not its 5 s heartbeat.
    assert last.WhichOneof("event") == "cancelled" and last.cancelled.steps_completed > 0
    assert time.monotonic() - asked < PROMPT_S


class _Claims:
    def __init__(self) -> None:
        self.woken = 0
        self.cancelled: list[str] = []

    def wake(self) -> None:
        self.woken += 1

    def cancel_local(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return True


async def test_relay_maps_each_change_and_takes_up_the_longer_poll_interval_while_subscribed(redis_url: str) -> None:
    hub, claims = Hub(), _Claims()
    relay = ChangeRelay(redis_url, hub, claims, notified_poll_interval_s=7.0, ping_interval_s=0.05)
    assert hub.poll_interval_s(0.2) == 0.2
    await relay.start()
    try:
        await _until(lambda: relay.subscribed)
        assert hub.poll_interval_s(0.2) == 7.0 and claims.woken == 1  # the catch-up look at the queue
        with hub.subscribe("job_x") as watched, hub.subscribe("job_other") as other:
            async with aioredis.Redis.from_url(redis_url) as client:
                await client.publish(relay.channel, "changed job_x")
                await _until(watched.is_set)
                assert not other.is_set() and claims.woken == 1
                watched.clear()
                await client.publish(relay.channel, "submitted job_y")
                await _until(lambda: claims.woken == 2)
                await client.publish(relay.channel, "dequeued job_y")  # queue positions moved: everyone
                await _until(lambda: watched.is_set() and other.is_set())
                await client.publish(relay.channel, "cancelling job_x")
                await _until(lambda: claims.cancelled == ["job_x"])
                watched.clear()
                await client.publish(relay.channel, "step job_x 3/8")  # a step announced by the job's replica
                await _until(watched.is_set)
                running = Job("job_x", "acme", "r", "u", "k", 1, b"", "default", "t", state=JobState.RUNNING, step=1)
                assert (hub.current(running).step, hub.current(running).total_steps) == (3, 8)
                await client.publish(relay.channel, "step job_x 2/8")  # late: never a step back
                await client.publish(relay.channel, "step job_x bad")  # malformed: ignored
                await client.publish(relay.channel, "requeued job_x")  # a new run counts from 1 again
                await _until(lambda: hub.current(running).step == 1)
        await asyncio.sleep(0.3)  # quiet: answered pings keep the subscription
        assert relay.subscribed and relay.subscriptions == 1
    finally:
        await relay.stop()
    assert hub.poll_interval_s(0.2) == 0.2


async def test_relay_without_redis_keeps_retrying_and_the_short_poll_interval() -> None:
    hub, claims = Hub(), _Claims()
    dead = f"redis://{dead_address()}/0"
    relay = ChangeRelay(dead, hub, claims, notified_poll_interval_s=7.0, backoff_s=(0.01, 0.05))
    await relay.start()
    await asyncio.sleep(0.3)
    assert relay._task is not None and not relay._task.done()  # it has not given up, nor crashed
    assert not relay.subscribed and relay.subscriptions == 0 and hub.poll_interval_s(0.2) == 0.2
    await relay.stop()
    assert relay._task is None


async def test_relay_reconnects_when_the_connection_goes_silent(redis_url: str) -> None:
    hub, claims = Hub(), _Claims()
    relay = ChangeRelay(redis_url, hub, claims, notified_poll_interval_s=7.0, ping_interval_s=0.1)
    await relay.start()
    try:
        await _until(lambda: relay.subscribed)
        async with aioredis.Redis.from_url(redis_url) as admin:
            await admin.client_pause(1000)  # its pings go unanswered for a second: a dead link, as far as it knows
        await _until(lambda: not relay.subscribed, within_s=1.0)
        assert hub.poll_interval_s(0.2) == 0.2  # polling at the short interval meanwhile
        assert REGISTRY.get_sample_value("inkloop_gateway_change_relay_subscribed") == 0
        await _until(lambda: relay.subscribed and relay.subscriptions >= 2)
        assert REGISTRY.get_sample_value("inkloop_gateway_change_relay_subscribed") == 1
    finally:
        await relay.stop()
