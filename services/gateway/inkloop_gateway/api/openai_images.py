"""OpenAI-compatible Images API on the gateway's HTTP port: what SGLang-Diffusion, vLLM-Omni and LocalAI
users already call.

- `POST /v1/images/generations` (JSON): `prompt`, `model` (a variant name; empty, "default" or the
  served model's id = the user's sticky A/B variant), `n`, `size` (`WxH` or `auto`), `response_format`
  (`url`, the default as in OpenAI's reference, or `b64_json`), `output_format` (png/jpeg/webp),
  `user`; and the extra fields vLLM-Omni and SGLang accept: `seed`, `num_inference_steps`,
  `negative_prompt`, `true_cfg_scale`; and inkloop's `priority` (interactive or batch). OpenAI's
  other fields (`quality`, `style`, `background`, …) are accepted and ignored; `stream` is refused.
- `POST /v1/images/edits` (multipart): `image`, `mask`, `prompt`, `n`, `size` → inpainting. OpenAI's
  mask semantics: its fully transparent pixels are the area to edit (with no mask, the image's own
  transparent pixels are); a mask without transparency is read black/white, white = edit. With no
  mask and an opaque image, the prompt is an instruction for the whole image, as with gpt-image-1: an
  edit (Qwen-Image-Edit). With `extend_left|top|right|bottom` (pixels) instead of a mask it is an
  outpaint.
- `GET /v1/models`: the variants.

Every call is an ordinary job: the same key, role, validation, safety filter, rate limits, cache,
durable queue, A/B variant and events as gRPC; the answer waits for the job. Errors have OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`, with 400 naming the parameter, 401, 403,
404, 429 with `Retry-After`, and 500 without internals. b64_json images are downloads (the bytes are
handed over); a `url` is the image store's signed attachment link, counted as a download when fetched.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from inkloop import errors
from inkloop.v1 import common_pb2
from inkloop_gateway.admission.auth import Principal, authenticate_header
from inkloop_gateway.admission.keys import KeyStore
from inkloop_gateway.admission.safety import PolicyViolation
from inkloop_gateway.jobs.service import JobService
from inkloop_gateway.jobs.store import Priority
from inkloop_gateway.redis_client import OUTAGE_ERRORS, OUTAGE_MESSAGE

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 24 * 1024 * 1024
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_FORMATS = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    "jpg": common_pb2.IMAGE_FORMAT_JPEG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
}
_EXTENSIONS = {common_pb2.IMAGE_FORMAT_JPEG: "jpg", common_pb2.IMAGE_FORMAT_WEBP: "webp"}
_RESPONSE_FORMATS = ("url", "b64_json")
_SIDES = ("left", "top", "right", "bottom")
#: Inkloop field names (the last part of a violation's path) -> the OpenAI parameter a client sent.
_PARAMETERS = {
    "width": "size",
    "height": "size",
    "num_images": "n",
    "steps": "num_inference_steps",
    "extension": "extend_left",
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ImagesApiError(Exception):
    """An error to answer in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code
        self.headers: dict[str, str] = {}


def _openai_error(error: Exception) -> ImagesApiError:
    if isinstance(error, ImagesApiError):
        return error
    if isinstance(error, PolicyViolation):  # OpenAI answers a refused prompt with 400, not 422
        return ImagesApiError(400, str(error), param="prompt", code="content_policy_violation")
    if isinstance(error, errors.InvalidArgument):
        field = error.violations[0].field
        return ImagesApiError(
            400, str(error), param=_PARAMETERS.get(field.rsplit(".", 1)[-1], field.rsplit(".", 1)[-1])
        )
    if isinstance(error, errors.Unauthenticated):
        return ImagesApiError(401, str(error), code="invalid_api_key")
    if isinstance(error, errors.ResourceExhausted):
        limited = ImagesApiError(429, str(error), code="rate_limit_exceeded")
        if error.retry_after_s is not None:
            limited.headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
        return limited
    if isinstance(error, errors.InkloopError) and error.http_status < 500:
        return ImagesApiError(error.http_status, str(error), code=error.grpc_code.lower())
    if isinstance(error, errors.Unavailable):
        unavailable = ImagesApiError(503, str(error), code="unavailable")
        unavailable.headers["Retry-After"] = "2"
        return unavailable
    log.exception("images API call failed", exc_info=error)
    return ImagesApiError(500, "internal error", code="internal_error")


