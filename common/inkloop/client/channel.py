"""What the sync and async clients share about calls: channel options, metadata, request ids."""

from __future__ import annotations

import uuid

from inkloop.client.errors import InkloopClientError
from inkloop.client.results import Job

#: Added to the shared channel defaults. The client retries by itself, so it reconnects soon after the
#: gateway is back (not after gRPC's own 1 s…120 s backoff), and gRPC's retries (blind to RetryInfo) are off.
CLIENT_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.primary_user_agent", "inkloop-client"),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
]


class StreamEnded(Exception):
    """A job's stream closed before its terminal event (a draining gateway): it is followed again."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def metadata(api_key: str, request_id: str = "") -> tuple[tuple[str, str], ...]:
    """The API key, and the request id as `x-request-id` so the gateway's logs carry it."""
    auth = (("authorization", f"Bearer {api_key}"),)
    return (*auth, ("x-request-id", request_id)) if request_id else auth


def stream_ended(attempts: int) -> InkloopClientError:
    return InkloopClientError("UNAVAILABLE", "the stream ended without a result", attempts=attempts)


def no_images(job: Job) -> InkloopClientError:
    return InkloopClientError("FAILED_PRECONDITION", f"job {job.job_id} is {job.state}: it has no images")
