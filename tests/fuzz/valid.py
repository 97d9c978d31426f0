"""One valid, cheap request per message type, the seed of the "mutated valid" cases.

A type without a builder here starts from its empty message (with the tenant filled in when it has
a `tenant_id`), so RPCs added later are still fuzzed, only less deeply.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from inkloop.v1 import analytics_pb2 as apb
from inkloop.v1 import common_pb2, gateway_pb2

from .messages import TINY_PNG

TENANT = "acme"


@dataclass
class Context:
    """What the fuzzed stack holds that valid requests refer to (made by `fuzz.cases.seed`)."""

    #: role name (user, analyst, admin; other = a user of another tenant) -> API key secret
    secrets: dict[str, str]
    inference_target: str
    job_id: str = ""
    image_id: str = ""
    #: path and query of the finished job's signed download URL
    download_path: str = ""
    #: a key made to be revoked by RevokeApiKey cases
    victim_key_id: str = ""


def _mask_png() -> bytes:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


MASK_PNG = _mask_png()


def parameters() -> common_pb2.GenerationParameters:
    return common_pb2.GenerationParameters(prompt="a red fox in snow", width=64, height=64, steps=2, seed=7)


def text_task() -> common_pb2.GenerationTask:
    return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters()))


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def last_day() -> apb.TimeRange:
    now = time.time()
    return apb.TimeRange(start=_stamp(now - 86_400), end=_stamp(now + 60))


def _ingest(_ctx: Context) -> apb.IngestRequest:
    now = _stamp(time.time())
    front = apb.FrontendEvent(
        event_id=str(uuid.uuid4()),
        client_time=now,
        tenant_id=TENANT,
        visitor_id="v1",
        session_id="s1",
        type=apb.FRONTEND_EVENT_TYPE_TRACK_EVENT,
        category="generate",
        action="click",
        request_id="r1",
    )
    back = apb.BackendEvent(
        event_id=str(uuid.uuid4()),
        time=now,
        tenant_id=TENANT,
        request_id="r1",
        job_id="j1",
        type=apb.BACKEND_EVENT_TYPE_REQUESTED,
        variant="default",
        kind=common_pb2.GENERATION_KIND_TEXT_TO_IMAGE,
        width=64,
        height=64,
        steps=2,
        true_cfg_scale=4.0,
        num_images=1,
        seed=7,
        prompt=apb.PromptFeatures(length=17, language=apb.LANGUAGE_CLASS_EN, hash="ab" * 16),
    )
    return apb.IngestRequest(frontend=[front], backend=[back], batch_id=str(uuid.uuid4()))


def _click() -> apb.EventMatcher:
    return apb.EventMatcher(source=apb.EVENT_SOURCE_FRONTEND, name="click", category="generate", action="click")


def _requested() -> apb.EventMatcher:
    kind = apb.BACKEND_EVENT_TYPE_REQUESTED
    return apb.EventMatcher(source=apb.EVENT_SOURCE_BACKEND, name="request", backend_type=kind)


_BUILDERS: dict[str, Callable[[Context], Message]] = {
    "TextToImageRequest": lambda _: common_pb2.TextToImageRequest(parameters=parameters()),
    "InpaintRequest": lambda _: common_pb2.InpaintRequest(parameters=parameters(), image=TINY_PNG, mask=MASK_PNG),
    "OutpaintRequest": lambda _: common_pb2.OutpaintRequest(
        parameters=parameters(), image=TINY_PNG, extension=common_pb2.OutpaintExtension(right=16)
    ),
    # Fresh request ids: a repeated one returns the first job without looking at the task again.
    "SubmitJobRequest": lambda _: gateway_pb2.SubmitJobRequest(request_id=uuid.uuid4().hex, task=text_task()),
    "GenerateRequest": lambda _: gateway_pb2.GenerateRequest(request_id=uuid.uuid4().hex, task=text_task()),
    "GetJobRequest": lambda ctx: gateway_pb2.GetJobRequest(job_id=ctx.job_id),
    "WatchJobRequest": lambda ctx: gateway_pb2.WatchJobRequest(job_id=ctx.job_id),
    "CancelJobRequest": lambda ctx: gateway_pb2.CancelJobRequest(job_id=ctx.job_id),
    "ListJobsRequest": lambda _: gateway_pb2.ListJobsRequest(page_size=5),
    "CreateApiKeyRequest": lambda _: gateway_pb2.CreateApiKeyRequest(tenant_id=TENANT, role=gateway_pb2.ROLE_USER),
    "RevokeApiKeyRequest": lambda ctx: gateway_pb2.RevokeApiKeyRequest(key_id=ctx.victim_key_id),
    "SetVariantsRequest": lambda ctx: valid_variants(ctx),
    "IngestRequest": _ingest,
    "FunnelRequest": lambda _: apb.FunnelRequest(steps=[_click(), _requested()], window_s=3600, range=last_day()),
    "DiscrepancyRequest": lambda _: apb.DiscrepancyRequest(
        frontend=_click(), backend=_requested(), range=last_day(), bucket_s=3600, sample_size=5
    ),
    "PromptInsightsRequest": lambda _: apb.PromptInsightsRequest(range=last_day(), length_bucket_edges=[10, 100]),
    "FeatureAdoptionRequest": lambda _: apb.FeatureAdoptionRequest(range=last_day(), features=["generate"]),
    "CompareVariantsRequest": lambda _: apb.CompareVariantsRequest(range=last_day()),
    "ListAlertsRequest": lambda _: apb.ListAlertsRequest(range=last_day()),
}


def valid_variants(ctx: Context) -> gateway_pb2.SetVariantsRequest:
    return gateway_pb2.SetVariantsRequest(
        variants=[gateway_pb2.ModelVariant(name="default", target=ctx.inference_target, weight=1)]
    )


def valid_request(descriptor: Descriptor, ctx: Context) -> Message:
    builder = _BUILDERS.get(descriptor.name)
    message = builder(ctx) if builder else GetMessageClass(descriptor)()
    if "tenant_id" in descriptor.fields_by_name and not message.tenant_id:  # type: ignore[attr-defined]
        message.tenant_id = TENANT  # type: ignore[attr-defined]
    return message
