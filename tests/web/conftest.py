"""The whole system for browser tests: real inference (tiny model), a real analytics service on a fresh
ClickHouse database (the Debian server), and a gateway whose HTTP port serves the page, the bridge,
the collect endpoint and the dashboard; plus headless Chromium driven by playwright."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from gateway.conftest import (  # noqa: F401
    TEST_SETTINGS,
    Inference,
    dead_address,
    running_inference,
    tiny_edit_dir,
    tiny_model_dir,
)

from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.rpc.server import RunningServer, start_server
from inkloop.v1 import analytics_pb2_grpc
from inkloop_analytics.server import AnalyticsApp
from inkloop_analytics.settings import AnalyticsSettings
from inkloop_gateway.admission.keys import KeyStore, Role
from inkloop_gateway.app import GatewayApp
from inkloop_gateway.settings import GatewaySettings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
HAVE_CHROMIUM = CHROMIUM.exists() and shutil.which("chromium") is not None
TENANT = "acme"


@pytest.fixture(scope="session")
async def inference(tiny_model_dir: Path, tiny_edit_dir: Path) -> AsyncIterator[Inference]:  # noqa: F811
    """Inference whose own defaults are small, so the page's choices (taken from the model) are quick; with
    the edit companion."""
    async with running_inference(
        tiny_model_dir, edit_model_path=tiny_edit_dir, default_width=128, default_height=128, default_steps=3
    ) as service:
        yield service


@dataclass
class Analytics:
    app: AnalyticsApp
    running: RunningServer
    channel: grpc.aio.Channel

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def stub(self) -> analytics_pb2_grpc.AnalyticsServiceStub:
        return analytics_pb2_grpc.AnalyticsServiceStub(self.channel)


@dataclass
class System:
    gateway: GatewayApp
    analytics: Analytics | None
    secrets: dict[str, str]
    grpc_port: int = 0

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http.port}"

    def auth(self, who: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}


@pytest.fixture
def clickhouse_db(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    with fresh_database(clickhouse_server.url) as ch:
        yield database_url(clickhouse_server.url, ch.database)


@contextlib.asynccontextmanager
async def running_analytics(clickhouse_url: str, data_dir: Path) -> AsyncIterator[Analytics]:
    """A real analytics service on `clickhouse_url`, on a free port, until the block ends."""
    settings = AnalyticsSettings(
        clickhouse_url=clickhouse_url,
        data_dir=data_dir,
        flush_interval_s=0.02,
        retry_interval_s=0.1,
        privacy_salt="test-salt",
        alert_interval_s=3600,
    )
    app = AnalyticsApp(settings)
    running = await start_server(app, "127.0.0.1", 0)
    await asyncio.wait_for(app.start(), 60)
    await running.set_serving(True)
    service = Analytics(app, running, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"))
    try:
        yield service
    finally:
        await service.channel.close()
        await running.server.stop(0)
        await app.stop()


@pytest.fixture
async def analytics_service(clickhouse_db: str, tmp_path: Path) -> AsyncIterator[Analytics]:
    async with running_analytics(clickhouse_db, tmp_path / "analytics") as service:
        yield service


StartWebGateway = Callable[..., Awaitable[System]]


@pytest.fixture
async def start_web_gateway(inference: Any, tmp_path: Path) -> AsyncIterator[StartWebGateway]:
    """Starts a gateway with the web bridge: tenant "acme" for the page, a user and an analyst key."""
    started: list[tuple[GatewayApp, RunningServer]] = []

    async def start(analytics: Analytics | None = None, **overrides: object) -> System:
        data_dir = tmp_path / f"gateway-{len(started)}"
        data_dir.mkdir()
        store = KeyStore(data_dir / "keys.db")
        secrets = {
            "user": store.create(TENANT, Role.USER, "page")[1],
            "analyst": store.create(TENANT, Role.ANALYST, "dashboard")[1],
            "admin": store.create(TENANT, Role.ADMIN, "operator")[1],
        }
        store.close()
        settings = GatewaySettings(
            **{
                **TEST_SETTINGS,
                "host": "127.0.0.1",
                "data_dir": data_dir,
                "inference_target": inference.target,
                "analytics_target": analytics.target if analytics else dead_address(),
                "web_tenant_id": TENANT,
                "web_visitor_secret": "test-visitor-secret",
                **overrides,
            }
        )
        app = GatewayApp(settings)
        running = await start_server(app, "127.0.0.1", 0)
        await app.start()
        await running.set_serving(True)
        started.append((app, running))
        return System(app, analytics, secrets, running.port)

    yield start
    for app, running in started:
        await running.server.stop(0)
        await app.stop()


@pytest.fixture
async def system(start_web_gateway: StartWebGateway, analytics_service: Analytics) -> System:
    return await start_web_gateway(analytics_service)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.fail("Debian chromium is not installed: run the README's test command (./dev test), which installs it")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
