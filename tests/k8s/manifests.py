"""Renders the kustomize overlays and answers questions about the objects: pods, ports, settings.

The settings classes are read at run time (`model_fields` and `env_prefix`), so settings added to the
services are known here without editing this file.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from inkloop_analytics.settings import AnalyticsSettings
from inkloop_gateway.settings import GatewaySettings
from inkloop_inference.settings import InferenceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
PROD_OVERLAYS = [name for name in OVERLAYS if name.startswith("prod")]

#: The settings class of each inkloop service; a container runs the service its image is named after.
SETTINGS: dict[str, type[BaseSettings]] = {
    "inference": InferenceSettings,
    "gateway": GatewaySettings,
    "analytics": AnalyticsSettings,
}

#: Custom resources whose pods the Altinity operator creates from `spec.templates.podTemplates`.
OPERATOR_KINDS = {"ClickHouseInstallation", "ClickHouseKeeperInstallation"}

Obj = dict[str, Any]


@cache
def render(overlay: str) -> list[Obj]:
    """`kubectl kustomize k8s/overlays/<overlay>`, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl is not installed: tests/k8s render the overlays with `kubectl kustomize`")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(objs, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


# ---- settings --------------------------------------------------------------------------------------


def env_names(settings: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name -> field name, as pydantic-settings reads them."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for name, info in settings.model_fields.items():
        names[(prefix + name).upper()] = name
        if isinstance(info.validation_alias, str):
            names[info.validation_alias.upper()] = name
    return names


def flag_names(settings: type[BaseSettings]) -> dict[str, str]:
    """`--kebab-case` flag -> field name (and `--no-x` for booleans)."""
    flags: dict[str, str] = {}
    for name, info in settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        flags[flag] = name
        if info.annotation is bool:
            flags["--no-" + name.replace("_", "-")] = name
    return flags


# ---- pods ------------------------------------------------------------------------------------------


@dataclass
class Pod:
    """A pod template: from a workload, or from an operator's custom resource."""

    owner: str  # "Deployment/gateway"
    labels: dict[str, str]
    spec: Obj
    from_operator: bool = False
    containers: list[Obj] = field(init=False)

    def __post_init__(self) -> None:
        self.containers = self.spec.get("containers", [])

    @property
    def name(self) -> str:
        return self.labels.get("app.kubernetes.io/name", "")

    def container_ports(self) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for c in self.containers for p in c.get("ports", []) if "name" in p}

    def port_numbers(self) -> set[int]:
        return {p["containerPort"] for c in self.containers for p in c.get("ports", [])}


def pods(objs: list[Obj]) -> list[Pod]:
    found = []
    for obj in objs:
        owner = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            template = obj["spec"]["template"]
            found.append(Pod(owner, template["metadata"].get("labels", {}), template["spec"]))
        elif obj["kind"] in OPERATOR_KINDS:
            for template in obj["spec"].get("templates", {}).get("podTemplates", []):
                labels = template.get("metadata", {}).get("labels", {})
                found.append(Pod(owner, labels, template.get("spec", {}), from_operator=True))
    return found


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels / matchExpressions, or a plain map for Services) against labels."""
    match_labels = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if not all(labels.get(k) == v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op, values = labels.get(expr["key"]), expr["operator"], expr.get("values", [])
        if (op == "In" and value not in values) or (op == "NotIn" and value in values):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def selected(objs: list[Obj], selector: dict[str, Any]) -> list[Pod]:
    return [pod for pod in pods(objs) if matches(selector, pod.labels)]


# ---- inkloop containers ----------------------------------------------------------------------------


def service_of(container: Obj) -> str | None:
    """The inkloop service a container runs (from its image name), or None for third-party images."""
    image = container["image"].split("@")[0].rsplit(":", 1)[0]
    for service in SETTINGS:
        if image.endswith(f"inkloop/{service}"):
            return service
    return None


def inkloop_containers(objs: list[Obj]) -> Iterator[tuple[Pod, Obj, str]]:
    for pod in pods(objs):
        for container in pod.containers:
            service = service_of(container)
            if service is not None:
                yield pod, container, service


def configured(container: Obj, service: str, field_name: str) -> Any:
    """A setting's value in a container: its env var (or flag) if set there, else the class default."""
    settings = SETTINGS[service]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    env_name = next(n for n, f in env_names(settings).items() if f == field_name)
    args = container.get("args", [])
    flag = "--" + field_name.replace("_", "-")
    if flag in args:
        return args[args.index(flag) + 1]
    if env_name in env:
        return env[env_name]
    return settings.model_fields[field_name].default


def configured_port(container: Obj, service: str, port_name: str) -> int:
    """The configured port behind a named container port: grpc -> `port`, other -> `<name>_port`."""
    field_name = "port" if port_name == "grpc" else f"{port_name}_port"
    assert field_name in SETTINGS[service].model_fields, f"{service} has no setting {field_name} for port {port_name}"
    return int(configured(container, service, field_name))
