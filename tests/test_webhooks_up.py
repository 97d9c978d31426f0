"""A webhook delivery outlives a SIGKILLed gateway: `inkloop up` restarts it and the pending retry is
made by the new process, with the same webhook-id and the same outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from standardwebhooks.webhooks import Webhook
from test_up import System, running_system
from test_up_supervision import FAST_RESTARTS, _eventually, _kill_and_wait_for_restart

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Receiver(ThreadingHTTPServer):
    """Answers 500 until `healthy`, then 200; keeps every request."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.healthy = False

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200 if receiver.healthy else 500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {
        "INKLOOP_GATEWAY_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        # A long first backoff: the gateway is killed while it waits.
        "INKLOOP_GATEWAY_WEBHOOK_RETRY_SCHEDULE_S": "[6, 6]",
    }
    with running_system(tmp_path_factory.mktemp("up-webhooks"), args=FAST_RESTARTS, env=env) as running:
        yield running


def _admin(system: System) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {(system.data_dir / 'dev-api-key').read_text().strip()}"),)


def test_a_pending_retry_is_delivered_after_the_gateway_is_killed(system: System, receiver: Receiver) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{system.gateway}") as channel:
        jobs, admin = gateway_pb2_grpc.GatewayServiceStub(channel), gateway_pb2_grpc.AdminServiceStub(channel)
        secret = admin.GetJobWebhookSecret(gateway_pb2.GetJobWebhookSecretRequest(), metadata=_admin(system)).secret
        parameters = common_pb2.GenerationParameters(prompt="a kite", width=64, height=64, steps=2, seed=8)
        task = common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))
        job = jobs.SubmitJob(
            gateway_pb2.SubmitJobRequest(task=task, webhook_url=receiver.url), metadata=_admin(system)
        ).job
    _eventually(lambda: len(receiver.received) == 1, "the first attempt (answered 500)", system)
    time.sleep(0.5)  # the attempt is recorded before the kill
    # From now on the receiver answers 200; the next attempt is due 6 s after the first, long after
    # the kill: only the restarted gateway can make it.
    receiver.healthy = True
    _kill_and_wait_for_restart(system, "gateway")
    _eventually(lambda: len(receiver.received) == 2, "the retry, from the restarted gateway", system, timeout_s=60)

    (first_headers, first_body), (second_headers, second_body) = receiver.received
    assert first_headers["webhook-id"] == second_headers["webhook-id"] == f"msg_{job.job_id}_job"
    assert first_body == second_body  # one outcome, whichever process sends it
    payload = Webhook(secret).verify(second_body, second_headers)
    assert payload["type"] == "job.succeeded" and payload["data"]["job_id"] == job.job_id

    def recorded() -> gateway_pb2.WebhookDelivery:
        with grpc.insecure_channel(f"127.0.0.1:{system.gateway}") as channel:
            listed = gateway_pb2_grpc.AdminServiceStub(channel).ListWebhookDeliveries(
                gateway_pb2.ListWebhookDeliveriesRequest(job_id=job.job_id), metadata=_admin(system)
            )
        [found] = listed.deliveries
        return found

    # The receiver has the request before the gateway has its answer and writes the attempt down.
    _eventually(lambda: recorded().state == gateway_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED, "delivered", system)
    delivery = recorded()
    assert [a.http_status for a in delivery.attempts] == [500, 200]
    assert json.loads(second_body)["data"]["state"] == "SUCCEEDED"
