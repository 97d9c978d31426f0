"""Traces across the mesh with OpenTelemetry: W3C `traceparent` on every hop, spans where time goes.

Every gRPC server and client of inkloop carries the OpenTelemetry gRPC instrumentation (so a call's
`traceparent` metadata continues the caller's trace), the gateway's HTTP port continues a browser's or
client's `traceparent` header, and a job keeps the trace context it was submitted in, so the queue
wait, the inference call and the webhook delivery of a job are one trace with its submission.
Exported by OTLP/gRPC when `otlp-endpoint` is set; otherwise the API's no-op tracer makes every span
free. Tests install their own provider (an in-memory exporter) before starting services.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace

TRACER_NAME = "inkloop"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def configure_tracing(service: str, otlp_endpoint: str) -> None:
    """Exports this process's spans to `otlp_endpoint` (e.g. http://otel-collector:4317); "" = off."""
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"inkloop-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)


def current_context_carrier() -> str:
    """The active trace context as a `traceparent` value to keep with work done later ("" = none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_of(traceparent: str) -> context.Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})


def inject_headers(headers: dict[str, str], traceparent: str = "") -> None:
    """`traceparent` (and `tracestate`) of the given context, else of the active one, into `headers`."""
    propagate.inject(headers, context=context_of(traceparent) if traceparent else None)


@contextmanager
def span_in(traceparent: str, name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span continuing the trace kept as `traceparent`, current for the block."""
    with tracer().start_as_current_span(name, context=context_of(traceparent), attributes=attributes) as span:
        yield span


@contextmanager
def server_span(name: str, headers: Mapping[str, str], **attributes: Any) -> Iterator[trace.Span]:
    """A server span continuing the caller's `traceparent` header."""
    parent = propagate.extract(dict(headers))
    with tracer().start_as_current_span(
        name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def record_past(name: str, start_unix_s: float, end_unix_s: float, **attributes: Any) -> None:
    """A finished span of the current trace, for time measured elsewhere (a queue wait, a batch stage)."""
    span = tracer().start_span(name, start_time=int(start_unix_s * 1e9), attributes=attributes)
    span.end(end_time=int(end_unix_s * 1e9))


def record_stages(stages: Sequence[tuple[str, float]], *, ended_at: float | None = None, **attributes: Any) -> None:
    """Consecutive stages (name, seconds) that ended at `ended_at` (default now), as child spans."""
    end = time.time() if ended_at is None else ended_at
    start = end - sum(seconds for _, seconds in stages)
    for name, seconds in stages:
        record_past(name, start, start + seconds, **attributes)
        start += seconds
