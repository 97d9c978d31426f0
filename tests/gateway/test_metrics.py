"""The gateway's Prometheus metrics, read from this process's registry while a real gateway runs."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from inkloop.v1 import gateway_pb2

from .conftest import Gateway, finished, text_task


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _generate(gateway: Gateway, seed: int) -> gateway_pb2.JobEvent:
    request = gateway_pb2.SubmitJobRequest(task=text_task(seed=seed))
    job = (await gateway.jobs.SubmitJob(request, metadata=gateway.auth())).job
    return await finished(gateway, job.job_id)


async def test_jobs_are_counted_by_event_type_and_variant_and_timed_to_their_end(gateway: Gateway) -> None:
    variant = (await _generate(gateway, seed=1)).variant  # learns the variant; warms everything up
    types = ("requested", "queued", "started", "succeeded", "rejected")
    before = {kind: sample("inkloop_gateway_job_events_total", type=kind, variant=variant) for kind in types}
    timed = sample("inkloop_gateway_job_seconds_count", outcome="succeeded", variant=variant)
    running = sample("inkloop_gateway_jobs_running")

    end = await _generate(gateway, seed=2)
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.jobs.SubmitJob(gateway_pb2.SubmitJobRequest(task=text_task(width=65)), metadata=gateway.auth())

    assert end.WhichOneof("event") == "succeeded"
    after = {kind: sample("inkloop_gateway_job_events_total", type=kind, variant=variant) for kind in types}
    assert {kind: after[kind] - before[kind] for kind in types} == {
        "requested": 1,
        "queued": 1,
        "started": 1,
        "succeeded": 1,
        "rejected": 1,
    }
    assert sample("inkloop_gateway_job_seconds_count", outcome="succeeded", variant=variant) == timed + 1
    assert sample("inkloop_gateway_jobs_running") == running  # back where it was once the job ended
