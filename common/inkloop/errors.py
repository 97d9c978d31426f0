"""Domain errors. Domain code raises these; each kind names its gRPC status and its HTTP status.

Domain modules never import grpc: they raise one of these, and `inkloop.rpc.interceptors` turns it into
the right status code with google.rpc details (BadRequest, QuotaFailure, RetryInfo); the gateway's HTTP
endpoints answer with `http_status`. The two class attributes are the one table of both mappings (as
google-api-core's exceptions carry `grpc_status_code` and `code`); a subclass may refine the HTTP status
alone (the gateway's content-policy refusal is a 422, still FAILED_PRECONDITION on gRPC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class InkloopError(Exception):
    """Base class of every error that has a well-defined status; anything else is INTERNAL / 500."""

    #: The name of its `grpc.StatusCode`.
    grpc_code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(InkloopError):
    """The request is malformed; carries a google.rpc.BadRequest naming each field."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 400

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations = (FieldViolation(field, description), *more)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def of(cls, violations: list[FieldViolation]) -> InvalidArgument:
        first, *rest = violations
        return cls(first.field, first.description, *rest)


class Unauthenticated(InkloopError):
    """No credentials, or credentials that match no key."""

    grpc_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(InkloopError):
    """Authenticated, but the role does not allow the call."""

    grpc_code = "PERMISSION_DENIED"
    http_status = 403


class NotFound(InkloopError):
    """The resource does not exist for this caller (also used across tenants)."""

    grpc_code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(InkloopError):
    grpc_code = "ALREADY_EXISTS"
    http_status = 409


class FailedPrecondition(InkloopError):
    """The system is not in a state to do this (e.g. cancelling a finished job)."""

    grpc_code = "FAILED_PRECONDITION"
    http_status = 409


class ResourceExhausted(InkloopError):
    """A limit was hit (queue full, rate limit, out of GPU memory).

    `retry_after_s` becomes a google.rpc.RetryInfo (and HTTP `Retry-After`); `subject` and `quota` a
    google.rpc.QuotaFailure.
    """

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: float | None = None, subject: str = "", quota: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.subject = subject
        self.quota = quota


class Unavailable(InkloopError):
    """A dependency is down or the service is draining (safe to retry)."""

    grpc_code = "UNAVAILABLE"
    http_status = 503


class Cancelled(InkloopError):
    """The work was cancelled by its caller."""

    grpc_code = "CANCELLED"
    http_status = 499  # nginx's "client closed request": no standard status says it


class DeadlineExceeded(InkloopError):
    """The caller's deadline passed before the work finished."""

    grpc_code = "DEADLINE_EXCEEDED"
    http_status = 504


#: Every kind with its own gRPC status, for reading a status back into the error it stands for.
KINDS: tuple[type[InkloopError], ...] = (
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Cancelled,
    DeadlineExceeded,
)
