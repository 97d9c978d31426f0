"""The production overlays run the gateway with the semantic safety layer, and room for its model."""

from __future__ import annotations

import pytest

from inkloop_gateway.admission.safety import BUNDLED_MODEL_NAMES
from k8s.manifests import PROD_OVERLAYS, configured, inkloop_containers, render

MIB = {"Mi": 1, "Gi": 1024}


def _mebibytes(quantity: str) -> int:
    return int(quantity[:-2]) * MIB[quantity[-2:]]


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_gateways_load_the_shipped_embedding_model(overlay: str) -> None:
    gateways = [(pod, c) for pod, c, service in inkloop_containers(render(overlay)) if service == "gateway"]
    assert gateways
    for pod, container in gateways:
        assert configured(container, "gateway", "safety_embedding_model") in BUNDLED_MODEL_NAMES, pod.owner
        # torch + MiniLM: ~700 MiB resident (README, Performance)
        assert _mebibytes(container["resources"]["limits"]["memory"]) >= 1024, pod.owner
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("OMP_NUM_THREADS") == "1", pod.owner
