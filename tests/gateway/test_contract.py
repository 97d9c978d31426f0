"""One generation contract: the same bad requests, sent to a real gateway (SubmitJob) and straight to
the real inference service it fronts, are refused the same way — INVALID_ARGUMENT with the same
fields (the gateway's under `task.<kind>.`) and the same descriptions, before the gateway queues or
charges anything."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
from PIL import Image

from inkloop.rpc.status import field_violations
from inkloop.v1 import common_pb2, gateway_pb2, inference_pb2_grpc

from .conftest import Inference, StartGateway


def _png(width: int, height: int, colour: int | tuple[int, int, int] = (120, 30, 200), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_header(width: int, height: int) -> bytes:
    """A PNG that claims a huge canvas in a few bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _parameters(**fields: object) -> common_pb2.GenerationParameters:
    values: dict[str, object] = {"prompt": "a cat", "steps": 2, **fields}
    return common_pb2.GenerationParameters(**values)  # type: ignore[arg-type]


def _t2i(**fields: object) -> common_pb2.GenerationTask:
    fields = {"width": 64, "height": 64, **fields}
    return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=_parameters(**fields)))


def _inpaint(image: bytes, mask: bytes, feather: int = 0, **fields: object) -> common_pb2.GenerationTask:
    request = common_pb2.InpaintRequest(
        parameters=_parameters(**fields), image=image, mask=mask, mask_feather_px=feather
    )
    return common_pb2.GenerationTask(inpaint=request)


def _outpaint(image: bytes, feather: int = 0, **sides: int) -> common_pb2.GenerationTask:
    request = common_pb2.OutpaintRequest(
        parameters=_parameters(),
        image=image,
        extension=common_pb2.OutpaintExtension(**sides),
        feather_px=feather,
    )
    return common_pb2.GenerationTask(outpaint=request)


WHITE = _png(64, 64, 255, "L")
BAD_REQUESTS = {
    "empty prompt": _t2i(prompt="   "),
    "width not a multiple": _t2i(width=100),
    "height too small": _t2i(height=32),
    "height too large": _t2i(height=4096),
    "too many steps": _t2i(steps=500),
    "one step": _t2i(steps=1),
    "too many images": _t2i(num_images=9),
    "cfg below one": _t2i(true_cfg_scale=0.5),
    "cfg above the maximum": _t2i(true_cfg_scale=25.0),
    "cfg not a number": _t2i(true_cfg_scale=float("nan")),
    "unknown output format": _t2i(output_format=42),
    "several at once": _t2i(prompt="", width=100, steps=500, num_images=9),
    "inpaint without an image": _inpaint(b"", WHITE),
    "inpaint with undecodable bytes": _inpaint(b"not an image", WHITE),
    "inpaint with a decompression bomb": _inpaint(_bomb_header(30_000, 30_000), WHITE),
    "inpaint mask of another size": _inpaint(_png(64, 64), _png(128, 64, 255, "L")),
    "inpaint mask without white": _inpaint(_png(64, 64), _png(64, 64, 0, "L")),
    "inpaint feather too wide": _inpaint(_png(64, 64), WHITE, feather=500),
    "inpaint width not the image's": _inpaint(_png(64, 64), WHITE, width=128),
    "inpaint image not a multiple": _inpaint(_png(72, 64), _png(72, 64, 255, "L")),
    "outpaint with no side": _outpaint(_png(64, 64)),
    "outpaint too wide": _outpaint(_png(64, 64), left=2048),
    "outpaint side not a multiple": _outpaint(_png(64, 64), right=20),
    "outpaint feather too wide": _outpaint(_png(64, 64), feather=500, right=64),
}
#: The exact token count is inference's (the gateway has no tokenizer): the same fields, other words.
SAME_FIELDS_ONLY = {
    "prompt beyond any token limit": _t2i(prompt="x" * 200_000),
}


Refusal = tuple[str, list[tuple[str, str]]]


async def _inference_refusal(inference: Inference, task: common_pb2.GenerationTask) -> Refusal:
    kind = task.WhichOneof("kind")
    method = {"text_to_image": "TextToImage", "inpaint": "Inpaint", "outpaint": "Outpaint"}[kind]
    async with grpc.aio.insecure_channel(inference.target) as channel:
        call = getattr(inference_pb2_grpc.InferenceServiceStub(channel), method)(getattr(task, kind), timeout=60)
        try:
            async for _event in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code().name, field_violations(error)
    return "OK", []


async def _gateway_refusal(gateway: object, task: common_pb2.GenerationTask) -> Refusal:
    try:
        await gateway.jobs.SubmitJob(gateway_pb2.SubmitJobRequest(task=task), metadata=gateway.auth())  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as error:
        prefix = f"task.{task.WhichOneof('kind')}."
        return error.code().name, [
            (field.removeprefix(prefix), description) for field, description in field_violations(error)
        ]
    return "OK", []


async def test_gateway_and_inference_refuse_the_same_requests_the_same_way(
    start_gateway: StartGateway, inference: Inference
) -> None:
    gateway = await start_gateway()
    for name, task in {**BAD_REQUESTS, **SAME_FIELDS_ONLY}.items():
        at_gateway = await _gateway_refusal(gateway, task)
        at_inference = await _inference_refusal(inference, task)
        assert at_inference[0] == "INVALID_ARGUMENT", (name, at_inference)
        if name in SAME_FIELDS_ONLY:
            assert at_gateway[0] == at_inference[0], name
            assert [f for f, _ in at_gateway[1]] == [f for f, _ in at_inference[1]], name
        else:
            assert at_gateway == at_inference, name
    jobs = await gateway.jobs.ListJobs(gateway_pb2.ListJobsRequest(), metadata=gateway.auth())
    assert list(jobs.jobs) == []  # nothing was queued
