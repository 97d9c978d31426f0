"""The test servers are real, restartable, and the engines the fixtures claim."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import redis

from harness import HarnessError, port_open
from harness import clickhouse as clickhouse_harness
from harness.clickhouse import ClickHouseServer
from harness.clickhouse_cluster import ClickHouseCluster, DDLTimeout, HarnessWarning
from harness.redis import RedisServer
from inkloop.errors import Unavailable
from inkloop_analytics.storage import ClickHouse, EmbeddedClickHouse, ServerClickHouse, connect


def test_clickhouse_restart_keeps_port_and_data() -> None:
    with ClickHouseServer() as server:
        url, port = server.url, server.port
        ch = connect(url)
        ch.execute("CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n")
        ch.insert("kept", ["n"], [(1,), (2,), (3,)])

        server.stop()
        assert not port_open(port)
        with pytest.raises(Unavailable):
            ch.ping()

        server.start()
        assert (server.port, server.url) == (port, url)
        assert ch.query("SELECT sum(n) FROM kept") == [(6,)]
        ch.close()


def test_redis_restart_keeps_port() -> None:
    with RedisServer() as server:
        url, port = server.url, server.port
        server.stop()
        with redis.Redis.from_url(url) as client, pytest.raises(redis.ConnectionError):
            client.ping()

        server.start()
        assert (server.port, server.url) == (port, url)
        with redis.Redis.from_url(url) as client:
            assert client.ping()


@pytest.mark.parametrize("attempt", [1, 2])
def test_redis_url_gives_each_test_an_empty_db(redis_url: str, attempt: int) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.set("left-by-an-earlier-test", attempt)
        assert client.dbsize() == 1


def test_clickhouse_fixture_engine_is_what_its_id_says(clickhouse: ClickHouse, request: pytest.FixtureRequest) -> None:
    engine = request.node.callspec.params["clickhouse"]
    if engine == "server":
        assert isinstance(clickhouse, ServerClickHouse)
        assert clickhouse.version()[:2] == (18, 16)
    else:
        assert isinstance(clickhouse, EmbeddedClickHouse)
        assert clickhouse.version() >= (25, 0)
    assert clickhouse.database.startswith("test_")
    assert clickhouse.query("SELECT currentDatabase()") == [(clickhouse.database,)]


def test_missing_server_binary_fails_with_the_readme_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clickhouse_harness, "SERVER_BINARY", "/nonexistent/clickhouse-server")
    with pytest.raises(HarnessError, match="README"), ClickHouseServer():
        pass


def test_server_that_cannot_start_fails_with_its_log() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = ClickHouseServer()
        server.port = squatter.getsockname()[1]
        with pytest.raises(HarnessError, match=r"(?s)exited.*clickhouse-server\.err\.log"), server:
            pass


def test_a_cluster_node_that_does_not_run_on_cluster_ddl_is_restarted_until_it_has(tmp_path: Path) -> None:
    """Stands in for 18.16's ended DDL worker with a stopped process: the node answers no DDL."""
    with ClickHouseCluster(tmp_path, shards=1, replicas=2, ddl_timeout_s=2) as cluster:
        cluster.wait_healthy()
        healthy, stuck = cluster.nodes
        os.kill(stuck.pid, signal.SIGSTOP)
        with pytest.raises(DDLTimeout) as timeout:
            cluster.run_ddl(f"CREATE DATABASE recovered ON CLUSTER {cluster.name}")
        assert cluster.finished(timeout.value.task) == [healthy]
        with pytest.warns(HarnessWarning, match=f"{stuck.replica_name} had not run"):
            cluster.recover(timeout.value)
        assert cluster.finished(timeout.value.task) == cluster.nodes
        for node in cluster.nodes:
            assert node.client().execute("SELECT count() FROM system.databases WHERE name = 'recovered'") == [(1,)]
        assert not cluster.unusable
