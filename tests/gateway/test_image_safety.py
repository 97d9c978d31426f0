"""Output-image safety: the real NudeNet detector passes ordinary images untouched; each tenant's
action (block, blur, flag) is applied to unsafe ones, recorded as an event without the image, and
no result with a finding enters the shared cache."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from inkloop.v1 import analytics_pb2, common_pb2, gateway_pb2
from inkloop_gateway.admission.image_safety import Action, Finding, ImageSafety, NudeNet, blurred

from .conftest import Gateway, StartGateway, finished, spooled_events, text_task

T = analytics_pb2.BackendEventType


class EverythingUnsafe:
    """A classifier that finds every image unsafe: the actions are what these tests are about."""

    def findings(self, data: bytes) -> list[Finding]:
        return [Finding("FEMALE_BREAST_EXPOSED", 0.99)]


async def _generate(gateway: Gateway, who: str, seed: int) -> gateway_pb2.JobEvent:
    reply = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a kite", seed=seed)), metadata=gateway.auth(who)
    )
    return await finished(gateway, reply.job.job_id, who=who)


async def test_nudenet_passes_ordinary_images_untouched(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(image_safety="nudenet")
    assert isinstance(gateway.app.dispatcher.image_safety, ImageSafety)
    assert isinstance(gateway.app.dispatcher.image_safety.classifier, NudeNet)
    end = await _generate(gateway, "acme", 3)
    assert end.succeeded.images
    assert await gateway.app.events.flush() is False
    assert not [e for e in spooled_events(gateway.app.events.spool) if e.type == T.BACKEND_EVENT_TYPE_IMAGE_FLAGGED]


async def test_each_tenant_gets_its_action_and_nothing_unsafe_is_cached(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    gateway.app.dispatcher.image_safety = ImageSafety(EverythingUnsafe(), None)  # checks nobody
    plain = await _generate(gateway, "globex", 11)  # the original pixels (not cached: see below)
    original = plain.succeeded.images[0].data
    gateway.app.dispatcher.image_safety = ImageSafety(EverythingUnsafe(), Action.BLOCK, {"globex": Action.BLUR})

    blocked = await _generate(gateway, "acme", 12)
    assert blocked.failed.code == "FAILED_PRECONDITION" and blocked.failed.policy == "image-nudity"

    soft = await _generate(gateway, "globex", 13)
    blurred_image = soft.succeeded.images[0]
    assert Image.open(io.BytesIO(blurred_image.data)).size == (64, 64)
    again = await _generate(gateway, "globex", 13)
    assert again.succeeded.images[0].data and again.job_id != soft.job_id
    reply = await gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=again.job_id), metadata=gateway.auth("globex"))
    assert not reply.job.cache_hit  # a result with a finding never enters the cache

    gateway.app.dispatcher.image_safety = ImageSafety(EverythingUnsafe(), Action.FLAG)
    kept = await _generate(gateway, "globex", 11)
    assert kept.succeeded.images[0].data == original  # flagged, kept as it is

    assert await gateway.app.events.flush() is False
    flagged = [e for e in spooled_events(gateway.app.events.spool) if e.type == T.BACKEND_EVENT_TYPE_IMAGE_FLAGGED]
    assert [(e.error_code, e.policy) for e in flagged] == [
        ("blocked", "image-nudity"),
        ("blurred", "image-nudity"),
        ("blurred", "image-nudity"),
        ("flagged", "image-nudity"),
    ]
    raw = b"".join(path.read_bytes() for path in gateway.app.events.spool.directory.iterdir())
    assert original not in raw  # never the image


@pytest.mark.parametrize("image_format", [common_pb2.IMAGE_FORMAT_PNG, common_pb2.IMAGE_FORMAT_JPEG])
def test_blurring_keeps_the_size_and_format(image_format: int) -> None:
    image = Image.new("RGB", (48, 32))
    image.putpixel((10, 10), (255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG" if image_format == common_pb2.IMAGE_FORMAT_PNG else "JPEG")
    soft = Image.open(io.BytesIO(blurred(out.getvalue(), image_format)))
    assert soft.size == (48, 32) and soft.format == ("PNG" if image_format == common_pb2.IMAGE_FORMAT_PNG else "JPEG")
    assert soft.convert("L").getextrema()[1] < 128  # the single bright pixel is smeared away
