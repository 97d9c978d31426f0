"""The inference pods keep torch.compile's cache on a writable volume (the root filesystem is read-only);
prod's outlives pods and is shared by the replicas."""

from __future__ import annotations

import pytest

from k8s.manifests import PROD_OVERLAYS, Obj, configured, named, render


def _inference(objs: list[Obj]) -> tuple[Obj, Obj]:
    spec = named(objs, "Deployment", "inference")["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def test_the_compile_cache_dir_is_a_writable_volume(objs: list[Obj]) -> None:
    spec, container = _inference(objs)
    cache_dir = configured(container, "inference", "compile_cache_dir")
    assert cache_dir, "compile_cache_dir is not set: every start would compile from scratch"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == cache_dir)
    assert not mount.get("readOnly", False)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_shares_the_compile_cache_across_pods(overlay: str) -> None:
    objs = render(overlay)
    spec, container = _inference(objs)
    mount = next(
        m
        for m in container["volumeMounts"]
        if m["mountPath"] == configured(container, "inference", "compile_cache_dir")
    )
    claim = next(v for v in spec["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]
    assert not claim.get("readOnly", False)
    pvc = named(objs, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