def error_response(error: Exception) -> web.Response:
    failure = _openai_error(error)
    body = {
        "error": {
            "message": str(failure),
            "type": _TYPES.get(failure.status, "server_error" if failure.status >= 500 else "invalid_request_error"),
            "param": failure.param,
            "code": failure.code,
        }
    }
    return web.json_response(body, status=failure.status, headers=failure.headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answers_like_openai(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except OUTAGE_ERRORS:
            return error_response(errors.Unavailable(OUTAGE_MESSAGE))
        except Exception as error:  # every error: the client gets OpenAI's shape, never a traceback
            return error_response(error)

    return handle


def _parse_size(value: Any) -> tuple[int, int]:
    if value in (None, "", "auto"):
        return 0, 0
    match = _SIZE.match(str(value))
    if match is None:
        raise ImagesApiError(400, f"size must be 'WxH' (e.g. '1024x1024') or 'auto', got {value!r}", param="size")
    return int(match.group(1)), int(match.group(2))


def _integer(fields: dict[str, Any], name: str, default: int) -> int:
    value = fields.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImagesApiError(400, f"{name} must be an integer", param=name) from None
    if (isinstance(value, float) and value != number) or number < 0:
        raise ImagesApiError(400, f"{name} must be a non-negative integer", param=name)
    return number


def _choice(fields: dict[str, Any], name: str, allowed: tuple[str, ...] | dict[str, Any], default: str) -> str:
    value = fields.get(name) or default
    if value not in allowed:
        raise ImagesApiError(400, f"{name} must be one of {', '.join(allowed)}, got {value!r}", param=name)
    return str(value)


def _parameters(fields: dict[str, Any], width: int, height: int) -> common_pb2.GenerationParameters:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ImagesApiError(400, "prompt is required", param="prompt")
    if fields.get("stream") in (True, "true"):
        raise ImagesApiError(400, "streaming is not supported; watch a job over gRPC for progress", param="stream")
    parameters = common_pb2.GenerationParameters(
        prompt=prompt,
        negative_prompt=str(fields.get("negative_prompt") or ""),
        width=width,
        height=height,
        steps=_integer(fields, "num_inference_steps", 0),
        num_images=_integer(fields, "n", 1),
        output_format=_FORMATS[_choice(fields, "output_format", _FORMATS, "png")],
    )
    if fields.get("seed") not in (None, ""):
        parameters.seed = _integer(fields, "seed", 0)
    if fields.get("true_cfg_scale") not in (None, ""):
        try:
            parameters.true_cfg_scale = float(fields["true_cfg_scale"])
        except (TypeError, ValueError):
            raise ImagesApiError(400, "true_cfg_scale must be a number", param="true_cfg_scale") from None
    return parameters


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _open_image(data: bytes, param: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ImagesApiError(400, f"{param} is not a PNG, JPEG or WebP image", param=param) from None
    return image


def _transparent(image: Image.Image) -> Image.Image | None:
    """White where `image` is fully transparent, black elsewhere; None when nothing is transparent."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return None
    alpha = image.convert("RGBA").getchannel("A")
    area = alpha.point(lambda a: 255 if a == 0 else 0)
    return area if area.getbbox() is not None else None


def edit_inputs(image_bytes: bytes, mask_bytes: bytes | None) -> tuple[bytes, bytes | None]:
    """The source as opaque PNG and inkloop's mask (white repaints) from OpenAI's image and mask; no
    mask when neither a mask nor the image's transparency marks an area (an instruction edit)."""
    image = _open_image(image_bytes, "image")
    if mask_bytes is None:
        area = _transparent(image)
        if area is None:
            return _png(image.convert("RGB")), None
    else:
        mask = _open_image(mask_bytes, "mask")
        if mask.size != image.size:
            raise ImagesApiError(
                400,
                f"mask must be {image.width}x{image.height} like the image, got {mask.width}x{mask.height}",
                param="mask",
            )
        area = _transparent(mask) or mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    return _png(image.convert("RGB")), _png(area.convert("L"))


class OpenAIImages:
    def __init__(self, keys: KeyStore, jobs: JobService) -> None:
        self.keys = keys
        self.jobs = jobs

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/images/generations", _answers_like_openai(self.generations)),
            web.post("/v1/images/edits", _answers_like_openai(self.edits)),
            web.get("/v1/models", _answers_like_openai(self.models)),
        ]

    async def models(self, request: web.Request) -> web.Response:
        await self._principal(request)
        variants = await self.jobs.variants.list()
        data = [{"id": v.name, "object": "model", "created": 0, "owned_by": "inkloop"} for v in variants]
        return web.json_response({"object": "list", "data": data})

    async def generations(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ImagesApiError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            fields = json.loads(await request.text() or "{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ImagesApiError(400, f"malformed JSON body: {error}") from None
        if not isinstance(fields, dict):
            raise ImagesApiError(400, "the body must be a JSON object")
        width, height = _parse_size(fields.get("size"))
        task = common_pb2.GenerationTask(
            text_to_image=common_pb2.TextToImageRequest(parameters=_parameters(fields, width, height))
        )
        return await self._answer(request, principal, fields, task)

    async def edits(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ImagesApiError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        form = await request.post()
        fields: dict[str, Any] = {name: value for name, value in form.items() if isinstance(value, str)}
        files = {name: value.file.read() for name, value in form.items() if isinstance(value, web.FileField)}
        # OpenAI's client sends `image[]` when given a list of images; one is what inpainting takes.
        image = files.get("image") or files.get("image[]")
        if image is None:
            raise ImagesApiError(400, "image is required (a multipart file)", param="image")
        extension = {side: _integer(fields, f"extend_{side}", 0) for side in _SIDES}
        if any(extension.values()):
            source = _png(_open_image(image, "image").convert("RGB"))
            task = common_pb2.GenerationTask(
                outpaint=common_pb2.OutpaintRequest(
                    parameters=_parameters(fields, 0, 0),
                    image=source,
                    extension=common_pb2.OutpaintExtension(**extension),
                )
            )
        else:
            source, mask = edit_inputs(image, files.get("mask"))
            width, height = _parse_size(fields.get("size"))
            if mask is None:
                task = common_pb2.GenerationTask(
                    edit=common_pb2.EditRequest(parameters=_parameters(fields, width, height), image=source)
                )
                return await self._answer(request, principal, fields, task)
            picture = Image.open(io.BytesIO(source))
            if (width, height) not in ((0, 0), picture.size):
                raise ImagesApiError(
                    400,
                    f"size must be 'auto' or the image's own {picture.width}x{picture.height}: "
                    "pixels outside the mask are kept exactly, so the size cannot change",
                    param="size",
                )
            task = common_pb2.GenerationTask(
                inpaint=common_pb2.InpaintRequest(parameters=_parameters(fields, 0, 0), image=source, mask=mask)
            )
        return await self._answer(request, principal, fields, task)

    async def _principal(self, request: web.Request) -> Principal:
        return await authenticate_header(self.keys, request.headers.get("Authorization"))

    async def _variant(self, model: Any) -> str:
        """The variant a `model` names; "" = the user's sticky assignment."""
        if model in (None, "", "default"):
            return ""
        names = [variant.name for variant in await self.jobs.variants.list()]
        if model in names:
            return str(model)
        info = await self.jobs.main_model_info()
        if model == info.model_id:
            return ""
        raise ImagesApiError(
            404, f"the model {model!r} does not exist; GET /v1/models lists them", param="model", code="model_not_found"
        )

    async def _answer(
        self, request: web.Request, principal: Principal, fields: dict[str, Any], task: common_pb2.GenerationTask
    ) -> web.Response:
        response_format = _choice(fields, "response_format", _RESPONSE_FORMATS, "url")
        variant = await self._variant(fields.get("model"))
        priority = Priority(_choice(fields, "priority", tuple(Priority), Priority.INTERACTIVE))
        job = await self.jobs.submit(
            principal, uuid.uuid4().hex, task, str(fields.get("user") or ""), variant_name=variant, priority=priority
        )
        images: list[common_pb2.Image] = []
        async for event in self.jobs.follow(job):
            which = event.WhichOneof("event")
            if which == "succeeded":
                images = list(event.succeeded.images)
            elif which == "failed":
                raise _job_failure(event.failed)
            elif which == "cancelled":
                raise ImagesApiError(409, "the job was cancelled", code="cancelled")
        if not images:
            raise ImagesApiError(500, "the job ended without images", code="internal_error")
        first = images[0]
        output_format = (
            next(name for name, value in _FORMATS.items() if value == first.format) if first.format else "png"
        )
        body: dict[str, Any] = {
            "created": int(time.time()),
            "output_format": output_format,
            "size": f"{first.width}x{first.height}",
        }
        if response_format == "b64_json":
            body["data"] = [
                {"b64_json": base64.b64encode(image.data).decode(), "revised_prompt": None} for image in images
            ]
            self.jobs.record_downloads(job, len(images))  # the bytes are handed over: each is a download
        else:
            origin = str(request.url.origin())
            body["data"] = [
                {"url": origin + self._attachment_path(job.tenant_id, image), "revised_prompt": None}
                for image in images
            ]
        return web.json_response(body)

    def _attachment_path(self, tenant_id: str, image: common_pb2.Image) -> str:
        """The signed URL, as an attachment: a client fetches it to keep the image (a download)."""
        extension = _EXTENSIONS.get(image.format, "png")
        return self.jobs.images.download_url(tenant_id, image.image_id, extension) + "&download=1"


def _job_failure(failure: common_pb2.Failure) -> ImagesApiError:
    """A job that ended failed, answered as the error its status names (internals never shown)."""
    kind = next((k for k in errors.KINDS if k.grpc_code == failure.code), None)
    status = kind.http_status if kind is not None else 500
    if failure.policy:
        return ImagesApiError(400, failure.message, param="prompt", code="content_policy_violation")
    if status >= 500:
        return ImagesApiError(500, "the image could not be generated; try again", code=failure.code.lower() or None)
    param = failure.field.rsplit(".", 1)[-1] if failure.field else None
    return ImagesApiError(status, failure.message, param=_PARAMETERS.get(param or "", param), code=failure.code.lower())
