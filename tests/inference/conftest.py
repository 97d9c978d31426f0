"""Session fixtures: the tiny preset, built and saved once, loaded through the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inkloop_inference.loading import LoadedModel, load_pipelines
from inkloop_inference.presets import ensure_preset


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_preset("tiny", tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path) -> LoadedModel:
    return load_pipelines(tiny_dir, device="cpu", dtype=torch.float32)
