"""A/B variants that name an inference-side model variant: the fast tier (Lightning schedule, 8 steps,
CFG off, a LoRA on the shared base) gets its own defaults through the gateway, so the existing split
can send part of the traffic to it; a variant naming one the target does not serve is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from inkloop.v1 import gateway_pb2, inference_pb2, inference_pb2_grpc
from inkloop_inference.presets import FAST_LORA

from .conftest import Inference, StartGateway, finished, running_inference, text_task


@pytest.fixture
async def with_fast_tier(tiny_model_dir: Path, tmp_path: Path) -> AsyncIterator[Inference]:
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        "variants:\n  - name: base\n  - name: fast\n    scheduler: lightning\n    steps: 8\n"
        f"    true_cfg_scale: 1.0\n    adapters:\n      - path: {tiny_model_dir / FAST_LORA}\n"
    )
    async with running_inference(tiny_model_dir, variants_file=variants) as service:
        yield service


async def test_the_fast_tier_runs_with_its_own_defaults_beside_the_base(
    start_gateway: StartGateway, with_fast_tier: Inference
) -> None:
    async with grpc.aio.insecure_channel(with_fast_tier.target) as channel:
        info = await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(inference_pb2.GetModelInfoRequest())
    assert [(v.name, v.scheduler, v.defaults.steps) for v in info.variants] == [
        ("base", "base", info.defaults.steps),
        ("fast", "lightning", 8),
    ]
    gateway = await start_gateway(inference_target=with_fast_tier.target)
    await gateway.admin.SetVariants(
        gateway_pb2.SetVariantsRequest(
            variants=[
                gateway_pb2.ModelVariant(name="full", target=with_fast_tier.target, weight=0),
                gateway_pb2.ModelVariant(name="fast", target=with_fast_tier.target, weight=1, model_variant="fast"),
            ]
        ),
        metadata=gateway.auth("admin"),
    )
    task = text_task("a fast kite", seed=4)
    task.text_to_image.parameters.steps = 0  # the variant's default
    task.text_to_image.parameters.ClearField("true_cfg_scale")
    reply = await gateway.jobs.SubmitJob(gateway_pb2.SubmitJobRequest(task=task), metadata=gateway.auth())
    assert reply.job.variant == "fast"
    assert (reply.job.parameters.steps, reply.job.parameters.true_cfg_scale) == (8, 1.0)
    end = await finished(gateway, reply.job.job_id)
    assert end.succeeded.images
    listed = await gateway.admin.ListVariants(gateway_pb2.ListVariantsRequest(), metadata=gateway.auth("admin"))
    assert [(v.name, v.model_variant) for v in listed.variants] == [("full", ""), ("fast", "fast")]


async def test_a_variant_naming_an_unserved_model_variant_is_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    target = gateway.app.settings.inference_target
    await gateway.admin.SetVariants(
        gateway_pb2.SetVariantsRequest(
            variants=[gateway_pb2.ModelVariant(name="x", target=target, weight=1, model_variant="nope")]
        ),
        metadata=gateway.auth("admin"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.jobs.SubmitJob(gateway_pb2.SubmitJobRequest(task=text_task()), metadata=gateway.auth())
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nope" in (refused.value.details() or "")
