"""One trace per generation across the services: the client's `traceparent` continues into the
gateway's call and admission, the job's queue wait and run, the inference call and its stages, with
the right parents (OpenTelemetry SDK, in-memory exporter)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inkloop.v1 import gateway_pb2

from .conftest import Gateway, Receiver, StartGateway, finished, text_task

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first test of this process to trace installs it
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


def _one(spans: list[ReadableSpan], name: str, kind: trace.SpanKind | None = None) -> ReadableSpan:
    found = [s for s in spans if s.name == name and (kind is None or s.kind == kind)]
    assert len(found) == 1, (name, sorted((s.name, s.kind.name) for s in spans))
    return found[0]


def _parent(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and parent.context is not None and child.parent.span_id == parent.context.span_id


async def test_a_generation_is_one_trace_from_the_client_to_the_denoising_loop(
    gateway: Gateway, spans: InMemorySpanExporter
) -> None:
    metadata = (*gateway.auth(), ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"))
    reply = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a traced kite", seed=5)), metadata=metadata
    )
    await finished(gateway, reply.job.job_id)
    mine = [s for s in spans.get_finished_spans() if s.context is not None and f"{s.context.trace_id:032x}" == TRACE_ID]

    submit = _one(mine, "/inkloop.v1.GatewayService/SubmitJob", trace.SpanKind.SERVER)
    admission = _one(mine, "admission")
    job = _one(mine, "job")
    queue_wait = _one(mine, "queue wait")
    call = _one(mine, "/inkloop.v1.InferenceService/TextToImage", trace.SpanKind.CLIENT)
    served = _one(mine, "/inkloop.v1.InferenceService/TextToImage", trace.SpanKind.SERVER)
    stages = {name: _one(mine, name) for name in ("batch wait", "text encode", "denoise", "decode")}

    assert submit.parent is not None and submit.parent.span_id == 0x00F067AA0BA902B7  # the client's span
    assert _parent(admission, submit) and _parent(job, submit)
    assert _parent(queue_wait, job) and _parent(call, job) and _parent(served, call)
    assert all(_parent(stage, served) for stage in stages.values())
    assert served.start_time is not None and stages["denoise"].end_time is not None
    assert stages["text encode"].end_time == stages["denoise"].start_time  # consecutive stages
    assert job.attributes is not None and job.attributes["job_id"] == reply.job.job_id


async def test_a_webhook_delivery_continues_the_jobs_trace(
    start_gateway: StartGateway, receiver: Receiver, spans: InMemorySpanExporter
) -> None:
    gateway = await start_gateway(webhook_allowed_hosts=["127.0.0.1"])
    metadata = (*gateway.auth(), ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"))
    reply = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a traced kite", seed=6), webhook_url=receiver.url),
        metadata=metadata,
    )
    await finished(gateway, reply.job.job_id)
    for _ in range(100):
        if receiver.received:
            break
        await asyncio.sleep(0.1)
    [(_path, headers, _body)] = receiver.received
    assert headers["traceparent"].split("-")[1] == TRACE_ID
