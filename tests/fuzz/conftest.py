"""One real stack for the fuzz tests: the tiny-model inference service, analytics on a fresh database
of the ClickHouse server, and a gateway wired to both, all in this process on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gateway.conftest import (  # noqa: F401  (fixtures)
    TEST_SETTINGS,
    Inference,
    inference,
    tiny_edit_dir,
    tiny_model_dir,
)
from web.conftest import running_analytics

from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.rpc.server import RunningServer, start_server
from inkloop_gateway.admission.keys import KeyStore, Role
from inkloop_gateway.app import GatewayApp
from inkloop_gateway.settings import GatewaySettings

from .cases import Fuzzer, Stack, seed
from .valid import TENANT, Context


@pytest.fixture(scope="module")
def fuzz_database(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    with fresh_database(clickhouse_server.url) as ch:
        yield database_url(clickhouse_server.url, ch.database)


@pytest.fixture(scope="module")
async def fuzz_analytics(fuzz_database: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with running_analytics(fuzz_database, tmp_path_factory.mktemp("fuzz-analytics")) as service:
        yield service.running


def _keys(data_dir: Path) -> dict[str, str]:
    store = KeyStore(data_dir / "keys.db")
    secrets = {role.value: store.create(TENANT, role, f"fuzz {role.value}")[1] for role in Role}
    secrets["other"] = store.create("globex", Role.USER, "another tenant")[1]
    store.close()
    return secrets


@pytest.fixture(scope="module")
async def fuzz_gateway(
    inference: Inference,  # noqa: F811
    fuzz_analytics: RunningServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[GatewayApp, RunningServer, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("fuzz-gateway")
    secrets = _keys(data_dir)
    settings = GatewaySettings(
        **{
            **TEST_SETTINGS,
            "host": "127.0.0.1",
            "data_dir": data_dir,
            "inference_target": inference.target,
            "analytics_target": f"127.0.0.1:{fuzz_analytics.port}",
        }
    )
    app = GatewayApp(settings)
    running = await start_server(app, "127.0.0.1", 0)
    await app.start()
    await running.set_serving(True)
    yield app, running, secrets
    await running.server.stop(0)
    await app.stop()


@pytest.fixture(scope="module")
async def fuzzer(
    inference: Inference,  # noqa: F811
    fuzz_analytics: RunningServer,
    fuzz_gateway: tuple[GatewayApp, RunningServer, dict[str, str]],
) -> AsyncIterator[Fuzzer]:
    app, running, secrets = fuzz_gateway
    stack = Stack(
        grpc={
            "inference": inference.target,
            "analytics": f"127.0.0.1:{fuzz_analytics.port}",
            "gateway": f"127.0.0.1:{running.port}",
        },
        http_url=f"http://127.0.0.1:{app.http.port}",
    )
    fuzzer = Fuzzer(stack, Context(secrets=secrets, inference_target=inference.target))
    await seed(fuzzer)
    yield fuzzer
    await fuzzer.close()
