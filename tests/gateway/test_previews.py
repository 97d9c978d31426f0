"""Live previews through the gateway: the job's progress events carry them (gRPC Generate and the
page's server-sent events) when the request asks, and never split the result cache."""

from __future__ import annotations

import base64
import io
import json

import aiohttp
from PIL import Image

from inkloop.v1 import gateway_pb2

from .conftest import Gateway, events_of, text_task


async def test_generate_streams_previews_only_when_asked(gateway: Gateway) -> None:
    asked = await events_of(
        gateway.jobs.Generate(
            gateway_pb2.GenerateRequest(task=text_task("a kite", seed=3, steps=4, preview_every_steps=2)),
            metadata=gateway.auth(),
        )
    )
    previews = [e.running.preview for e in asked if e.HasField("running") and e.running.preview]
    assert previews and all(Image.open(io.BytesIO(p)).format == "JPEG" for p in previews)
    assert {e.running.step for e in asked if e.HasField("running") and e.running.preview} <= {2, 4}
    plain = await events_of(
        gateway.jobs.Generate(
            gateway_pb2.GenerateRequest(task=text_task("a kite", seed=3, steps=4)), metadata=gateway.auth()
        )
    )
    assert not any(e.running.preview for e in plain if e.HasField("running"))
    [first_result] = [e for e in asked if e.HasField("succeeded")]
    [second_result] = [e for e in plain if e.HasField("succeeded")]
    # Same request but for previews: a cache hit with the same image.
    assert second_result.succeeded.images[0].image_id == first_result.succeeded.images[0].image_id


async def test_the_page_bridge_sends_previews_as_base64(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.secrets['acme']}"}
    body = {
        "task": {
            "textToImage": {
                "parameters": {
                    "prompt": "a kite",
                    "width": 64,
                    "height": 64,
                    "steps": 4,
                    "seed": "9",
                    "previewEverySteps": 1,
                }
            }
        }
    }
    async with aiohttp.ClientSession(gateway.http_url) as http:
        async with http.post("/v1/jobs", json=body, headers=headers) as reply:
            job = (await reply.json())["job"]
        async with http.get(f"/v1/jobs/{job['jobId']}/events", headers=headers) as stream:
            text = await stream.text()
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    previews = [e["running"]["preview"] for e in events if "running" in e and "preview" in e["running"]]
    assert previews
    assert Image.open(io.BytesIO(base64.b64decode(previews[-1]))).format == "JPEG"
