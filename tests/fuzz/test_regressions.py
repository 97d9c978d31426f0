"""What the fuzzer found, pinned: each was a 500 or an INTERNAL before its fix."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from inkloop.rpc.status import field_violations
from inkloop.v1 import analytics_pb2, analytics_pb2_grpc, gateway_pb2_grpc

from .cases import Fuzzer
from .valid import TENANT

#: JSON that is not an object, and JSON nested deeper than Python's parser recurses.
NOT_AN_OBJECT = [b"0", b"1e308", b"null", b"true", b'"x"']
TOO_DEEP = [b"[" * 5_000, b'{"a":' * 5_000]


async def _post(fuzzer: Fuzzer, path: str, body: bytes, secret: str) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    async with fuzzer.http.post(fuzzer.stack.http_url + path, data=body, headers=headers) as response:
        return response.status, await response.json()


async def _post_status(fuzzer: Fuzzer, path: str, body: bytes) -> int:
    async with fuzzer.http.post(fuzzer.stack.http_url + path, data=body) as response:
        return response.status


@pytest.mark.parametrize("body", NOT_AN_OBJECT + TOO_DEEP, ids=lambda body: body[:8].decode())
async def test_a_job_body_that_is_no_json_object_is_a_400(fuzzer: Fuzzer, body: bytes) -> None:
    status, reply = await _post(fuzzer, "/v1/jobs", body, fuzzer.ctx.secrets["user"])
    assert (status, reply["code"], reply["field"]) == (400, "INVALID_ARGUMENT", "body")


@pytest.mark.parametrize("body", TOO_DEEP, ids=lambda body: body[:8].decode())
async def test_a_tracker_batch_nested_too_deep_is_a_400(fuzzer: Fuzzer, body: bytes) -> None:
    status, reply = await _post(fuzzer, "/collect", body, "")
    assert (status, reply["code"], reply["field"]) == (400, "INVALID_ARGUMENT", "body")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-(2**63), 0), (253_402_300_800, 0), (0, -1), (0, 2**31 - 1)],
    ids=["seconds-too-small", "after-year-9999", "negative-nanos", "nanos-too-large"],
)
@pytest.mark.parametrize("server", ["analytics", "gateway"])
async def test_a_query_range_no_timestamp_can_hold_is_invalid_argument(
    fuzzer: Fuzzer, server: str, seconds: int, nanos: int
) -> None:
    valid = Timestamp(seconds=1_767_225_600)
    request = analytics_pb2.PromptInsightsRequest(
        tenant_id=TENANT, range=analytics_pb2.TimeRange(start=Timestamp(seconds=seconds, nanos=nanos), end=valid)
    )
    channel = fuzzer.channels[server]
    stub = (
        analytics_pb2_grpc.AnalyticsServiceStub(channel)
        if server == "analytics"
        else gateway_pb2_grpc.AnalyticsQueryServiceStub(channel)
    )
    metadata = (("authorization", f"Bearer {fuzzer.ctx.secrets['analyst']}"),)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.PromptInsights(request, metadata=metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(refused.value)] == ["range.start"]


def _batch(**event: object) -> bytes:
    return json.dumps({"ev": [{"id": str(uuid.uuid4()), "type": "ev", **event}]}).encode()


@pytest.mark.parametrize("kind", [{}, [], {"pv": 1}], ids=["object", "list", "object-with-a-type-name"])
async def test_a_tracker_event_type_that_is_not_a_string_is_a_400(fuzzer: Fuzzer, kind: object) -> None:
    status, reply = await _post(fuzzer, "/collect", _batch(type=kind), "")
    assert (status, reply["code"], reply["field"]) == (400, "INVALID_ARGUMENT", "ev[0].type")


@pytest.mark.parametrize("millis", [1e308, -1e308, float("inf"), float("nan"), 2**70, -(10**400)])
async def test_a_tracker_time_no_timestamp_can_hold_is_taken_in_not_a_500(fuzzer: Fuzzer, millis: float) -> None:
    """Python's json writes and reads NaN and Infinity, as a browser's JSON.stringify never would."""
    status = await _post_status(fuzzer, "/collect", _batch(t=millis))
    assert status == 204


@pytest.mark.parametrize("signature", ["H\U000218f5", "ú©", "\U000e00dc:7"])
async def test_a_signed_url_with_a_non_ascii_signature_is_a_401(fuzzer: Fuzzer, signature: str) -> None:
    path, _, query = fuzzer.ctx.download_path.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    params["sig"] = signature
    async with fuzzer.http.get(fuzzer.stack.http_url + path, params=params) as response:
        assert response.status == 401
