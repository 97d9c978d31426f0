"""NetworkPolicies refer to real pods and ports, and allow exactly the paths of the architecture."""

from __future__ import annotations

from typing import Any

from k8s.manifests import Obj, Pod, of_kind, pods, selected

#: Who may open connections to whom inside the namespace (by app.kubernetes.io/name). "*" = anyone,
#: including clients outside the cluster. Only the gateway is public.
ALLOWED_SOURCES = {
    "gateway": {"*"},
    "inference": {"gateway"},
    "analytics": {"gateway"},
    "redis": {"gateway"},
    "clickhouse": {"analytics", "clickhouse"},
    "clickhouse-keeper": {"clickhouse", "clickhouse-keeper"},
}
MONITORING = "monitoring"


def _peers(rule: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return rule.get(key, [])


def _policy_pods(objs: list[Obj], policy: Obj) -> list[Pod]:
    return selected(objs, policy["spec"]["podSelector"])


def _ports_exist(pods_: list[Pod], ports: list[dict[str, Any]], where: str) -> None:
    for pod in pods_:
        if pod.from_operator:
            continue  # the operator adds the container ports itself
        for port in ports:
            if isinstance(port["port"], str):
                assert port["port"] in pod.container_ports(), f"{where}: {pod.owner} has no port {port['port']}"
            else:
                assert port["port"] in pod.port_numbers(), f"{where}: {pod.owner} has no port {port['port']}"


def test_namespace_denies_by_default(objs: list[Obj]) -> None:
    deny = [p for p in of_kind(objs, "NetworkPolicy") if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "egress" not in p["spec"] for p in deny)


def test_every_pod_may_resolve_dns(objs: list[Obj]) -> None:
    dns = [
        p
        for p in of_kind(objs, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and any({"port": 53, "protocol": "UDP"} in rule.get("ports", []) for rule in p["spec"].get("egress", []))
    ]
    assert dns, "no policy lets pods reach the cluster DNS"


def test_policy_selectors_match_real_pods(objs: list[Obj]) -> None:
    """Every podSelector of a policy, or of a peer in this namespace, selects pods that exist."""
    for policy in of_kind(objs, "NetworkPolicy"):
        where = f"NetworkPolicy/{policy['metadata']['name']}"
        assert _policy_pods(objs, policy), f"{where} selects no pod"
        for direction in ("ingress", "egress"):
            for rule in policy["spec"].get(direction, []):
                for peer in _peers(rule, "from" if direction == "ingress" else "to"):
                    if "namespaceSelector" in peer or "ipBlock" in peer:
                        continue  # other namespaces: their labels are not ours to check
                    assert selected(objs, peer["podSelector"]), f"{where}: {direction} peer selects no pod"


def test_policy_ports_exist_on_the_pods(objs: list[Obj]) -> None:
    """Ingress ports are ports of the selected pods; egress ports are ports of the peers."""
    for policy in of_kind(objs, "NetworkPolicy"):
        where = f"NetworkPolicy/{policy['metadata']['name']}"
        for rule in policy["spec"].get("ingress", []):
            _ports_exist(_policy_pods(objs, policy), rule.get("ports", []), where)
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "namespaceSelector" not in peer and "ipBlock" not in peer:
                    _ports_exist(selected(objs, peer["podSelector"]), rule.get("ports", []), where)


def _sources(objs: list[Obj], target: Pod) -> dict[str, set[str]]:
    """Source -> ports allowed in to `target`; sources are pod names, "*" or "namespace:<name>"."""
    sources: dict[str, set[str]] = {}
    for policy in of_kind(objs, "NetworkPolicy"):
        if target not in _policy_pods(objs, policy):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {str(p["port"]) for p in rule.get("ports", [])} or {"*"}
            names: set[str] = set()
            for peer in rule.get("from", [{"*": True}]):
                if "*" in peer or "ipBlock" in peer:
                    names.add("*")
                elif "namespaceSelector" in peer:
                    namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    names.add(f"namespace:{namespace}")
                else:
                    names |= {pod.name for pod in selected(objs, peer["podSelector"])}
            for name in names:
                sources.setdefault(name, set()).update(ports)
    return sources


def test_only_the_architecture_paths_are_open(objs: list[Obj]) -> None:
    for pod in pods(objs):
        assert pod.name in ALLOWED_SOURCES, f"{pod.owner}: add its allowed sources to this test"
        allowed = ALLOWED_SOURCES[pod.name]
        for source, ports in _sources(objs, pod).items():
            if source == f"namespace:{MONITORING}":
                assert ports <= {"metrics"}, f"{pod.owner}: monitoring may scrape metrics only, not {ports}"
            else:
                assert source in allowed, f"{pod.owner}: {source} may connect, only {sorted(allowed)} should"
                assert "*" not in ports, f"{pod.owner}: {source} is allowed on every port"


def test_inference_is_reachable_from_the_gateway(objs: list[Obj]) -> None:
    for pod in pods(objs):
        if pod.name == "inference":
            assert "grpc" in _sources(objs, pod)["gateway"]
        if pod.name == "gateway":
            assert {"grpc", "http"} <= _sources(objs, pod)["*"]
