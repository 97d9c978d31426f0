"""The browser's bridge onto the jobs domain: HTTP/JSON in, the very `JobService` calls gRPC makes.

`POST /v1/jobs` takes a SubmitJobRequest as protobuf JSON, `GET /v1/jobs/<id>/events` streams the
job's JobEvents as server-sent events (images without bytes: the page loads them by signed URL) and
`POST /v1/jobs/<id>:cancel` cancels; errors are answered by `http_json.json_errors`. `/v1/web/config`
gives the page its key (if one is configured) and the served model's choices.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aiohttp import web

from inkloop import errors
from inkloop.v1 import common_pb2, gateway_pb2
from inkloop_gateway.admission.keys import KeyStore, Role
from inkloop_gateway.api import protocol
from inkloop_gateway.api.http_json import principal_of, read_message, to_json
from inkloop_gateway.jobs.service import JobService
from inkloop_gateway.jobs.store import Job

log = logging.getLogger(__name__)


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
        job = await protocol.submit(self.jobs, principal, message)
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
                "edits": common_pb2.GENERATION_KIND_EDIT in info.kinds,
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
