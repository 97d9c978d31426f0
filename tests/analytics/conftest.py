"""Analytics fixtures: the service's domain facade on a fresh database of each engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.clickhouse import database_url
from inkloop_analytics.service import Analytics
from inkloop_analytics.settings import AnalyticsSettings
from inkloop_analytics.storage import ClickHouse

from .generator import NOW

SettingsFactory = Callable[..., AnalyticsSettings]


@pytest.hookimpl(tryfirst=True)  # before pytest reads the marks and the fixture's own params
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module naming CLICKHOUSE_ENGINES runs its `clickhouse` tests on those engines instead: as
    if each were marked `parametrize("clickhouse", engines, indirect=True)`, which takes precedence."""
    engines = getattr(metafunc.module, "CLICKHOUSE_ENGINES", None)
    if engines is not None and "clickhouse" in metafunc.fixturenames:
        metafunc.definition.add_marker(pytest.mark.parametrize("clickhouse", engines, indirect=True))


def clickhouse_engine(request: pytest.FixtureRequest) -> str:
    """ "chdb", "server" or "cluster" for a test on the `clickhouse` fixture; "" for any other."""
    callspec = getattr(request.node, "callspec", None)
    return str(callspec.params.get("clickhouse", "")) if callspec is not None else ""


@pytest.fixture
def clickhouse_url(clickhouse: ClickHouse, request: pytest.FixtureRequest) -> str:
    """URL of the `clickhouse` fixture's fresh database (chDB, the 18.16 server or the cluster's first node)."""
    base = {
        "chdb": lambda: request.getfixturevalue("chdb_url"),
        "server": lambda: request.getfixturevalue("clickhouse_server").url,
        "cluster": lambda: request.getfixturevalue("clickhouse_cluster").url,
    }[clickhouse_engine(request)]()
    return database_url(base, clickhouse.database)


@pytest.fixture
def make_settings(tmp_path: Path, request: pytest.FixtureRequest) -> SettingsFactory:
    """Settings for a service on `url`; on the cluster engine they name the cluster too."""
    cluster = request.getfixturevalue("clickhouse_cluster").name if clickhouse_engine(request) == "cluster" else ""

    def make(url: str, **overrides: Any) -> AnalyticsSettings:
        defaults: dict[str, Any] = {
            "clickhouse_url": url,
            "clickhouse_cluster": cluster,
            "data_dir": tmp_path / "data",
            "flush_interval_s": 0.02,
            "retry_interval_s": 0.1,
            "privacy_salt": "test-salt",
            "alert_interval_s": 3600,
        }
        return AnalyticsSettings(**{**defaults, **overrides})

    return make


@pytest.fixture
async def analytics(clickhouse_url: str, make_settings: SettingsFactory) -> AsyncIterator[Analytics]:
    """Opened and connected (migrated), with the clock stopped at generator.NOW."""
    service = Analytics(make_settings(clickhouse_url), clock=lambda: NOW)
    await service.open()
    await service.connect()
    yield service
    await service.close()
