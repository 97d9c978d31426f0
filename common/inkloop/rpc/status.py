"""Maps domain errors to gRPC statuses with google.rpc details, and reads them back on the client."""

from __future__ import annotations

import math

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from inkloop import errors


def code_for(error: BaseException) -> grpc.StatusCode:
    return grpc.StatusCode[error.grpc_code] if isinstance(error, errors.InkloopError) else grpc.StatusCode.INTERNAL


def to_status(error: BaseException) -> grpc.Status:
    """A grpc.Status for `error`, carrying BadRequest / QuotaFailure / RetryInfo details where they apply.

    Errors that are not domain errors become INTERNAL with a generic message: their text may hold
    internals (paths, SQL) that callers must not see; it goes to the log instead.
    """
    code = code_for(error)
    message = str(error) if code != grpc.StatusCode.INTERNAL else "internal error"
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        status.details.add().Pack(bad_request)
    if isinstance(error, errors.ResourceExhausted):
        if error.retry_after_s is not None:
            seconds = max(error.retry_after_s, 0.0)
            whole = math.floor(seconds)
            delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        if error.subject or error.quota:
            violation = error_details_pb2.QuotaFailure.Violation(subject=error.subject, description=error.quota)
            status.details.add().Pack(error_details_pb2.QuotaFailure(violations=[violation]))
    return rpc_status.to_status(status)


def field_violations(call: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a BadRequest detail in a failed call's status."""
    return [(v.field, v.description) for v in _details(call, error_details_pb2.BadRequest, "field_violations")]


def retry_delay_s(call: grpc.aio.AioRpcError | grpc.RpcError) -> float | None:
    """The RetryInfo delay of a failed call's status, in seconds, if the server sent one."""
    for status in _status_details(call):
        info = error_details_pb2.RetryInfo()
        if status.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def _status_details(call: grpc.aio.AioRpcError | grpc.RpcError) -> list:
    status = rpc_status.from_call(call) if not isinstance(call, grpc.aio.AioRpcError) else _from_aio(call)
    return list(status.details) if status is not None else []


def _details(call: grpc.aio.AioRpcError | grpc.RpcError, kind: type, attribute: str) -> list:
    found = []
    for detail in _status_details(call):
        message = kind()
        if detail.Unpack(message):
            found.extend(getattr(message, attribute))
    return found


def _from_aio(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == rpc_status.GRPC_DETAILS_METADATA_KEY:
            parsed = status_pb2.Status.FromString(value)
            return parsed
    return None


def domain_error(call: grpc.aio.AioRpcError | grpc.RpcError, upstream: str) -> errors.InkloopError:
    """The domain error that a failed call to the `upstream` service stands for, details kept.

    A relaying service re-raises it, so its caller sees the same status, fields and retry delay; a
    status that says nothing the caller can act on (INTERNAL, UNKNOWN, connection trouble) becomes
    UNAVAILABLE naming the upstream, never its internals.
    """
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message = (call.details() if hasattr(call, "details") else "") or code.name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = [errors.FieldViolation(f, d) for f, d in field_violations(call)]
        return errors.InvalidArgument.of(violations or [errors.FieldViolation("request", message)])
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(message, retry_after_s=retry_delay_s(call))
    kind = next((kind for kind in errors.KINDS if kind.grpc_code == code.name and kind is not errors.Unavailable), None)
    if kind is None:
        return errors.Unavailable(f"{upstream} is unavailable ({code.name})")
    return kind(message)
