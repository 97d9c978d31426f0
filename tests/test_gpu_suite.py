"""bench/gpu_suite.py on the CPU: its dry run, the wheels it ships and installs, and the model folder it
writes on the GPU machine (at small dimensions), so the suite cannot rot while no GPU is lent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_every_section_and_writes_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text(encoding="utf-8"))
    sections = report["sections"]
    assert list(sections) == [
        "stock",
        "inkloop",
        "step_cache",
        "fast_tier",
        "batch_invariance",
        "edit",
        "memory_modes",
        "cold_start",
    ]
    assert all(s["status"] == "ok" for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    assert report["dry_run"] is True and report["cpu_notes"]
    assert "dry run: peak_gb" in done.stdout  # the reasons are printed too

    assert sections["stock"]["s_per_image"] > 0
    inkloop = sections["inkloop"]
    assert inkloop["eager_vs_stock"]["identical"]  # batched CFG computes what stock computes
    assert inkloop["compile"].startswith("skipped: compile is measured on CUDA only")
    cache = sections["step_cache"]["threshold_100"]
    assert cache["cached_steps"] > 0 and cache["speedup_vs_exact"] > 0 and not cache["vs_exact"]["identical"]
    assert sections["fast_tier"]["s_per_image"] > 0 and sections["fast_tier"]["cfg"] is False
    invariance = sections["batch_invariance"]
    assert invariance["per_sample"]["alone_vs_batch"]["identical"]
    assert invariance["per_sample"]["run_to_run_identical"]

    edit = sections["edit"]
    assert edit["s_per_image"] > 0 and edit["s_per_step"] > 0 and edit["vs_text_to_image"] > 0
    assert edit["text_tokens"] == report["setup"]["prompt_tokens"] + (1024 // 28) ** 2

    modes = sections["memory_modes"]
    assert modes["full"]["s_per_image"] > 0 and modes["full"]["peak_gb"] is None
    for mode in ("model-offload", "group-offload", "fp8", "nf4"):
        assert "needs a CUDA device" in modes[mode]["skipped"], mode

    cold = sections["cold_start"]
    for start in ("empty_cache", "warm_cache"):
        assert 0 < cold[start]["listening_s"] <= cold[start]["loaded_s"] <= cold[start]["serving_s"], cold[start]
        assert cold[start]["first_request_s"] > 0
    assert "figure" in done.stdout and "cold_start.warm_cache.serving_s" in done.stdout  # the table


def test_wheels_are_installed_when_missing_or_older() -> None:
    suite = _suite()
    have = {"grpcio": "1.80.0", "protobuf": "7.40.1", "pydantic": "2.14.3"}.get
    assert suite.needs_install("grpcio-1.85.1-cp312-cp312-manylinux2014_x86_64.whl", have)
    assert not suite.needs_install("protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl", have)  # newer there
    assert not suite.needs_install("pydantic-2.14.3-py3-none-any.whl", have)
    assert suite.needs_install("diffusers-0.42.1-py3-none-any.whl", have)  # missing
    assert suite.wheel_name_version("pydantic_settings-2.16.3-py3-none-any.whl") == ("pydantic-settings", "2.16.3")


def test_only_what_the_gpu_machine_lacks_is_shipped() -> None:
    suite = _suite()
    ship = suite.wheels_to_ship(
        {"torch", "nvidia-cublas", "triton", "grpcio", "grpcio-tools", "numpy", "pydantic_core", "diffusers", "inkloop"}
    )
    assert ship == {"grpcio", "pydantic-core", "diffusers"}  # numpy is there; grpcio is shipped for its version


def test_bitsandbytes_is_slimmed_to_the_cuda_13_libraries(tmp_path: Path) -> None:
    suite = _suite()
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libraries = ["cuda118", "cuda128", "cuda130", "cuda132", "rocm72", "cpu"]
    files = [f"bitsandbytes/libbitsandbytes_{name}.so" for name in libraries] + ["bitsandbytes/__init__.py"]
    record = "bitsandbytes-0.50.2.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in files:
            archive.writestr(name, b"x")
        archive.writestr(record, "".join(f"{name},sha256=x,1\n" for name in files) + f"{record},,\n")
    suite.slim_bitsandbytes(wheel)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        kept = {n for n in names if n.endswith(".so")}
        listed = {line.split(",")[0] for line in archive.read(record).decode().splitlines()}
    assert kept == {f"bitsandbytes/libbitsandbytes_{n}.so" for n in ("cuda130", "cuda132", "cpu")}
    assert listed == names  # RECORD lists exactly what the wheel holds


def test_the_gpu_model_folder_loads_in_the_service(tmp_path: Path) -> None:
    """What the suite writes on the GPU machine (random transformer and VAE, a 2-layer text encoder of the
    transformer's text width, the real tokenizer), at the demo preset's dimensions, loaded by the service."""
    from inkloop_inference import pipelines
    from inkloop_inference.loading import load_pipelines
    from inkloop_inference.pipelines import GenerationRequest
    from inkloop_inference.presets import DEMO

    suite = _suite()
    dims = suite.Dims(dict(DEMO.transformer), dict(DEMO.vae), 64, 2, 2, 2, 2, 8, 4)
    suite.write_full_model(tmp_path / "model", dims, "cpu", torch.float32)
    model = load_pipelines(tmp_path / "model", device="cpu", dtype=torch.float32)
    assert model.t2i.text_encoder.config.text_config.hidden_size == DEMO.transformer["joint_attention_dim"]
    request = GenerationRequest(kind="text_to_image", prompt="一只狐狸 a fox", width=64, height=64, steps=2, seed=1)
    assert pipelines.run(model, [request])[0].images[0].startswith(b"\x89PNG")
