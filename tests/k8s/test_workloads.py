"""Workloads, Services and probes agree with each other and with the services' settings."""

from __future__ import annotations

import re

from k8s.manifests import (
    SETTINGS,
    Obj,
    configured,
    configured_port,
    env_names,
    flag_names,
    inkloop_containers,
    of_kind,
    pods,
    selected,
)

WORKLOADS = ("Deployment", "StatefulSet")


def test_every_inkloop_service_runs_in_every_overlay(objs: list[Obj]) -> None:
    assert {service for _, _, service in inkloop_containers(objs)} == set(SETTINGS)


def test_workload_selectors_match_their_own_pod_labels(objs: list[Obj]) -> None:
    for kind in WORKLOADS:
        for obj in of_kind(objs, kind):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            for key, value in obj["spec"]["selector"]["matchLabels"].items():
                assert labels.get(key) == value, f"{kind}/{obj['metadata']['name']}: selector {key}={value}"


def test_selectors_pick_exactly_one_workload(objs: list[Obj]) -> None:
    """Services, PDBs and workloads: each selector finds the pods of exactly one workload."""
    selectors = [(f"Service/{s['metadata']['name']}", s["spec"]["selector"]) for s in of_kind(objs, "Service")]
    selectors += [(f"PDB/{p['metadata']['name']}", p["spec"]["selector"]) for p in of_kind(objs, "PodDisruptionBudget")]
    for kind in WORKLOADS:
        selectors += [(f"{kind}/{w['metadata']['name']}", w["spec"]["selector"]) for w in of_kind(objs, kind)]
    for what, selector in selectors:
        owners = {pod.owner for pod in selected(objs, selector)}
        assert len(owners) == 1, f"{what} selects the pods of {sorted(owners) or 'nothing'}"


def test_service_target_ports_are_container_ports(objs: list[Obj]) -> None:
    for service in of_kind(objs, "Service"):
        for pod in selected(objs, service["spec"]["selector"]):
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if isinstance(target, str):
                    assert target in pod.container_ports(), f"Service/{service['metadata']['name']}: {target}"
                    assert pod.container_ports()[target] == port["port"], "port and target differ: keep them equal"
                else:
                    assert target in pod.port_numbers(), f"Service/{service['metadata']['name']}: {target}"


def test_container_ports_are_the_configured_ports(objs: list[Obj]) -> None:
    """grpc is the `port` setting, http `http_port`, metrics `metrics_port` (env, flag or default)."""
    for pod, container, service in inkloop_containers(objs):
        assert {"grpc", "metrics"} <= {p.get("name") for p in container["ports"]}, pod.owner
        for port in container["ports"]:
            assert port["containerPort"] == configured_port(container, service, port["name"]), (pod.owner, port)


def test_servers_listen_on_every_interface(objs: list[Obj]) -> None:
    for pod, container, service in inkloop_containers(objs):
        assert configured(container, service, "host") == "0.0.0.0", pod.owner


def test_probes_are_native_grpc_health_checks_on_the_grpc_port(objs: list[Obj]) -> None:
    for pod, container, service in inkloop_containers(objs):
        grpc_port = configured_port(container, service, "grpc")
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            assert probe is not None, f"{pod.owner}: no {probe_name}"
            assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{pod.owner} {probe_name}"
            assert probe["grpc"]["port"] == grpc_port, f"{pod.owner} {probe_name}"
            # "" is the whole server: NOT_SERVING until the model is loaded, migrations ran, etc.
            assert probe["grpc"].get("service", "") == "", f"{pod.owner} {probe_name}"


def test_env_var_names_exist_in_the_service_settings(objs: list[Obj]) -> None:
    for pod, container, service in inkloop_containers(objs):
        known = env_names(SETTINGS[service])
        names = [e["name"] for e in container.get("env", [])]
        assert len(names) == len(set(names)), f"{pod.owner}: duplicate env vars"
        for name in names:
            if name.startswith("INKLOOP_"):
                assert name in known, f"{pod.owner}: {name} is not a {SETTINGS[service].__name__} setting"
        for env_from in container.get("envFrom", []):
            assert env_from.get("prefix", "") == "", f"{pod.owner}: envFrom names cannot be checked"


def test_flags_exist_in_the_service_settings(objs: list[Obj]) -> None:
    for pod, container, service in inkloop_containers(objs):
        flags = flag_names(SETTINGS[service])
        for arg in container.get("args", []) + container.get("command", [])[3:]:
            if arg.startswith("--"):
                assert arg.split("=", 1)[0] in flags, f"{pod.owner}: {arg} is not a flag of {service}"


def test_no_inkloop_variables_in_third_party_containers(objs: list[Obj]) -> None:
    """A typo'd image name would otherwise skip the settings check silently."""
    checked = {id(c) for _, c, _ in inkloop_containers(objs)}
    for pod in pods(objs):
        for container in pod.containers:
            if id(container) not in checked:
                names = [e["name"] for e in container.get("env", [])]
                assert not [n for n in names if n.startswith("INKLOOP_")], f"{pod.owner}: not an inkloop image?"


def test_env_references_resolve(objs: list[Obj]) -> None:
    """$(VAR) in a value names a variable defined earlier in the same container (kubelet expansion)."""
    for pod in pods(objs):
        for container in pod.containers:
            seen: set[str] = set()
            for env in container.get("env", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", env.get("value", "")):
                    assert ref in seen, f"{pod.owner}: {env['name']} uses $({ref}) before it is defined"
                seen.add(env["name"])


def test_containers_run_unprivileged(objs: list[Obj]) -> None:
    for pod in pods(objs):
        assert pod.spec["securityContext"]["runAsNonRoot"] is True, pod.owner
        assert pod.spec["securityContext"]["runAsUser"] != 0, pod.owner
        for container in pod.containers:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, pod.owner
            assert context["capabilities"]["drop"] == ["ALL"], pod.owner


def test_inkloop_containers_have_resources_and_drain_time(objs: list[Obj]) -> None:
    for pod, container, service in inkloop_containers(objs):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), pod.owner
        assert "memory" in container["resources"]["limits"], pod.owner
        drain = float(configured(container, service, "drain_seconds"))
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        assert grace > drain, f"{pod.owner}: SIGKILL ({grace}s) would cut the drain ({drain}s) short"


def test_labels_follow_the_kubernetes_conventions(objs: list[Obj]) -> None:
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "inkloop", f"{obj['kind']}/{obj['metadata']['name']}"
    for pod in pods(objs):
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"):
            assert key in pod.labels, f"{pod.owner}: pod template lacks {key}"
