"""What the client raises: a failed call (with the status's details), a failed job, a cancelled job."""

from __future__ import annotations

import grpc

from inkloop.client.results import Failure
from inkloop.rpc.status import field_violations, retry_delay_s


class InkloopClientError(Exception):
    """A call that did not succeed, after `attempts` tries.

    `code` is the gRPC status code name ("INVALID_ARGUMENT", "UNAVAILABLE", …); `field_violations`
    the (field, description) pairs of a BadRequest; `retry_delay_s` the server's RetryInfo, if any.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field_violations: tuple[tuple[str, str], ...] = (),
        retry_delay_s: float | None = None,
        job_id: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field_violations = field_violations
        self.retry_delay_s = retry_delay_s
        self.job_id = job_id
        self.attempts = attempts

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, *, attempts: int = 1) -> InkloopClientError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else "") or code.name
        return cls(
            code.name,
            details,
            field_violations=tuple(field_violations(error)),
            retry_delay_s=retry_delay_s(error),
            attempts=attempts,
        )


class JobFailedError(InkloopClientError):
    """The job ended FAILED; `failure` says why (its code, message, field and policy)."""

    def __init__(self, job_id: str, failure: Failure, *, attempts: int = 1) -> None:
        violations = ((failure.field, failure.message),) if failure.field else ()
        super().__init__(failure.code, failure.message, field_violations=violations, job_id=job_id, attempts=attempts)
        self.failure = failure


class JobCancelledError(InkloopClientError):
    """The job was cancelled (by `Client.cancel` or another caller) after `steps_completed` steps."""

    def __init__(self, job_id: str, steps_completed: int, *, attempts: int = 1) -> None:
        super().__init__("CANCELLED", "the job was cancelled", job_id=job_id, attempts=attempts)
        self.steps_completed = steps_completed
