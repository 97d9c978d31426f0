"""JSON over HTTP, for every route of the gateway's HTTP port: bodies as protobuf JSON, the caller's key,
and errors as an HTTP status with a JSON body `{code, message, field, violations, retry_after_s, policy}`.

The status is the one each domain error names (`inkloop.errors`, the table gRPC's interceptor reads
too); the code is its gRPC status name, so a client handles both transports alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from inkloop import errors
from inkloop_gateway.admission.auth import Principal, authenticate_header
from inkloop_gateway.admission.keys import KeyStore, Role
from inkloop_gateway.admission.safety import PolicyViolation
from inkloop_gateway.redis_client import OUTAGE_ERRORS, OUTAGE_MESSAGE

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 24 * 1024 * 1024  # inpaint/outpaint bodies carry base64 images


def error_body(error: Exception) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of an error; anything unexpected is a 500 that reveals nothing."""
    body: dict[str, Any] = {"code": "INTERNAL", "message": "internal error", "field": "", "policy": ""}
    status = 500
    if isinstance(error, json_format.ParseError | json.JSONDecodeError | UnicodeDecodeError):
        return 400, {**body, "code": "INVALID_ARGUMENT", "message": f"malformed request body: {error}"}
    if isinstance(error, errors.InkloopError):
        status, body["code"], body["message"] = error.http_status, error.grpc_code, str(error)
    if isinstance(error, errors.InvalidArgument):
        body["field"] = error.violations[0].field
        body["violations"] = [{"field": v.field, "description": v.description} for v in error.violations]
    if isinstance(error, PolicyViolation):
        body["policy"] = error.policy
    if isinstance(error, errors.ResourceExhausted) and error.retry_after_s is not None:
        body["retry_after_s"] = error.retry_after_s
    return status, body


def error_response(error: Exception) -> web.Response:
    status, body = error_body(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if "retry_after_s" in body:
        headers["Retry-After"] = str(max(1, round(body["retry_after_s"])))
    elif status == 503:
        headers["Retry-After"] = "2"
    return web.json_response(body, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors (and malformed JSON) of the bridge's routes as JSON error responses."""
    try:
        return await handler(request)
    except (errors.InkloopError, json_format.ParseError, json.JSONDecodeError, UnicodeDecodeError) as error:
        return error_response(error)
    except OUTAGE_ERRORS:  # as StoreOutageInterceptor does for gRPC: a 503 to retry, not a 500
        return error_response(errors.Unavailable(OUTAGE_MESSAGE))


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


async def read_message(request: web.Request, message: Message) -> None:
    """Parses the body (protobuf JSON) into `message`; unknown fields are an error, as in the proto."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise errors.InvalidArgument("body", f"larger than {MAX_JSON_BYTES} bytes")
    text = await request.text()
    try:
        body = json.loads(text or "{}")
    except RecursionError:
        raise errors.InvalidArgument("body", "nested too deeply") from None
    if not isinstance(body, dict):  # ParseDict raises TypeError on a bare number, string or null
        raise errors.InvalidArgument("body", "must be a JSON object")
    json_format.ParseDict(body, message)


async def principal_of(keys: KeyStore, request: web.Request, role: Role = Role.USER) -> Principal:
    return await authenticate_header(keys, request.headers.get("Authorization"), required=role)
