"""Signed webhooks of job outcomes: Standard Webhooks signatures that the `standardwebhooks` library
verifies, retries on the schedule with one webhook-id, one outcome per job, deliveries listed with
every attempt, on both job stores; and the outbound rules (no internal addresses unless allowed, no
redirects followed)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from harness import free_ports
from inkloop import errors
from inkloop.rpc.status import field_violations
from inkloop.v1 import gateway_pb2
from inkloop_gateway.webhooks.targets import RefusedTarget, Targets

from .conftest import Gateway, Receiver, StartGateway, finished, text_task

FAST = [0.2, 0.2, 0.2]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
S = gateway_pb2.WebhookDeliveryState


async def _until(check: Callable[[], Any], within_s: float = 20.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    return await check()


async def _deliveries(gateway: Gateway, job_id: str) -> list[gateway_pb2.WebhookDelivery]:
    reply = await gateway.admin.ListWebhookDeliveries(
        gateway_pb2.ListWebhookDeliveriesRequest(job_id=job_id), metadata=gateway.auth("admin")
    )
    return list(reply.deliveries)


async def _settled(gateway: Gateway, job_id: str, count: int) -> list[gateway_pb2.WebhookDelivery]:
    async def done() -> list[gateway_pb2.WebhookDelivery] | None:
        found = await _deliveries(gateway, job_id)
        return (
            found if len(found) == count and all(d.state != S.WEBHOOK_DELIVERY_STATE_PENDING for d in found) else None
        )

    settled = await _until(done)
    assert settled, await _deliveries(gateway, job_id)
    return settled


@pytest.fixture(params=["sqlite", "redis"])
async def webhook_gateway(request: pytest.FixtureRequest, start_gateway: StartGateway) -> Gateway:
    overrides: dict[str, object] = {"webhook_allowed_hosts": ["127.0.0.1"], "webhook_retry_schedule_s": FAST}
    if request.param == "redis":
        overrides["redis_url"] = request.getfixturevalue("redis_url")
    return await start_gateway(**overrides)


async def test_job_outcomes_reach_the_job_url_and_the_endpoints_signed(
    webhook_gateway: Gateway, receiver: Receiver
) -> None:
    gateway, admin = webhook_gateway, webhook_gateway.auth("admin")
    created = await gateway.admin.CreateWebhookEndpoint(
        gateway_pb2.CreateWebhookEndpointRequest(url=receiver.url + "?endpoint=1"), metadata=admin
    )
    endpoint = created.endpoint
    assert endpoint.secret.startswith("whsec_") and endpoint.endpoint_id.startswith("ep_")
    listed = await gateway.admin.ListWebhookEndpoints(gateway_pb2.ListWebhookEndpointsRequest(), metadata=admin)
    assert [(e.endpoint_id, e.secret) for e in listed.endpoints] == [(endpoint.endpoint_id, "")]
    job_secret = (
        await gateway.admin.GetJobWebhookSecret(gateway_pb2.GetJobWebhookSecretRequest(), metadata=admin)
    ).secret

    submitted = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a kite", seed=2), request_id="hooked", webhook_url=receiver.url),
        metadata=gateway.auth(),
    )
    job_id = submitted.job.job_id
    await finished(gateway, job_id)
    deliveries = await _settled(gateway, job_id, 2)
    assert {d.state for d in deliveries} == {S.WEBHOOK_DELIVERY_STATE_DELIVERED}
    assert {d.event_type for d in deliveries} == {gateway_pb2.WEBHOOK_EVENT_TYPE_JOB_SUCCEEDED}
    assert all([a.http_status for a in d.attempts] == [200] for d in deliveries)

    by_query = {path.partition("?")[2]: (headers, body) for path, headers, body in receiver.received}
    for secret, key in ((job_secret, ""), (endpoint.secret, "endpoint=1")):
        headers, body = by_query[key]
        payload = Webhook(secret).verify(body, headers)  # raises unless the signature is right
        assert payload["type"] == "job.succeeded"
        assert payload["data"]["job_id"] == job_id and payload["data"]["request_id"] == "hooked"
        assert payload["data"]["images"][0]["url"].startswith("/v1/images/")
        with pytest.raises(Exception, match="signature"):
            Webhook(secret).verify(body.replace(b"hooked", b"hacked"), headers)
    assert {headers["webhook-id"] for headers, _ in by_query.values()} == {d.delivery_id for d in deliveries}


async def test_a_receiver_failing_twice_gets_the_third_attempt_with_the_same_id(
    webhook_gateway: Gateway, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    gateway = webhook_gateway
    submitted = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a kite", seed=3), webhook_url=receiver.url),
        metadata=gateway.auth(),
    )
    await finished(gateway, submitted.job.job_id)
    [delivery] = await _settled(gateway, submitted.job.job_id, 1)
    assert delivery.state == S.WEBHOOK_DELIVERY_STATE_DELIVERED
    assert [a.http_status for a in delivery.attempts] == [500, 503, 200]
    assert [a.error for a in delivery.attempts] == ["HTTP 500", "HTTP 503", ""]
    ids = {headers["webhook-id"] for _, headers, _ in receiver.received}
    bodies = {body for _, _, body in receiver.received}
    assert ids == {delivery.delivery_id} and len(bodies) == 1  # one message: one id, one outcome


async def test_a_delivery_gives_up_after_the_schedule_and_never_follows_a_redirect(
    webhook_gateway: Gateway, receiver: Receiver
) -> None:
    receiver.answers = [302, 500, 500, 500]
    gateway = webhook_gateway
    submitted = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a kite", seed=4), webhook_url=receiver.url),
        metadata=gateway.auth(),
    )
    await finished(gateway, submitted.job.job_id)
    [delivery] = await _settled(gateway, submitted.job.job_id, 1)
    assert delivery.state == S.WEBHOOK_DELIVERY_STATE_FAILED
    assert [a.http_status for a in delivery.attempts] == [302, 500, 500, 500]  # 1 + len(schedule) attempts
    assert [path for path, _, _ in receiver.received] == ["/hooks/inkloop"] * 4  # /elsewhere never called


async def test_an_endpoint_gets_only_the_outcomes_it_asked_for(webhook_gateway: Gateway, receiver: Receiver) -> None:
    gateway = webhook_gateway
    await gateway.admin.CreateWebhookEndpoint(
        gateway_pb2.CreateWebhookEndpointRequest(
            url=receiver.url, event_types=[gateway_pb2.WEBHOOK_EVENT_TYPE_JOB_FAILED]
        ),
        metadata=gateway.auth("admin"),
    )
    submitted = await gateway.jobs.SubmitJob(
        gateway_pb2.SubmitJobRequest(task=text_task("a kite", seed=5)), metadata=gateway.auth()
    )
    await finished(gateway, submitted.job.job_id)
    [delivery] = await _settled(gateway, submitted.job.job_id, 1)
    assert delivery.state == S.WEBHOOK_DELIVERY_STATE_SKIPPED and not delivery.attempts
    assert receiver.received == []


async def test_internal_targets_are_refused_unless_allowed(gateway: Gateway) -> None:
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.jobs.SubmitJob(
                gateway_pb2.SubmitJobRequest(task=text_task(), webhook_url=url), metadata=gateway.auth()
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(refused.value)] == ["webhook_url"], url
    with pytest.raises(grpc.aio.AioRpcError) as endpoint:
        await gateway.admin.CreateWebhookEndpoint(
            gateway_pb2.CreateWebhookEndpointRequest(url="http://192.168.0.10/hook"), metadata=gateway.auth("admin")
        )
    assert endpoint.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_names_are_checked_after_resolving_and_allow_lists_open_them() -> None:
    closed = Targets()
    with pytest.raises(RefusedTarget, match="loopback"):
        await closed.resolve("http://localhost:8080/hook")
    with pytest.raises(errors.InvalidArgument):
        closed.check_url("http://[::ffff:127.0.0.1]/", "url")
    opened = Targets(["localhost", "10.0.0.0/8"])
    [*found] = await opened.resolve("http://localhost:8080/hook")
    assert found and all(result["port"] == 8080 for result in found)
    opened.check_url("http://10.9.8.7/hook", "url")
    with pytest.raises(errors.InvalidArgument):
        opened.check_url("http://172.16.0.1/hook", "url")


async def test_the_example_receiver_verifies_and_deduplicates(webhook_gateway: Gateway) -> None:
    spec = importlib.util.spec_from_file_location("webhook_receiver", EXAMPLES / "webhook_receiver.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    [port] = free_ports(1)
    created = await webhook_gateway.admin.CreateWebhookEndpoint(
        gateway_pb2.CreateWebhookEndpointRequest(url=f"http://127.0.0.1:{port}/hooks/inkloop"),
        metadata=webhook_gateway.auth("admin"),
    )
    app = example.receiver(created.endpoint.secret)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        submitted = await webhook_gateway.jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(task=text_task("a kite", seed=6)), metadata=webhook_gateway.auth()
        )
        await finished(webhook_gateway, submitted.job.job_id)
        [delivery] = await _settled(webhook_gateway, submitted.job.job_id, 1)
        assert [a.http_status for a in delivery.attempts] == [204]
        assert [event["data"]["job_id"] for event in app[example.EVENTS]] == [submitted.job.job_id]
        forged = {"webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/hooks/inkloop", data=b"{}", headers=forged) as reply,
        ):
            assert reply.status == 400  # a forged message is refused
    finally:
        await runner.cleanup()
