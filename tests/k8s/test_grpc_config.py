"""The clients' gRPC service config: retries only idempotent calls, and gRPC itself accepts it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import inkloop.v1.analytics_pb2
import inkloop.v1.gateway_pb2
import inkloop.v1.inference_pb2  # noqa: F401  (registers the services in the default pool)
from k8s.manifests import K8S, Obj, of_kind

SERVICE_CONFIG = K8S / "base" / "grpc" / "service-config.json"
CHANNEL_ARGS = K8S / "base" / "grpc" / "channel-args.json"

#: Safe to send twice: reads, and Ingest (events carry an event_id; a repeat is acknowledged as a
#: duplicate). SubmitJob is idempotent only when the client sets request_id, so it is not retried.
IDEMPOTENT = {
    "inkloop.v1.GatewayService": {"GetJob", "ListJobs", "WatchJob"},
    "inkloop.v1.AdminService": {"ListApiKeys", "ListVariants"},
    "inkloop.v1.InferenceService": {"GetModelInfo"},
    "inkloop.v1.AnalyticsService": {
        "Ingest",
        "Funnel",
        "Discrepancy",
        "PromptInsights",
        "FeatureAdoption",
        "CompareVariants",
        "ListAlertRules",
        "ListAlerts",
    },
    "grpc.health.v1.Health": {"Check"},
}


def _config() -> dict:
    return json.loads(SERVICE_CONFIG.read_text(encoding="utf-8"))


def _retried() -> list[tuple[str, str]]:
    return [
        (name["service"], name["method"])
        for method_config in _config()["methodConfig"]
        if "retryPolicy" in method_config
        for name in method_config["name"]
    ]


def test_round_robin_is_the_policy() -> None:
    assert _config()["loadBalancingConfig"] == [{"round_robin": {}}]


def test_only_idempotent_methods_are_retried_and_only_on_unavailable() -> None:
    for service, method in _retried():
        assert method in IDEMPOTENT.get(service, set()), f"{service}/{method} is not safe to send twice"
    for method_config in _config()["methodConfig"]:
        policy = method_config.get("retryPolicy")
        if policy:
            assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
            assert 2 <= policy["maxAttempts"] <= 5
            assert "retryThrottling" in _config(), "retries without throttling can storm a recovering server"


def test_retried_methods_exist_and_none_streams_requests() -> None:
    pool = descriptor_pool.Default()
    for service, method in _retried():
        if service.startswith("grpc.health"):
            continue
        descriptor = pool.FindServiceByName(service).FindMethodByName(method)
        assert descriptor is not None, f"{service}/{method}"
        # A client stream cannot be replayed once sent; a server stream (WatchJob) is retried only
        # until its first message arrives, after which the client resumes with a new WatchJob.
        assert not descriptor.client_streaming, f"{service}/{method}"


def test_streams_have_no_deadline_in_the_config() -> None:
    pool = descriptor_pool.Default()
    for method_config in _config()["methodConfig"]:
        if "timeout" not in method_config:
            continue
        for name in method_config["name"]:
            if name["service"].startswith("grpc.health"):
                continue
            method = pool.FindServiceByName(name["service"]).FindMethodByName(name["method"])
            assert not method.server_streaming, f"{name['method']}: a stream would be cut at the timeout"


def test_configmap_carries_the_same_files(overlay: str, objs: list[Obj]) -> None:
    config = next(c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("grpc-service-config"))
    assert json.loads(config["data"]["service-config.json"]) == _config()
    assert json.loads(config["data"]["channel-args.json"]) == json.loads(CHANNEL_ARGS.read_text(encoding="utf-8"))


@pytest.fixture
def health_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield port
    server.stop(None)


def test_grpc_accepts_the_service_config_and_channel_args(health_server: int) -> None:
    options = list(json.loads(CHANNEL_ARGS.read_text(encoding="utf-8")).items())
    options.append(("grpc.service_config", SERVICE_CONFIG.read_text(encoding="utf-8")))
    with grpc.insecure_channel(f"dns:///localhost:{health_server}", options=options) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_rejects_a_broken_service_config(health_server: int) -> None:
    """The check above would prove nothing if gRPC ignored service configs it cannot parse."""
    broken = json.dumps({"methodConfig": [{"name": [{"service": "x"}], "retryPolicy": {"maxAttempts": "many"}}]})
    options = [("grpc.service_config", broken)]
    with grpc.insecure_channel(f"localhost:{health_server}", options=options) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
