"""Instruction edits through the gateway: validation with the edit model's defaults, a durable job run by
the edit model (whatever inference variant the user's A/B arm names), its cache key, and its events."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2, common_pb2, gateway_pb2
from inkloop_inference.presets import FAST_LORA

from .conftest import Gateway, StartGateway, edit_task, finished, running_inference, spooled_events

T = analytics_pb2.BackendEventType


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def _submit(gateway: Gateway, task: common_pb2.GenerationTask) -> gateway_pb2.Job:
    reply = await gateway.jobs.SubmitJob(gateway_pb2.SubmitJobRequest(task=task), metadata=gateway.auth())
    return reply.job


async def test_an_edit_job_runs_on_the_edit_model_is_cached_and_recorded_as_kind_edit(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    image = png(100, 72)
    job = await _submit(gateway, edit_task(image, seed=5))
    assert job.kind == common_pb2.GENERATION_KIND_EDIT
    assert (job.parameters.width, job.parameters.height) == (96, 64)  # the image's size, rounded down
    end = await finished(gateway, job.job_id)
    assert end.succeeded.model_id == "tiny-edit"
    [picture] = end.succeeded.images
    assert (picture.width, picture.height) == (96, 64)

    again = await _submit(gateway, edit_task(image, seed=5))
    repeat = await finished(gateway, again.job_id)
    other = await _submit(gateway, edit_task(image, "make it winter", seed=5))
    different = await finished(gateway, other.job_id)
    assert repeat.succeeded.images[0].image_id == picture.image_id  # the cached result
    assert different.succeeded.images[0].image_id != picture.image_id  # another instruction, another key

    assert await gateway.app.events.flush() is False  # analytics unreachable: every event is on disk
    events = spooled_events(gateway.app.events.spool)
    requested = [e for e in events if e.type == T.BACKEND_EVENT_TYPE_REQUESTED]
    assert [e.kind for e in requested] == [common_pb2.GENERATION_KIND_EDIT] * 3
    assert sum(e.type == T.BACKEND_EVENT_TYPE_CACHE_HIT for e in events) == 1


async def test_an_edit_in_an_arm_with_an_inference_variant_still_runs_on_the_edit_model(
    start_gateway: StartGateway, tiny_model_dir: Path, tiny_edit_dir: Path, tmp_path: Path
) -> None:
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        f"variants:\n  - name: base\n  - name: fast\n    adapters:\n      - path: {tiny_model_dir / FAST_LORA}\n"
    )
    async with running_inference(tiny_model_dir, variants_file=variants, edit_model_path=tiny_edit_dir) as inference:
        await _edit_in_the_fast_arm(await start_gateway(inference_target=inference.target))


async def _edit_in_the_fast_arm(gateway: Gateway) -> None:
    target = gateway.app.settings.inference_target
    await gateway.admin.SetVariants(
        gateway_pb2.SetVariantsRequest(
            variants=[gateway_pb2.ModelVariant(name="fast", target=target, weight=1, model_variant="fast")]
        ),
        metadata=gateway.auth("admin"),
    )
    job = await _submit(gateway, edit_task(png(64, 64), seed=1))
    assert job.variant == "fast"
    end = await finished(gateway, job.job_id)
    assert end.succeeded.model_id == "tiny-edit"


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (edit_task(png(64, 64), width=100, height=64), "task.edit.parameters.width"),
        (edit_task(b""), "task.edit.image"),
        (edit_task(png(64, 64), "  "), "task.edit.parameters.prompt"),
    ],
)
async def test_a_bad_edit_is_invalid_argument_naming_the_field(
    gateway: Gateway, task: common_pb2.GenerationTask, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(gateway, task)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [name for name, _ in field_violations(caught.value)]
