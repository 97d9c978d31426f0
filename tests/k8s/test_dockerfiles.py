"""Images: run the right service as non-root, with settings and ports the services know, and a
health check that works (run here against a real gRPC health server)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from k8s.manifests import ROOT, SETTINGS, env_names

DOCKER = ROOT / "docker"
HEALTH_CHECK = DOCKER / "grpc-health-check.py"


def _stages(service: str) -> list[str]:
    """The final stages of the service's Dockerfile (those that are not `*-build`)."""
    text = (DOCKER / f"{service}.Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)  # join continuation lines
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    return [s for s in stages if not re.match(r"\S+ AS (\S+-)?build\b", s)]


@pytest.mark.parametrize("service", SETTINGS)
def test_image_runs_the_service_as_non_root(service: str) -> None:
    for stage in _stages(service):
        user = re.findall(r"^USER (\S+)$", stage, re.M)
        assert user and user[-1].split(":")[0] not in ("0", "root"), stage.splitlines()[0]
        assert f'ENTRYPOINT ["inkloop", "serve", "{service}"]' in stage


@pytest.mark.parametrize("service", SETTINGS)
def test_image_env_names_are_settings(service: str) -> None:
    known = env_names(SETTINGS[service])
    for stage in _stages(service):
        for env in re.findall(r"^ENV (.+)$", stage, re.M):
            for name in re.findall(r"(INKLOOP_\w+)=", env):
                assert name in known, f"{service}.Dockerfile: {name} is not a setting"


@pytest.mark.parametrize("service", SETTINGS)
def test_image_exposes_and_checks_the_default_ports(service: str) -> None:
    settings = SETTINGS[service]
    prefix = str(settings.model_config["env_prefix"])
    ports = {int(info.default) for name, info in settings.model_fields.items() if name.endswith("port")}
    grpc_port = settings.model_fields["port"].default
    for stage in _stages(service):
        exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", stage, re.M) for p in line.split()}
        assert exposed == ports
        check = re.search(r"^HEALTHCHECK .* CMD (.+)$", stage, re.M)
        assert check, "no HEALTHCHECK"
        assert f'"--port-env", "{prefix}PORT", "--default-port", "{grpc_port}"' in check[1]


def test_inference_image_has_a_cuda_default_and_a_cpu_target() -> None:
    text = (DOCKER / "inference.Dockerfile").read_text(encoding="utf-8")
    finals = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert finals[-1][1] == "cuda", "the last stage (the default target) must be the CUDA image"
    assert "cpu" in [name for _, name in finals]
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", text, re.M)
    # The pin of constraints.txt, from the PyTorch index of each build.
    assert len(re.findall(r"pip install .*--index-url \S+ torch==2\.13\.0", text)) == 2
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert text.count('".[inference]"') == 2


def test_the_analytics_image_leaves_torch_out() -> None:
    text = (DOCKER / "analytics.Dockerfile").read_text(encoding="utf-8")
    assert "torch==" not in text and "[inference]" not in text
    assert "python:3.11-slim" in text


def test_the_gateway_image_has_cpu_torch_for_the_semantic_safety_layer_and_no_model() -> None:
    # The production overlay turns the semantic layer on, so the image carries its extra, on the CPU
    # build of the pinned torch (never the CUDA one) and without the diffusers pipelines.
    text = (DOCKER / "gateway.Dockerfile").read_text(encoding="utf-8")
    assert '--index-url "${TORCH_CPU_INDEX}" torch==2.13.0' in text and "download.pytorch.org/whl/cpu" in text
    assert '".[safety-semantic]"' in text and "[inference]" not in text
    assert "python:3.11-slim" in text


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


def _check(port: int | None) -> subprocess.CompletedProcess[str]:
    env = {"INKLOOP_TEST_PORT": str(port)} if port else {}
    return subprocess.run(
        [sys.executable, str(HEALTH_CHECK), "--port-env", "INKLOOP_TEST_PORT", "--default-port", "1", "--timeout", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_health_check_passes_only_when_serving(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _check(port)
    assert (result.returncode, result.stdout.strip()) == (1, "NOT_SERVING")
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _check(port)
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING")


def test_health_check_fails_when_nothing_listens() -> None:
    result = _check(None)  # the default port 1: nothing there
    assert result.returncode == 1
    assert "unhealthy: UNAVAILABLE" in result.stderr
