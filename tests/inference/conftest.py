"""Session fixtures: the tiny preset, built and saved once, loaded through the real loading path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from inkloop_inference.editing import load_edit_pipeline
from inkloop_inference.loading import LoadedModel, load_pipelines
from inkloop_inference.presets import ensure_preset


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_preset("tiny", tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path) -> LoadedModel:
    return load_pipelines(tiny_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_edit_dir(tiny_dir: Path) -> Path:
    """The tiny preset's Qwen-Image-Edit companion, saved beside it (`<data>/models/tiny-edit`)."""
    return ensure_preset("tiny", tiny_dir.parent.parent, edit=True)


@pytest.fixture(scope="session")
def tiny_edit_model(tiny_model: LoadedModel, tiny_edit_dir: Path) -> LoadedModel:
    """The tiny model with its edit companion loaded beside it (sharing what is identical)."""
    edit = load_edit_pipeline(tiny_edit_dir, device="cpu", dtype=torch.float32, main=tiny_model)
    return dataclasses.replace(tiny_model, edit=edit)
