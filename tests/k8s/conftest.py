"""Every test here takes `overlay` (each directory under k8s/overlays/) or a named one, rendered once."""

from __future__ import annotations

import shutil

import pytest

from k8s.manifests import OVERLAYS, Obj, render


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("kubectl") is None:
        skip = pytest.mark.skip(reason="kubectl is not installed (`kubectl kustomize` renders the overlays)")
        for item in items:
            if "overlay" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objs(overlay: str) -> list[Obj]:
    return render(overlay)
