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


@pytest.fixture
def clickhouse_url(clickhouse: ClickHouse, request: pytest.FixtureRequest) -> str:
    """URL of the `clickhouse` fixture's fresh database (chDB or the 18.16 server)."""
    engine = request.node.callspec.params["clickhouse"]
    base = request.getfixturevalue("chdb_url") if engine == "chdb" else request.getfixturevalue("clickhouse_server").url
    return database_url(base, clickhouse.database)


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    def make(url: str, **overrides: Any) -> AnalyticsSettings:
        defaults: dict[str, Any] = {
            "clickhouse_url": url,
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
