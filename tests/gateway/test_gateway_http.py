"""Image downloads on the HTTP port: each format, by API key or signed URL, tenant-scoped."""

from __future__ import annotations

import asyncio
import io

import aiohttp
from PIL import Image

from inkloop.v1 import analytics_pb2, gateway_pb2

from .conftest import Gateway, finished, spooled_events, text_task


async def _image(gateway: Gateway) -> gateway_pb2.JobEvent:
    job = (
        await gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(task=text_task(seed=3), request_id="dl-1"), metadata=gateway.auth()
        )
    ).job
    return await finished(gateway, job.job_id)


async def test_download_in_each_format_with_an_api_key(gateway: Gateway) -> None:
    image = (await _image(gateway)).succeeded.images[0]
    headers = {"Authorization": f"Bearer {gateway.secrets['acme']}"}
    async with aiohttp.ClientSession(gateway.http_url) as http:
        for extension, pil_format in [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")]:
            async with http.get(f"/v1/images/{image.image_id}.{extension}", headers=headers) as reply:
                assert reply.status == 200, await reply.text()
                body = await reply.read()
                assert reply.content_type == f"image/{'jpeg' if extension == 'jpg' else extension}"
                assert "immutable" in reply.headers["Cache-Control"] and reply.headers["ETag"]
            decoded = Image.open(io.BytesIO(body))
            assert decoded.format == pil_format and decoded.size == (64, 64)
            if extension == "png":
                assert body == image.data  # stored bytes, unconverted
        async with http.get(f"/v1/images/{image.image_id}.png") as reply:
            assert reply.status == 401
        other = {"Authorization": f"Bearer {gateway.secrets['globex']}"}
        async with http.get(f"/v1/images/{image.image_id}.png", headers=other) as reply:
            assert reply.status == 404


async def test_signed_url_works_without_a_key_until_tampered_with(gateway: Gateway) -> None:
    image = (await _image(gateway)).succeeded.images[0]
    async with aiohttp.ClientSession(gateway.http_url) as http:
        async with http.get(image.download_url) as reply:
            assert reply.status == 200 and await reply.read() == image.data
        as_webp = image.download_url.replace(".png?", ".webp?")
        async with http.get(as_webp) as reply:
            assert reply.status == 200 and Image.open(io.BytesIO(await reply.read())).format == "WEBP"
        for tampered in (
            image.download_url.replace("tenant=acme", "tenant=globex"),
            image.download_url[:-1] + ("0" if image.download_url[-1] != "0" else "1"),
        ):
            async with http.get(tampered) as reply:
                assert reply.status in (401, 404)


async def test_each_download_is_a_back_end_event(gateway: Gateway) -> None:
    image = (await _image(gateway)).succeeded.images[0]
    # The attachment link is a download (a display of the signed URL alone is a view: test_downloads).
    async with aiohttp.ClientSession(gateway.http_url) as http, http.get(image.download_url + "&download=1") as reply:
        assert reply.status == 200
    spool = gateway.app.events.spool
    for _ in range(100):
        events = spooled_events(spool)
        downloads = [e for e in events if e.type == analytics_pb2.BACKEND_EVENT_TYPE_DOWNLOADED]
        if downloads:
            break
        await asyncio.sleep(0.1)
    assert downloads[0].request_id == "dl-1" and downloads[0].variant == "default" and downloads[0].job_id
