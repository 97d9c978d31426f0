"""Real servers for the whole test session (one set per xdist worker); the logic is in tests/harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.clickhouse import ENGINES, ClickHouseServer, fresh_database
from harness.clickhouse_cluster import ClickHouseCluster
from harness.pki import make_pki
from harness.redis import RedisServer
from inkloop_analytics.storage import ClickHouse, connect


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """Debian's clickhouse-server 18.16, the oldest engine production may run."""
    with ClickHouseServer(tmp_path_factory.mktemp("clickhouse")) as server:
        yield server


@pytest.fixture(scope="session")
def clickhouse_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseCluster]:
    """ZooKeeper and 2 shards × 2 replicas of clickhouse-server 18.16 (about 2 s to start)."""
    with ClickHouseCluster(tmp_path_factory.mktemp("clickhouse-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    return redis_server.url


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chDB path of this process. chDB serves one path per process, so every test must use this one."""
    url = f"chdb://{tmp_path_factory.mktemp('chdb')}"
    # Held open so the embedded engine is not shut down and restarted between tests.
    with connect(url):
        yield url


@pytest.fixture(params=ENGINES)
def clickhouse(request: pytest.FixtureRequest) -> Iterator[ClickHouse]:
    """A connection to a fresh database, on embedded chDB and on the 18.16 server in turn (and on
    the 2 × 2 cluster, through its first node, where a module asks for it)."""
    if request.param == "chdb":
        database = fresh_database(request.getfixturevalue("chdb_url"))
    elif request.param == "server":
        database = fresh_database(request.getfixturevalue("clickhouse_server").url)
    else:
        database = request.getfixturevalue("clickhouse_cluster").fresh_database()
    with database as ch:
        yield ch


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    return make_pki(tmp_path_factory.mktemp("pki"))
