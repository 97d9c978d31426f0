"""Domain errors. Domain code raises these; one server interceptor maps each kind to a gRPC status.

Domain modules never import grpc: they raise one of these, and `inkloop.rpc.interceptors` turns it into
the right status code with google.rpc details (BadRequest, QuotaFailure, RetryInfo).
"""

from __future__ import annotations

from dataclasses import dataclass


class InkloopError(Exception):
    """Base class of every error that has a well-defined gRPC status."""


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(InkloopError):
    """The request is malformed; maps to INVALID_ARGUMENT with a google.rpc.BadRequest naming each field."""

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations = (FieldViolation(field, description), *more)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def of(cls, violations: list[FieldViolation]) -> InvalidArgument:
        first, *rest = violations
        return cls(first.field, first.description, *rest)


class Unauthenticated(InkloopError):
    """No credentials, or credentials that match no key; maps to UNAUTHENTICATED."""


class PermissionDenied(InkloopError):
    """Authenticated, but the role does not allow the call; maps to PERMISSION_DENIED."""


class NotFound(InkloopError):
    """The resource does not exist for this caller (also used across tenants); maps to NOT_FOUND."""


class AlreadyExists(InkloopError):
    """Maps to ALREADY_EXISTS."""


class FailedPrecondition(InkloopError):
    """The system is not in a state to do this (e.g. cancelling a finished job); maps to FAILED_PRECONDITION."""


class ResourceExhausted(InkloopError):
    """A limit was hit (queue full, rate limit, out of GPU memory); maps to RESOURCE_EXHAUSTED.

    `retry_after_s` becomes a google.rpc.RetryInfo; `subject` and `quota` a google.rpc.QuotaFailure.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None, subject: str = "", quota: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.subject = subject
        self.quota = quota


class Unavailable(InkloopError):
    """A dependency is down or the service is draining; maps to UNAVAILABLE (safe to retry)."""


class Cancelled(InkloopError):
    """The work was cancelled by its caller; maps to CANCELLED."""


class DeadlineExceeded(InkloopError):
    """The caller's deadline passed before the work finished; maps to DEADLINE_EXCEEDED."""
