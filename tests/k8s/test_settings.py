"""The services accept what the manifests configure: each container's environment builds its settings."""

from __future__ import annotations

import json
import os
import re
from pathlib import PurePosixPath

import pytest
from pydantic import ValidationError

from k8s.manifests import ROOT, SETTINGS, Obj, Pod, configured, inkloop_containers, of_kind

PLACEHOLDER = "from-a-secret"


def _environment(container: Obj) -> dict[str, str]:
    """The container's variables as the kubelet would set them, secrets replaced by a placeholder."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        value = item.get("value", PLACEHOLDER if "valueFrom" in item else "")
        env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
    return env


def test_each_container_environment_is_valid_settings(objs: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    for pod, container, service in inkloop_containers(objs):
        with monkeypatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("INKLOOP_")]:
                patch.delenv(name)
            for name, value in _environment(container).items():
                patch.setenv(name, value)
            try:
                SETTINGS[service]()
            except ValidationError as error:
                pytest.fail(f"{pod.owner}: {error}")


def _mounted_files(objs: list[Obj], pod: Pod, container: Obj) -> set[PurePosixPath]:
    """Files a container sees from ConfigMaps (plain or projected volumes)."""
    configmaps = {c["metadata"]["name"]: c for c in of_kind(objs, "ConfigMap")}
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    files: set[PurePosixPath] = set()
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        sources = [s["configMap"] for s in volume.get("projected", {}).get("sources", []) if "configMap" in s]
        sources += [volume["configMap"]] if "configMap" in volume else []
        for source in sources:
            for key in configmaps[source["name"]].get("data", {}):
                files.add(PurePosixPath(mount["mountPath"]) / key)
    return files


def _image_files(service: str) -> set[PurePosixPath]:
    dockerfile = (ROOT / "docker" / f"{service}.Dockerfile").read_text(encoding="utf-8")
    return {PurePosixPath(m[1]) for m in re.finditer(r"^COPY (?!--from)\S+ (\S+)$", dockerfile, re.M)}


def test_configured_files_are_mounted_or_in_the_image(objs: list[Obj]) -> None:
    """Every path setting that names files (e.g. safety_lexicon_paths) points at a file that exists."""
    for pod, container, service in inkloop_containers(objs):
        available = _mounted_files(objs, pod, container) | _image_files(service)
        for field_name in SETTINGS[service].model_fields:
            if not field_name.endswith("_paths"):
                continue
            value = configured(container, service, field_name)
            if value is None:
                continue
            paths = json.loads(value) if isinstance(value, str) else value
            for path in paths:
                assert PurePosixPath(path) in available, f"{pod.owner}: {field_name} names {path}, not present"


def test_configmap_files_parse(objs: list[Obj]) -> None:
    import tomllib

    for config in of_kind(objs, "ConfigMap"):
        for key, text in config.get("data", {}).items():
            if key.endswith(".json"):
                json.loads(text)
            elif key.endswith(".toml"):
                tomllib.loads(text)
