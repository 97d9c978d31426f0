"""The gateway's own Prometheus metrics; every service's gRPC metrics are in `inkloop.metrics`.

Job figures come from the back-end events (each step of a job's life is one), so the dashboards and
the analytics tables count the same things; their `latency_s` (seconds since acceptance) gives the
time to each end.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from inkloop.v1 import analytics_pb2

JOB_EVENTS = Counter(
    "inkloop_gateway_job_events_total",
    "Steps of jobs' lives (requested, rejected, rejected_by_policy, queued, cache_hit, started, succeeded, "
    "failed, cancelled, downloaded), by type and model variant.",
    ["type", "variant"],
)
JOB_SECONDS = Histogram(
    "inkloop_gateway_job_seconds",
    "Seconds from a job's acceptance to its end, by outcome and model variant.",
    ["outcome", "variant"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 600),
)
JOBS_RUNNING = Gauge("inkloop_gateway_jobs_running", "Jobs this replica runs on inference now.")
JOBS_WAITING = Gauge(
    "inkloop_gateway_jobs_waiting",
    "Jobs this replica holds back in the queue until inference can take them, by reason: no_replica (no "
    "healthy inference replica) or busy (inference answered RESOURCE_EXHAUSTED).",
    ["reason"],
)
INFERENCE_RETRIES = Counter(
    "inkloop_gateway_inference_retries_total",
    "Calls to inference that ended in a status the job tries again after (UNAVAILABLE, RESOURCE_EXHAUSTED, "
    "CANCELLED by the server), by status.",
    ["code"],
)
INFERENCE_REPLICAS = Gauge(
    "inkloop_gateway_inference_replicas",
    "Inference replicas behind each target, by health: up (takes jobs) or down (probed until it answers).",
    ["target", "health"],
)
KEPT_IMAGE_BYTES = Gauge(
    "inkloop_gateway_kept_image_bytes",
    "Image bytes of recent results this replica keeps in memory for its watchers (at most 16 MiB).",
)
EVENTS_SENT = Counter("inkloop_gateway_events_sent_total", "Back-end events analytics acknowledged.")
EVENTS_SPOOLED = Counter(
    "inkloop_gateway_events_spooled_total", "Back-end events written to the spool because analytics did not take them."
)
CHANGE_RELAY_SUBSCRIBED = Gauge(
    "inkloop_gateway_change_relay_subscribed",
    "1 while this replica receives the other replicas' job changes (Redis pub/sub), else 0.",
)

_ENDS = {
    analytics_pb2.BACKEND_EVENT_TYPE_SUCCEEDED,
    analytics_pb2.BACKEND_EVENT_TYPE_FAILED,
    analytics_pb2.BACKEND_EVENT_TYPE_CANCELLED,
}


@cache
def _type_name(event_type: int) -> str:
    return analytics_pb2.BackendEventType.Name(event_type).removeprefix("BACKEND_EVENT_TYPE_").lower()


# The labelled children, found once per (type, variant): `labels()` costs more than the increment.
@cache
def _counter(event_type: int, variant: str) -> Any:
    return JOB_EVENTS.labels(_type_name(event_type), variant)


@cache
def _timer(event_type: int, variant: str) -> Any:
    return JOB_SECONDS.labels(_type_name(event_type), variant)


def count_event(event: analytics_pb2.BackendEvent) -> None:
    """Counts one back-end event, and the duration of the job it ends."""
    _counter(event.type, event.variant).inc()
    if event.type in _ENDS:
        _timer(event.type, event.variant).observe(event.latency_s)


WEBHOOK_ATTEMPTS = Counter(
    "inkloop_gateway_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered (2xx), failed (anything else; retried on schedule), "
    "skipped (the endpoint does not want the outcome or is gone).",
    ["outcome"],
)
