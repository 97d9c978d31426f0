"""The HTTP/JSON bridge: domain errors as HTTP statuses with {code, message, field, retry_after_s, policy},
and the bridge routes against a real gateway (same validation, safety and rate limits as gRPC)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import grpc
import pytest
from gateway.conftest import Inference, dead_address
from google.protobuf import json_format

from inkloop import errors
from inkloop.v1 import inference_pb2, inference_pb2_grpc
from inkloop_gateway.admission.safety import PolicyViolation
from inkloop_gateway.api.http_json import error_body, error_response

from .conftest import StartWebGateway, System


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        (
            errors.InvalidArgument("task.text_to_image.parameters.width", "width 100 is not a multiple of 16"),
            400,
            {"code": "INVALID_ARGUMENT", "field": "task.text_to_image.parameters.width"},
        ),
        (PolicyViolation("sexual-minors"), 422, {"code": "FAILED_PRECONDITION", "policy": "sexual-minors"}),
        (errors.FailedPrecondition("job already finished"), 409, {"code": "FAILED_PRECONDITION", "policy": ""}),
        (
            errors.ResourceExhausted("too many requests", retry_after_s=2.5),
            429,
            {"code": "RESOURCE_EXHAUSTED", "retry_after_s": 2.5},
        ),
        (errors.Unauthenticated("invalid API key"), 401, {"code": "UNAUTHENTICATED"}),
        (errors.PermissionDenied("needs analyst"), 403, {"code": "PERMISSION_DENIED"}),
        (errors.NotFound("job not found"), 404, {"code": "NOT_FOUND"}),
        (errors.Unavailable("analytics down"), 503, {"code": "UNAVAILABLE"}),
        (json_format.ParseError('no field named "nope"'), 400, {"code": "INVALID_ARGUMENT"}),
        (RuntimeError("secret internals"), 500, {"code": "INTERNAL", "message": "internal error"}),
    ],
)
def test_error_mapping(error: Exception, status: int, expected: dict[str, Any]) -> None:
    got_status, body = error_body(error)
    assert got_status == status
    assert expected.items() <= body.items()
    assert set(body) >= {"code", "message", "field", "policy"}


def test_error_response_headers() -> None:
    limited = error_response(errors.ResourceExhausted("slow down", retry_after_s=2.2))
    assert limited.headers["Retry-After"] == "2"
    assert error_response(errors.Unauthenticated("no key")).headers["WWW-Authenticate"] == "Bearer"
    assert error_response(errors.Unavailable("down")).headers["Retry-After"] == "2"


def _job(prompt: str = "a red fox", **parameters: Any) -> dict[str, Any]:
    values = {"prompt": prompt, "width": 64, "height": 64, "steps": 2, **parameters}
    return {"task": {"textToImage": {"parameters": values}}}


async def _post(http: aiohttp.ClientSession, system: System, body: Any, who: str | None = "user") -> tuple[int, Any]:
    headers = system.auth(who) if who else {}
    async with http.post("/v1/jobs", data=json.dumps(body), headers=headers) as reply:
        return reply.status, await reply.json()


async def test_submit_follow_and_errors_over_http(start_web_gateway: StartWebGateway) -> None:
    system = await start_web_gateway(rate_key_requests_burst=1.0, rate_key_requests_per_s=0.01)
    async with aiohttp.ClientSession(system.url) as http:
        assert (await _post(http, system, _job(), who=None))[0] == 401
        status, body = await _post(http, system, _job(width=100))
        assert (status, body["code"], body["field"]) == (400, "INVALID_ARGUMENT", "task.text_to_image.parameters.width")
        status, body = await _post(http, system, {"task": {"nope": 1}})
        assert (status, body["code"]) == (400, "INVALID_ARGUMENT")
        status, body = await _post(http, system, _job("child porn"))
        assert (status, body["policy"]) == (422, "sexual-minors") and "porn" not in body["message"]

        status, body = await _post(http, system, {**_job(seed=5), "requestId": "web-req-1"})
        assert status == 200 and body["job"]["requestId"] == "web-req-1"
        job_id = body["job"]["jobId"]
        async with http.get(f"/v1/jobs/{job_id}/events", headers=system.auth()) as reply:
            assert reply.status == 200 and reply.content_type == "text/event-stream"
            events = [json.loads(line[5:]) for line in (await reply.text()).splitlines() if line.startswith("data:")]
        image = events[-1]["succeeded"]["images"][0]
        assert image["downloadUrl"] and "data" not in image  # the page loads it by signed URL
        async with http.get(f"/v1/jobs/{job_id}/events", headers=system.auth("analyst")) as reply:
            assert reply.status == 200  # same tenant
        async with http.get("/v1/jobs/nope/events", headers=system.auth()) as reply:
            assert reply.status == 404 and (await reply.json())["code"] == "NOT_FOUND"
        async with http.post(f"/v1/jobs/{job_id}:cancel", headers=system.auth()) as reply:
            assert reply.status == 409 and (await reply.json())["code"] == "FAILED_PRECONDITION"  # already done

        status, body = await _post(http, system, _job())
        assert status == 429 and body["code"] == "RESOURCE_EXHAUSTED" and body["retry_after_s"] > 0

        async with http.get("/v1/analytics/funnel", headers=system.auth("user")) as reply:
            assert reply.status == 403
        async with http.get("/v1/analytics/funnel", headers=system.auth("analyst")) as reply:
            assert reply.status == 503  # analytics is unreachable here


async def test_page_and_tracker_are_served(start_web_gateway: StartWebGateway, inference: Inference) -> None:
    system = await start_web_gateway()
    async with aiohttp.ClientSession(system.url) as http:
        for path, kind in [("/", "text/html"), ("/dashboard", "text/html"), ("/hm.js", "text/javascript")]:
            async with http.get(path) as reply:
                assert reply.status == 200 and reply.content_type == kind
        async with http.get("/v1/web/config") as reply:
            config = await reply.json()
    assert config["api_key"] == ""  # no key is handed out unless configured
    async with grpc.aio.insecure_channel(inference.target) as channel:
        info = await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(inference_pb2.GetModelInfoRequest())
    model = config["model"]
    assert (model["steps"], model["trueCfgScale"]) == (info.defaults.steps, info.defaults.true_cfg_scale)
    assert [(s["width"], s["height"]) for s in model["sizes"]] == [(s.width, s.height) for s in info.defaults.sizes]
    assert (model["sizes"][0]["width"], model["sizes"][0]["height"]) == (info.defaults.width, info.defaults.height)


async def test_page_config_without_inference_leaves_the_model_defaults_to_the_server(
    start_web_gateway: StartWebGateway,
) -> None:
    system = await start_web_gateway(inference_target=dead_address())
    async with aiohttp.ClientSession(system.url) as http, http.get("/v1/web/config") as reply:
        assert reply.status == 200
        assert (await reply.json())["model"] is None


async def test_only_a_user_key_is_ever_injected_into_the_page(start_web_gateway: StartWebGateway, tmp_path) -> None:
    from inkloop_gateway.admission.keys import KeyStore, Role
    from inkloop_gateway.api.bridge import page_key

    store = KeyStore(tmp_path / "keys.db")
    for role, injected in [(Role.USER, True), (Role.ANALYST, False), (Role.ADMIN, False)]:
        path = tmp_path / f"{role.value}-key"
        path.write_text(store.create("dev", role, role.value)[1] + "\n")
        assert bool(page_key(store, path)) is injected
    assert page_key(store, None) == ""
    store.close()
