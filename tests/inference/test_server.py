"""The inference service over real gRPC with the tiny model: every RPC, streaming, batching,
cancellation and each kind of bad input."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client import REGISTRY

from inkloop.rpc.server import RunningServer, start_server
from inkloop.rpc.status import field_violations, retry_delay_s
from inkloop.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from inkloop_inference import pipelines
from inkloop_inference.pipelines import GenerationRequest
from inkloop_inference.server import InferenceApp
from inkloop_inference.settings import InferenceSettings


class Service:
    def __init__(self, app: InferenceApp, running: RunningServer, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.running = running
        self.stub = inference_pb2_grpc.InferenceServiceStub(channel)


async def _start(tiny_dir: Path, **overrides: object) -> tuple[Service, grpc.aio.Channel]:
    settings = InferenceSettings(model_path=tiny_dir, port=0, **overrides)  # type: ignore[arg-type]
    app = InferenceApp(settings)
    running = await start_server(app, "127.0.0.1", 0)
    await app.start()
    await running.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return Service(app, running, channel), channel


async def _close(service: Service, channel: grpc.aio.Channel) -> None:
    await channel.close()
    await service.running.server.stop(0)
    await service.app.stop()


@pytest.fixture(scope="module")
async def service(tiny_dir: Path) -> AsyncIterator[Service]:
    # A wide batching window so concurrent test requests reliably share a pipeline call.
    started, channel = await _start(tiny_dir, max_queue_delay_ms=300, max_batch_size=4)
    yield started
    await _close(started, channel)


def _params(prompt: str = "a red fox in snow", **fields: object) -> common_pb2.GenerationParameters:
    defaults: dict[str, object] = {"width": 64, "height": 64, "steps": 3, "seed": 11}
    return common_pb2.GenerationParameters(prompt=prompt, **{**defaults, **fields})  # type: ignore[arg-type]


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    image = Image.new("RGB", size, colour)
    # A gradient so "kept exactly" means something.
    pixels = np.asarray(image).copy()
    pixels[..., 0] = np.arange(size[0])[None, :] % 256
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def _collect(call: grpc.aio.UnaryStreamCall) -> list[common_pb2.GenerationEvent]:
    return [event async for event in call]


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def test_model_info_describes_the_loaded_model(service: Service) -> None:
    info = await service.stub.GetModelInfo(inference_pb2.GetModelInfoRequest())
    assert info.architecture == "QwenImageTransformer2DModel"
    assert info.model_id == "tiny" and len(info.model_revision) == 12
    assert (info.device, info.dtype) == ("cpu", "float32")
    assert info.limits.size_multiple == 16 and info.limits.max_images == 4
    assert info.batching.max_batch_size == 4
    assert info.transformer_parameters > 0


async def test_text_to_image_streams_queue_steps_and_result(service: Service) -> None:
    events = await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params(steps=4))))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "result"
    assert [e.step.step for e in events if e.HasField("step")] == [1, 2, 3, 4]
    assert all(e.step.total_steps == 4 for e in events if e.HasField("step"))
    result = events[-1].result
    assert len(result.images) == 1 and result.images[0].seed == 11
    assert Image.open(io.BytesIO(result.images[0].data)).size == (64, 64)
    assert result.model_id == "tiny" and result.steps == 4
    assert result.timings.denoise_s > 0 and result.timings.total_s >= result.timings.denoise_s
    assert result.effective_negative_prompt == " "  # CFG on by default, no negative prompt given


async def test_same_seed_same_bytes_and_equal_to_the_domain_call(service: Service) -> None:
    request = common_pb2.TextToImageRequest(parameters=_params("一只戴帽子的猫 a cat", seed=5, num_images=2))
    first = (await _collect(service.stub.TextToImage(request)))[-1].result
    second = (await _collect(service.stub.TextToImage(request)))[-1].result
    assert [i.data for i in first.images] == [i.data for i in second.images]
    assert [i.seed for i in first.images] == [5, 6]
    direct = pipelines.run(
        service.app.model.loaded,
        [
            GenerationRequest(
                kind="text_to_image",
                prompt="一只戴帽子的猫 a cat",
                width=64,
                height=64,
                steps=3,
                seed=5,
                num_images=2,
                true_cfg_scale=4.0,
            )
        ],
    )[0]
    assert list(direct.images) == [i.data for i in first.images]


async def test_unset_seed_is_assigned_and_reported(service: Service) -> None:
    params = _params()
    params.ClearField("seed")
    result = (await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=params))))[-1].result
    again = _params(seed=result.images[0].seed)
    replay = (await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=again))))[-1].result
    assert replay.images[0].data == result.images[0].data


async def test_concurrent_compatible_requests_share_a_batch_with_identical_images(service: Service) -> None:
    prompts = ["a lighthouse", "山水画", "a city at night 夜景"]
    alone = [
        (await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params(p, seed=i)))))[-1]
        for i, p in enumerate(prompts)
    ]
    together = await asyncio.gather(
        *(
            _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params(p, seed=i))))
            for i, p in enumerate(prompts)
        )
    )
    assert [events[-1].result.batch_size for events in together] == [3, 3, 3]
    assert [a.result.batch_size for a in alone] == [1, 1, 1]
    assert [e[-1].result.images[0].data for e in together] == [a.result.images[0].data for a in alone]


async def test_requests_of_different_shapes_are_not_batched(service: Service) -> None:
    small, large = await asyncio.gather(
        _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params(width=64)))),
        _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params(width=96)))),
    )
    assert small[-1].result.batch_size == 1 and large[-1].result.batch_size == 1
    assert small[-1].result.images[0].width == 64 and large[-1].result.images[0].width == 96


async def test_inpaint_keeps_pixels_outside_the_mask(service: Service) -> None:
    source = _png((64, 64))
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    request = common_pb2.InpaintRequest(parameters=_params(width=0, height=0), image=source, mask=buffer.getvalue())
    result = (await _collect(service.stub.Inpaint(request)))[-1].result
    out, original = _pixels(result.images[0].data), _pixels(source)
    outside = mask == 0
    assert np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out[~outside], original[~outside])


async def test_outpaint_grows_the_canvas_and_keeps_the_original(service: Service) -> None:
    source = _png((64, 48))
    extension = common_pb2.OutpaintExtension(left=16, right=32, bottom=16)
    request = common_pb2.OutpaintRequest(parameters=_params(width=0, height=0), image=source, extension=extension)
    result = (await _collect(service.stub.Outpaint(request)))[-1].result
    out = _pixels(result.images[0].data)
    assert out.shape[:2] == (64, 112)
    assert np.array_equal(out[0:48, 16:80], _pixels(source))


async def test_each_output_format_is_what_it_says(service: Service) -> None:
    expected = {
        common_pb2.IMAGE_FORMAT_PNG: "PNG",
        common_pb2.IMAGE_FORMAT_JPEG: "JPEG",
        common_pb2.IMAGE_FORMAT_WEBP: "WEBP",
    }
    for pb_format, pil_format in expected.items():
        params = _params(output_format=pb_format)
        result = (await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=params))))[-1]
        assert result.result.images[0].format == pb_format
        assert Image.open(io.BytesIO(result.result.images[0].data)).format == pil_format


def _mask_of(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("rpc", "request_message", "field"),
    [
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(width=100)), "parameters.width"),
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(height=4096)), "parameters.height"),
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(steps=1)), "parameters.steps"),
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(steps=500)), "parameters.steps"),
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(num_images=5)), "parameters.num_images"),
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(prompt="")), "parameters.prompt"),
        ("TextToImage", common_pb2.TextToImageRequest(parameters=_params(prompt="猫 " * 1200)), "parameters.prompt"),
        (
            "Inpaint",
            common_pb2.InpaintRequest(
                parameters=_params(width=0, height=0), image=_png((64, 64)), mask=_mask_of((48, 64))
            ),
            "mask",
        ),
        (
            "Inpaint",
            common_pb2.InpaintRequest(
                parameters=_params(width=0, height=0), image=b"not an image", mask=_mask_of((64, 64))
            ),
            "image",
        ),
        (
            "Outpaint",
            common_pb2.OutpaintRequest(
                parameters=_params(width=0, height=0), image=_png((64, 64)), extension=common_pb2.OutpaintExtension()
            ),
            "extension",
        ),
        (
            "Outpaint",
            common_pb2.OutpaintRequest(
                parameters=_params(width=0, height=0),
                image=_png((64, 64)),
                extension=common_pb2.OutpaintExtension(left=10),
            ),
            "extension.left",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    service: Service, rpc: str, request_message, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(getattr(service.stub, rpc)(request_message))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in field_violations(caught.value)]
    assert field in fields, fields


async def test_cancelled_call_stops_the_work_and_frees_the_worker(service: Service) -> None:
    long_params = _params(width=256, height=256, steps=60)
    call = service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=long_params))
    async for event in call:
        if event.HasField("step"):
            break
    call.cancel()
    # Had the batch run on, this request would wait behind ~59 more steps of a 256² image.
    follow_up = await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params())))
    result = follow_up[-1].result
    assert result.timings.queue_s < 0.5 + 0.3  # the batching window is 0.3 s
    assert len(result.images) == 1


async def test_full_queue_is_resource_exhausted_with_retry_info(tiny_dir: Path) -> None:
    service, channel = await _start(tiny_dir, max_batch_size=1, queue_capacity=1, max_queue_delay_ms=0, warmup=False)
    try:
        running = service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params(steps=40, width=128)))
        async for event in running:  # wait until it left the queue and runs
            if event.HasField("step"):
                break
        waiting = service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params()))
        assert (await waiting.read()).queued.position == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(service.stub.TextToImage(common_pb2.TextToImageRequest(parameters=_params())))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (retry_delay_s(caught.value) or 0) > 0
        running.cancel()
        last = await waiting.read()
        while not last.HasField("result"):
            last = await waiting.read()
        assert len(last.result.images) == 1  # the service kept serving
    finally:
        await _close(service, channel)


async def test_out_of_gpu_memory_is_resource_exhausted_and_the_service_goes_on(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CPU cannot run out of GPU memory: make the next pipeline call fail the way torch does on CUDA.
    real_run = pipelines.run
    failures = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")]

    def run_once_out_of_memory(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return real_run(*args, **kwargs)

    monkeypatch.setattr("inkloop_inference.model.pipelines.run", run_once_out_of_memory)
    request = common_pb2.TextToImageRequest(parameters=_params(seed=21))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(service.stub.TextToImage(request))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (retry_delay_s(caught.value) or 0) > 0
    assert len((await _collect(service.stub.TextToImage(request)))[-1].result.images) == 1


async def test_results_are_counted_and_timed_by_phase(service: Service) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    images = sample("inkloop_inference_images_total", kind="text_to_image")
    denoised = sample("inkloop_inference_phase_seconds_sum", phase="denoise")
    decodes = sample("inkloop_inference_phase_seconds_count", phase="decode")
    steps = sample("inkloop_inference_step_seconds_count")
    request = common_pb2.TextToImageRequest(parameters=_params(steps=3, num_images=2))
    result = (await _collect(service.stub.TextToImage(request)))[-1].result
    assert sample("inkloop_inference_images_total", kind="text_to_image") - images == 2
    assert sample("inkloop_inference_phase_seconds_count", phase="decode") - decodes == 1
    assert sample("inkloop_inference_step_seconds_count") - steps == 1
    observed = sample("inkloop_inference_phase_seconds_sum", phase="denoise") - denoised
    assert observed == pytest.approx(result.timings.denoise_s)  # the figure the client was given


async def test_edit_without_an_edit_model_is_failed_precondition_and_not_listed(service: Service) -> None:
    info = await service.stub.GetModelInfo(inference_pb2.GetModelInfoRequest())
    assert common_pb2.GENERATION_KIND_EDIT not in info.kinds
    assert not info.HasField("edit_model")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    request = common_pb2.EditRequest(parameters=_params(width=0, height=0), image=buffer.getvalue())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(service.stub.Edit(request))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "edit-model-path" in (caught.value.details() or "")
