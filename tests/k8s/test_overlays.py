"""What each overlay promises: dev is small and CPU-only, prod runs the real model on GPUs."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from k8s.manifests import (
    OPERATOR_KINDS,
    PROD_OVERLAYS,
    ROOT,
    SETTINGS,
    Obj,
    configured,
    inkloop_containers,
    named,
    of_kind,
    pods,
    render,
)

GPU = "nvidia.com/gpu"


def _container(objs: list[Obj], kind: str, name: str) -> Obj:
    return named(objs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def _seconds(probe: Obj) -> int:
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


# ---- dev -------------------------------------------------------------------------------------------


def test_dev_runs_one_replica_of_everything() -> None:
    objs = render("dev")
    for kind in ("Deployment", "StatefulSet"):
        for obj in of_kind(objs, kind):
            assert obj["spec"]["replicas"] == 1, f"{kind}/{obj['metadata']['name']}"
    assert not of_kind(objs, "HorizontalPodAutoscaler")


def test_dev_inference_is_the_tiny_model_on_cpu() -> None:
    container = _container(render("dev"), "Deployment", "inference")
    assert configured(container, "inference", "model") == "tiny"
    assert configured(container, "inference", "model_path") is None
    assert configured(container, "inference", "device") == "cpu"
    assert GPU not in container["resources"].get("limits", {})


# ---- prod ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_inference_runs_on_the_gpu_pool(overlay: str) -> None:
    objs = render(overlay)
    spec = named(objs, "Deployment", "inference")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert int(container["resources"]["limits"][GPU]) >= 1
    assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU]
    assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in spec["tolerations"])
    assert spec["nodeSelector"], "GPU pods must be pinned to the GPU node pool"
    assert configured(container, "inference", "device") == "cuda"


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_weights_come_read_only_from_a_volume(overlay: str) -> None:
    objs = render(overlay)
    spec = named(objs, "Deployment", "inference")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    model_path = configured(container, "inference", "model_path")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == model_path)
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    pvc = named(objs, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_startup_probe_allows_loading_a_20b_model(overlay: str) -> None:
    container = _container(render(overlay), "Deployment", "inference")
    assert _seconds(container["startupProbe"]) >= 20 * 60
    # Once started, a hung server is noticed within two minutes.
    assert _seconds(container["livenessProbe"]) <= 120


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_gateway_is_scaled_by_its_hpa(overlay: str) -> None:
    objs = render(overlay)
    hpa = named(objs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in named(objs, "Deployment", "gateway")["spec"], "the HPA owns the replica count"
    assert named(objs, "Deployment", "inference")["spec"]["replicas"] >= 2


def test_every_service_deployment_has_a_pdb(overlay: str, objs: list[Obj]) -> None:
    pdbs = {p["metadata"]["name"] for p in of_kind(objs, "PodDisruptionBudget")}
    assert set(SETTINGS) <= pdbs


# ---- wiring ----------------------------------------------------------------------------------------


def test_inference_service_is_headless_for_client_side_balancing(objs: list[Obj]) -> None:
    service = named(objs, "Service", "inference")
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses", False), "DNS must list ready pods only"


def test_gateway_service_has_grpc_and_http(objs: list[Obj]) -> None:
    ports = {p["name"]: p for p in named(objs, "Service", "gateway")["spec"]["ports"]}
    assert {"grpc", "http"} <= set(ports)
    assert ports["grpc"]["appProtocol"] == "grpc"


def _dns_target(target: str) -> tuple[str, int]:
    match = re.fullmatch(r"dns:///([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", target)
    assert match, f"{target!r}: use dns:///<service>:<port> so the channel resolves every pod"
    return match[1], int(match[2])


def test_gateway_targets_are_services_of_this_overlay(objs: list[Obj]) -> None:
    container = _container(objs, "Deployment", "gateway")
    for setting, service_name in (("inference_target", "inference"), ("analytics_target", "analytics")):
        host, port = _dns_target(str(configured(container, "gateway", setting)))
        service = named(objs, "Service", host)
        assert service_name == host
        assert service["spec"]["clusterIP"] == "None", f"{setting}: round_robin needs a headless Service"
        assert port in {p["port"] for p in service["spec"]["ports"]}


def test_model_variants_point_at_the_inference_service(objs: list[Obj]) -> None:
    config = next(c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("model-variants"))
    variants = json.loads(config["data"]["model-variants.json"])["variants"]  # a SetVariantsRequest
    assert variants and sum(v["weight"] for v in variants) > 0
    for variant in variants:
        host, port = _dns_target(variant["target"])
        assert port in {p["port"] for p in named(objs, "Service", host)["spec"]["ports"]}


def test_analytics_reaches_clickhouse(objs: list[Obj]) -> None:
    container = _container(objs, "Deployment", "analytics")
    url = str(configured(container, "analytics", "clickhouse_url"))
    env = {e["name"]: e for e in container["env"]}
    url = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]].get("value", "secret"), url)
    parts = urlsplit(url)
    assert parts.scheme == "clickhouse"
    services = {s["metadata"]["name"] for s in of_kind(objs, "Service")}
    # The Altinity operator names its Service clickhouse-<installation>.
    services |= {f"clickhouse-{o['metadata']['name']}" for o in of_kind(objs, "ClickHouseInstallation")}
    assert parts.hostname in services
    assert parts.port == 9000


def test_referenced_secrets_exist_or_are_documented(objs: list[Obj]) -> None:
    """Secrets an overlay does not render are created by the platform team, as docs/deploy.md says."""
    rendered = {s["metadata"]["name"] for s in of_kind(objs, "Secret")}
    referenced: set[tuple[str, str]] = set()
    for pod in pods(objs):
        for container in pod.containers:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
        for volume in pod.spec.get("volumes", []):
            if "secret" in volume:
                referenced.add((volume["secret"]["secretName"], ""))
    for obj in of_kind(objs, "ClickHouseInstallation"):
        for key, value in obj["spec"]["configuration"].get("users", {}).items():
            if key.endswith("/k8s_secret_password"):
                name, key_ = value.split("/")[-2:]
                referenced.add((name, key_))
    for name, key in referenced:
        if name not in rendered:
            docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
            assert f"kubectl create secret generic {name}" in docs, f"docs/deploy.md must say how to create {name}"
            assert not key or key in docs


def test_custom_resources_are_only_the_altinity_ones(objs: list[Obj]) -> None:
    core = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1")
    for obj in objs:
        assert obj["apiVersion"] in core or obj["kind"] in OPERATOR_KINDS, f"{obj['kind']}: unknown to the validator"


# ---- settings the manifests will need once the services have them ----------------------------------

#: (service, setting name prefix, why the manifests must set it). Skipped while the setting does not
#: exist; fails once it exists and the overlays do not set it, so both land together.
PENDING = [
    ("gateway", "redis_url", "job queue, cache and rate limits shared by every gateway replica"),
    ("inference", "max_connection_age", "GOAWAY makes the gateway re-resolve DNS and find new inference pods"),
    ("gateway", "max_connection_age", "clients behind an L4 load balancer reconnect to new gateway pods"),
]


@pytest.mark.parametrize(("service", "prefix", "why"), PENDING)
def test_pending_settings_are_set_once_they_exist(overlay: str, service: str, prefix: str, why: str) -> None:
    fields = [f for f in SETTINGS[service].model_fields if f.startswith(prefix)]
    if not fields:
        pytest.skip(f"{SETTINGS[service].__name__} has no {prefix}* setting yet ({why})")
    for _, container, name in inkloop_containers(render(overlay)):
        if name == service:
            env = {e["name"] for e in container.get("env", [])}
            prefix_env = str(SETTINGS[service].model_config.get("env_prefix", ""))
            assert any((prefix_env + f).upper() in env for f in fields), f"{overlay}: set {fields} ({why})"
