"""TLS from the gateway to inference (mTLS): a real tiny-model inference service that only speaks mTLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from inkloop.rpc.client import channel_credentials
from inkloop.rpc.server import start_server, tls_credentials
from inkloop.v1 import gateway_pb2

from .conftest import Inference, StartGateway, events_of, text_task


@pytest.fixture
async def mtls_inference(tiny_model_dir: Path, pki: Path) -> AsyncIterator[Inference]:
    from inkloop_inference.server import InferenceApp
    from inkloop_inference.settings import InferenceSettings

    settings = InferenceSettings(
        model_path=tiny_model_dir,
        port=0,
        warmup=False,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_client_ca_file=pki / "ca.pem",  # clients must present a certificate this CA signed
    )
    app = InferenceApp(settings)
    running = await start_server(app, "127.0.0.1", 0, server_credentials=tls_credentials(settings))
    await app.start()
    await running.set_serving(True)
    yield Inference(app, running)
    await running.server.stop(0)
    await app.stop()


async def _generate(start_gateway: StartGateway, target: str, data_dir: Path, **tls: object) -> gateway_pb2.JobEvent:
    gateway = await start_gateway(data_dir, inference_target=target, **tls)
    request = gateway_pb2.GenerateRequest(task=text_task(seed=5))
    return (await events_of(gateway.jobs.Generate(request, metadata=gateway.auth(), timeout=60)))[-1]


async def test_the_gateway_reaches_an_mtls_inference_service_with_its_client_certificate(
    start_gateway: StartGateway, mtls_inference: Inference, pki: Path, tmp_path: Path
) -> None:
    client = {"upstream_tls_cert_file": pki / "client.pem", "upstream_tls_key_file": pki / "client.key"}
    end = await _generate(
        start_gateway, mtls_inference.target, tmp_path / "a", upstream_tls_ca_file=pki / "ca.pem", **client
    )
    assert end.WhichOneof("event") == "succeeded" and len(end.succeeded.images[0].data) > 0

    # Without a client certificate the handshake is refused: the gateway cannot even learn the model's
    # limits to validate against, so the call is UNAVAILABLE and no job is accepted.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _generate(start_gateway, mtls_inference.target, tmp_path / "b", upstream_tls_ca_file=pki / "ca.pem")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_credentials_need_a_ca_and_both_halves_of_a_certificate(pki: Path) -> None:
    assert channel_credentials(None) is None  # plaintext (a service mesh encrypts)
    with pytest.raises(ValueError, match="both"):
        channel_credentials(pki / "ca.pem", pki / "client.pem")
    with pytest.raises(ValueError, match="CA"):
        channel_credentials(None, pki / "client.pem", pki / "client.key")
    assert channel_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key") is not None
