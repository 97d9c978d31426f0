"""A Python client of the inkloop gateway: sync (`Client`) and asyncio (`AsyncClient`), one API.

    from inkloop.client import Client

    with Client("127.0.0.1:50051", api_key=key) as client:
        result = client.generate("一只戴草帽的狐狸", seed=7, on_progress=lambda step, total: print(step, total))
        result.image.save("fox.png")                     # result.seed, .job_id, .cache_hit, .image.width …
        job = client.submit(TextToImage(prompt="a lighthouse", steps=20))
        client.cancel(job.job_id)                         # or client.watch(job.job_id) → Generation
        images = client.download(some_job_id)             # a finished job's images, with their bytes

`generate`, `inpaint`, `outpaint`, `edit` (and `run` for any `Task`) submit and follow a job in one call;
`submit`, `get`, `watch`, `cancel` and `download` work on jobs by id. Every call takes `deadline_s`
(its whole budget, retries included). UNAVAILABLE and RESOURCE_EXHAUSTED are retried with backoff,
never sooner than the server's RetryInfo says, up to `RetryPolicy.max_attempts`; a submission keeps
its `request_id` across retries, so the gateway answers a retry with the job the first try made.
Failures raise `InkloopClientError` (status code name, message, BadRequest fields, RetryInfo delay);
a failed or cancelled job raises its subclasses `JobFailedError` / `JobCancelledError`.

This package talks to the gateway's public API only; it imports no service.
"""

from __future__ import annotations

from inkloop.client.aio import AsyncClient
from inkloop.client.errors import InkloopClientError, JobCancelledError, JobFailedError
from inkloop.client.progress import OnProgress, OnQueued
from inkloop.client.results import Failure, Generation, Image, Job, JobState
from inkloop.client.retry import Retry, RetryPolicy
from inkloop.client.sync import Client
from inkloop.client.tasks import Edit, Inpaint, Outpaint, Task, TextToImage

__all__ = [
    "AsyncClient",
    "Client",
    "Edit",
    "Failure",
    "Generation",
    "Image",
    "InkloopClientError",
    "Inpaint",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobState",
    "OnProgress",
    "OnQueued",
    "Outpaint",
    "Retry",
    "RetryPolicy",
    "Task",
    "TextToImage",
]
