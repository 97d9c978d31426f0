"""The OpenAI-compatible Images API keeps every gateway rule: its calls are jobs with events, the
variant named by `model` (or the user's sticky one), the result cache, the safety filter (a refusal
in OpenAI's shape), the key's role, and OpenAI's masks (transparent or black/white)."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from inkloop.v1 import analytics_pb2, gateway_pb2
from inkloop_gateway.api.openai_images import ImagesApiError, edit_inputs

from .conftest import Gateway, StartGateway, spooled_events

T = analytics_pb2.BackendEventType


def _bearer(gateway: Gateway, who: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.secrets[who]}"}


async def _generate(gateway: Gateway, body: dict[str, object], who: str = "acme") -> tuple[int, dict]:  # type: ignore[type-arg]
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway.http_url + "/v1/images/generations", json=body, headers=_bearer(gateway, who)) as reply,
    ):
        return reply.status, await reply.json()


async def test_a_generation_is_a_job_with_events_the_named_variant_and_the_cache(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    await gateway.admin.SetVariants(
        gateway_pb2.SetVariantsRequest(
            variants=[
                gateway_pb2.ModelVariant(name="default", target=gateway.app.settings.inference_target, weight=1),
                gateway_pb2.ModelVariant(name="fast", target=gateway.app.settings.inference_target, weight=0),
            ]
        ),
        metadata=gateway.auth("admin"),
    )
    body = {
        "prompt": "a lighthouse",
        "model": "fast",
        "size": "64x64",
        "seed": 9,
        "num_inference_steps": 2,
        "response_format": "b64_json",
        "user": "reader-1",
    }
    status, first = await _generate(gateway, body)
    assert status == 200, first
    status, again = await _generate(gateway, body)
    assert status == 200 and again["data"] == first["data"]  # same request, same bytes (from the cache)
    assert await gateway.app.events.flush() is False  # analytics unreachable: all events are on disk
    events = spooled_events(gateway.app.events.spool)
    requested = [e for e in events if e.type == T.BACKEND_EVENT_TYPE_REQUESTED]
    assert [(e.variant, e.user_id, e.width) for e in requested] == [("fast", "reader-1", 64)] * 2
    assert sum(e.type == T.BACKEND_EVENT_TYPE_CACHE_HIT for e in events) == 1
    assert sum(e.type == T.BACKEND_EVENT_TYPE_DOWNLOADED for e in events) == 2  # b64 bytes handed over, twice


async def test_a_refused_prompt_and_a_key_without_the_role_answer_in_openai_shape(gateway: Gateway) -> None:
    status, refused = await _generate(gateway, {"prompt": "child porn", "size": "64x64"})
    assert status == 400
    assert refused["error"]["code"] == "content_policy_violation" and refused["error"]["param"] == "prompt"
    assert "porn" not in refused["error"]["message"]
    status, unknown = await _generate(gateway, {"prompt": "a fox", "size": "64x64", "response_format": "gif"})
    assert (status, unknown["error"]["param"]) == (400, "response_format")
    status, many = await _generate(gateway, {"prompt": "a fox", "size": "64x64", "n": 1000})
    assert (status, many["error"]["param"]) == (400, "n")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_openai_masks_become_inkloop_masks() -> None:
    source = Image.new("RGB", (32, 16), (10, 20, 30))
    transparent = Image.new("RGBA", (32, 16), (0, 0, 0, 255))
    transparent.paste((0, 0, 0, 0), (0, 0, 8, 16))
    black_white = Image.new("L", (32, 16), 0)
    black_white.paste(255, (24, 0, 32, 16))
    for mask, edited in ((transparent, (0, 0, 8, 16)), (black_white, (24, 0, 32, 16))):
        image, inkloop_mask = edit_inputs(_png(source), _png(mask))
        area = Image.open(io.BytesIO(inkloop_mask))
        assert area.mode == "L" and area.getbbox() == edited
        assert Image.open(io.BytesIO(image)).mode == "RGB"
    # No mask: the image's own transparent pixels are the area.
    holey = source.convert("RGBA")
    holey.paste((0, 0, 0, 0), (4, 4, 12, 12))
    _, own = edit_inputs(_png(holey), None)
    assert Image.open(io.BytesIO(own)).getbbox() == (4, 4, 12, 12)
    # No mask and an opaque image: no area at all, the prompt is an instruction for the whole image.
    opaque, none = edit_inputs(_png(source), None)
    assert none is None and Image.open(io.BytesIO(opaque)).size == (32, 16)
    for mask_bytes, param in ((_png(Image.new("L", (8, 8))), "mask"), (b"not an image", "mask")):
        with pytest.raises(ImagesApiError) as bad:
            edit_inputs(_png(source), mask_bytes)
        assert bad.value.param == param
