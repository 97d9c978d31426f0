"""The browser's bridge onto the jobs domain: HTTP/JSON in, the very `JobService` calls gRPC makes.

`POST /v1/jobs` takes a SubmitJobRequest as protobuf JSON, `GET /v1/jobs/<id>/events` streams the
job's JobEvents as server-sent events (images without bytes: the page loads them by signed URL) and
`POST /v1/jobs/<id>:cancel` cancels. Errors become an HTTP status and a JSON body
`{code, message, field, retry_after_s, policy}` in `json_errors`, as the interceptor does for gRPC.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from inkloop import errors
from inkloop.v1 import gateway_pb2
from inkloop_gateway import protocol
from inkloop_gateway.auth import Principal, authenticate_header
from inkloop_gateway.jobs import Job
from inkloop_gateway.keys import KeyStore, Role
from inkloop_gateway.redis_client import OUTAGE_ERRORS, OUTAGE_MESSAGE
from inkloop_gateway.safety import PolicyViolation
from inkloop_gateway.service import JobService

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 24 * 1024 * 1024  # inpaint/outpaint bodies carry base64 images

# Error kind -> (HTTP status, code); the first match wins, so subclasses come before their bases.
ERROR_STATUS: tuple[tuple[type[errors.InkloopError], int, str], ...] = (
    (PolicyViolation, 422, "FAILED_PRECONDITION"),
    (errors.InvalidArgument, 400, "INVALID_ARGUMENT"),
    (errors.Unauthenticated, 401, "UNAUTHENTICATED"),
    (errors.PermissionDenied, 403, "PERMISSION_DENIED"),
    (errors.NotFound, 404, "NOT_FOUND"),
    (errors.AlreadyExists, 409, "ALREADY_EXISTS"),
    (errors.FailedPrecondition, 409, "FAILED_PRECONDITION"),
    (errors.ResourceExhausted, 429, "RESOURCE_EXHAUSTED"),
    (errors.Cancelled, 499, "CANCELLED"),
    (errors.Unavailable, 503, "UNAVAILABLE"),
    (errors.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"),
)


def error_body(error: Exception) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of an error; anything unexpected is a 500 that reveals nothing."""
    body: dict[str, Any] = {"code": "INTERNAL", "message": "internal error", "field": "", "policy": ""}
    status = 500
    if isinstance(error, json_format.ParseError | json.JSONDecodeError | UnicodeDecodeError):
        return 400, {**body, "code": "INVALID_ARGUMENT", "message": f"malformed request body: {error}"}
    for kind, kind_status, code in ERROR_STATUS:
        if isinstance(error, kind):
            status, body["code"], body["message"] = kind_status, code, str(error)
            break
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


def _strip_image_bytes(event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
    for image in event.succeeded.images:
        image.data = b""
    return event


class JobsBridge:
    """`/v1/jobs` routes; every operation is one `JobService` call, like the gRPC servicer's."""

    def __init__(self, keys: KeyStore, jobs: JobService) -> None:
        self.keys = keys
        self.jobs = jobs

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/jobs", self.submit),
            web.get("/v1/jobs/{job_id}", self.get),
            web.get("/v1/jobs/{job_id}/events", self.events),
            web.post("/v1/jobs/{job_id}:cancel", self.cancel),
        ]

    async def submit(self, request: web.Request) -> web.Response:
        principal = await principal_of(self.keys, request)
        message = gateway_pb2.SubmitJobRequest()
        await read_message(request, message)
        job = await self.jobs.submit(principal, message.request_id, message.task, message.user_id)
        return web.json_response(to_json(gateway_pb2.SubmitJobResponse(job=await self._job(job))))

    async def get(self, request: web.Request) -> web.Response:
        job = await self.jobs.get(await principal_of(self.keys, request), request.match_info["job_id"])
        return web.json_response(to_json(gateway_pb2.GetJobResponse(job=await self._job(job))))

    async def cancel(self, request: web.Request) -> web.Response:
        job = await self.jobs.cancel(await principal_of(self.keys, request), request.match_info["job_id"])
        return web.json_response(to_json(gateway_pb2.CancelJobResponse(job=await self._job(job))))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events, one `data:` line of JobEvent JSON each, until the job ends."""
        stream = self.jobs.watch(await principal_of(self.keys, request), request.match_info["job_id"])
        response: web.StreamResponse | None = None
        try:
            async for event in stream:
                if response is None:  # errors before the first event still become JSON responses
                    response = web.StreamResponse(
                        headers={
                            "Content-Type": "text/event-stream",
                            "Cache-Control": "no-cache",
                            "X-Accel-Buffering": "no",
                        }
                    )
                    await response.prepare(request)
                data = json.dumps(to_json(_strip_image_bytes(event)), separators=(",", ":"))
                await response.write(f"event: job\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            log.debug("event stream closed by the browser")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if response is None:
            raise errors.NotFound("job not found")
        await response.write_eof()
        return response

    async def _job(self, job: Job) -> gateway_pb2.Job:
        return protocol.job_to_pb(
            job,
            queue_position=await self.jobs.position(job),
            result=await self.jobs.result(job, include_images=False),
        )


class PageConfig:
    """`GET /v1/web/config`: the page's key (if one is configured) and the served model's choices.

    The page offers the model's own sizes, steps and CFG, so a tiny development model answers in
    seconds and real weights keep Qwen-Image's recommended sizes. While inference cannot say, `model`
    is null and the page sends zeros, which mean the model's defaults.
    """

    def __init__(self, api_key: str, jobs: JobService) -> None:
        self.api_key = api_key
        self.jobs = jobs

    async def get(self, _request: web.Request) -> web.Response:
        try:
            info = await self.jobs.main_model_info()
        except errors.Unavailable:
            model = None
        else:
            model = {
                "modelId": info.model_id,
                "sizes": [
                    {"width": size.width, "height": size.height, "aspectRatio": size.aspect_ratio}
                    for size in info.defaults.sizes
                ],
                "steps": info.defaults.steps,
                "trueCfgScale": round(info.defaults.true_cfg_scale, 3),
                "minSteps": info.limits.min_steps,
                "maxSteps": info.limits.max_steps,
            }
        return web.json_response({"api_key": self.api_key, "model": model}, headers={"Cache-Control": "no-store"})


def page_key(keys: KeyStore, path: Path | None) -> str:
    """The key the page may use without asking: only a user-role key (never analyst or admin)."""
    if path is None:
        return ""
    secret = path.read_text(encoding="utf-8").strip()
    key = keys.authenticate(secret)
    if key.role != Role.USER:
        log.warning("web_page_key_file holds a %s key; the page will ask for a key instead", key.role.value)
        return ""
    return secret
