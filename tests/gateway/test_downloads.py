"""Downloads are what a user asked to keep, never a display: the page's <img> and thumbnails (signed
URLs) are views; the attachment link, a key-authenticated fetch, GetJob with images and Generate's
result are downloads; watching a job's progress is neither. Counted from the back-end events the
gateway emits (the browser test checks the same end to end in ClickHouse)."""

from __future__ import annotations

import aiohttp
from prometheus_client import REGISTRY

from inkloop.v1 import gateway_pb2

from .conftest import StartGateway, events_of, finished, text_task


def _counts() -> tuple[float, float]:
    """Downloads and views the gateway has emitted (its job-events metric counts each emitted event)."""

    def count(kind: str) -> float:
        sample = REGISTRY.get_sample_value("inkloop_gateway_job_events_total", {"type": kind, "variant": "default"})
        return sample or 0.0

    return count("downloaded"), count("viewed")


class Tally:
    """Downloads and views since the tally was made."""

    def __init__(self) -> None:
        self.base = _counts()

    def __call__(self) -> tuple[int, int]:
        now = _counts()
        return int(now[0] - self.base[0]), int(now[1] - self.base[1])


async def test_displays_are_views_and_only_asked_for_files_are_downloads(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    tally = Tally()
    submitted = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a kite"), request_id="dl-1"), metadata=gateway.auth()
    )
    await finished(gateway, submitted.job.job_id)  # WatchJob: progress only
    job = (
        await gateway.jobs.GetJob(gateway_pb2.GetJobRequest(job_id=submitted.job.job_id), metadata=gateway.auth())
    ).job
    assert tally() == (0, 0)

    signed = job.result.images[0].download_url
    async with aiohttp.ClientSession(gateway.http_url) as http:
        for _shown in range(3):  # the page's image, a thumbnail, the inpaint base
            async with http.get(signed) as reply:
                assert reply.status == 200
        assert tally() == (0, 3)

        async with http.get(signed + "&download=1") as reply:
            assert reply.status == 200 and reply.headers["Content-Disposition"].startswith("attachment")
        bearer = {"Authorization": f"Bearer {gateway.secrets['acme']}"}
        async with http.get(f"/v1/images/{job.result.images[0].image_id}.png", headers=bearer) as reply:
            assert reply.status == 200
        assert tally() == (2, 3)

    await gateway.jobs.GetJob(
        gateway_pb2.GetJobRequest(job_id=job.job_id, include_images=True), metadata=gateway.auth()
    )
    assert tally() == (3, 3)


async def test_generate_hands_over_the_file_so_each_image_is_one_download(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    tally = Tally()
    request = gateway_pb2.GenerateRequest(request_id="dl-2", task=text_task("two kites", num_images=2))
    events = await events_of(gateway.jobs.Generate(request, metadata=gateway.auth()))
    assert len(events[-1].succeeded.images) == 2 and events[-1].succeeded.images[0].data
    assert tally() == (2, 0)
