"""Service settings: flags beat environment beat defaults; bad values are refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inkloop_analytics.settings import AnalyticsSettings
from inkloop_gateway.settings import GatewaySettings
from inkloop_inference.settings import InferenceSettings


def test_defaults_are_the_documented_ports() -> None:
    assert (GatewaySettings().port, InferenceSettings().port, AnalyticsSettings().port) == (50051, 50052, 50053)
    assert GatewaySettings().http_port == 8080


def test_environment_is_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INKLOOP_INFERENCE_PORT", "6000")
    monkeypatch.setenv("INKLOOP_GATEWAY_INFERENCE_TARGET", "dns:///inference:50052")
    assert InferenceSettings().port == 6000
    assert GatewaySettings().port == 50051
    assert GatewaySettings().inference_target == "dns:///inference:50052"


def test_flags_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INKLOOP_INFERENCE_PORT", "6000")
    settings = InferenceSettings.from_args(["--port", "7000", "--model-path", "/models/qwen", "--no-warmup"], prog="t")
    assert settings.port == 7000
    assert settings.model_path == Path("/models/qwen")
    assert settings.warmup is False


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["--port", "70000"], "port"), (["--model", "huge"], "model"), (["--max-batch-size", "0"], "max_batch_size")],
)
def test_bad_values_are_refused(argv: list[str], field: str) -> None:
    with pytest.raises((ValidationError, SystemExit)) as caught:
        InferenceSettings.from_args(argv, prog="t")
    if isinstance(caught.value, ValidationError):
        assert caught.value.errors()[0]["loc"][0] == field


def test_unknown_environment_keys_do_not_leak_between_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INKLOOP_ANALYTICS_CLICKHOUSE_URL", "clickhouse://ch:9000/inkloop")
    assert AnalyticsSettings().resolved_clickhouse_url() == "clickhouse://ch:9000/inkloop"
    monkeypatch.delenv("INKLOOP_ANALYTICS_CLICKHOUSE_URL")
    assert AnalyticsSettings(data_dir=Path("/d")).resolved_clickhouse_url() == "chdb:///d/clickhouse"
