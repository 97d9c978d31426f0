"""A private Debian clickhouse-server (18.16) on free ports, with every path under one directory."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_driver
from clickhouse_driver import errors as driver_errors

from inkloop_analytics.storage import ClickHouse, connect

from . import ServerProcess, free_ports, port_open, require_binary

# What the `clickhouse` test fixture runs on. A test module adds the 2 × 2 cluster by saying
# `CLICKHOUSE_ENGINES = EVERY_ENGINE` (tests/analytics/conftest.py), so that the cluster costs time
# only where it proves something: storage, migrations, ingest and every query.
ENGINES = ("chdb", "server")
EVERY_ENGINE = (*ENGINES, "cluster")

SERVER_BINARY = "/usr/sbin/clickhouse-server"
PACKAGED_CONFIG_DIR = Path("/etc/clickhouse-server")


class ClickHouseServer(ServerProcess):
    """clickhouse-server with its own ports and data directory; restarts keep both.

    >>> with ClickHouseServer() as server:
    ...     connect(server.url).query("SELECT 1")
    """

    name = "clickhouse"

    def __init__(self, base_dir: Path | None = None) -> None:
        super().__init__(base_dir)
        self.port, self.http_port, self.interserver_http_port = free_ports(3)
        self.data_dir = self.base_dir / "data"
        self.log_dir = self.base_dir / "log"

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.port}/default"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "config.xml"

    def command(self) -> list[str]:
        require_binary(SERVER_BINARY)
        if not self.config_path.exists():
            self._write_config()
        return [SERVER_BINARY, f"--config-file={self.config_path}"]

    def answers(self) -> bool:
        # A bare TCP probe first: the driver logs a traceback for every refused connection.
        if not port_open(self.port):
            return False
        client = self.client(connect_timeout=1, send_receive_timeout=1)
        try:
            client.execute("SELECT 1")
        except (driver_errors.NetworkError, driver_errors.SocketTimeoutError, EOFError, OSError):
            return False
        finally:
            client.disconnect()
        return True

    def client(self, **options: Any) -> clickhouse_driver.Client:
        """A driver client of this server's default database (`options`: the driver's)."""
        return clickhouse_driver.Client("127.0.0.1", port=self.port, **options)

    def logs(self) -> list[Path]:
        return [self.log_dir / "clickhouse-server.err.log", self.console_log]

    def _write_config(self) -> None:
        """Copy the packaged config and users.xml, pointing ports and every path at base_dir."""
        config = ET.parse(PACKAGED_CONFIG_DIR / "config.xml")
        root = config.getroot()
        settings = {
            "tcp_port": str(self.port),
            "http_port": str(self.http_port),
            "interserver_http_port": str(self.interserver_http_port),
            "path": f"{self.data_dir}/",
            "tmp_path": f"{self.data_dir}/tmp/",
            "user_files_path": f"{self.data_dir}/user_files/",
            "format_schema_path": f"{self.data_dir}/format_schemas/",
            # UTC so that DateTime literals and results mean the same as on chDB and in production.
            "timezone": "UTC",
            # Tests create and drop many small tables; the default 5 GB mark cache is pointless.
            "mark_cache_size": str(64 * 1024 * 1024),
            # With clients attached (tests restart the server under them) shutdown waits for
            # each idle connection's poll_interval (see users.xml below), then this long.
            "shutdown_wait_unfinished": "2",
        }
        for tag, value in settings.items():
            _set_child(root, tag, value)
        logger = root.find("logger")
        assert logger is not None, "packaged config.xml has no <logger>"
        _set_child(logger, "log", str(self.log_dir / "clickhouse-server.log"))
        _set_child(logger, "errorlog", str(self.log_dir / "clickhouse-server.err.log"))

        # 127.0.0.1 only: the packaged default also binds ::1, which fails where IPv6 is off.
        for listen_host in root.findall("listen_host"):
            root.remove(listen_host)
        ET.SubElement(root, "listen_host").text = "127.0.0.1"
        self._configure(root)

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config.write(self.config_path)
        users = ET.parse(PACKAGED_CONFIG_DIR / "users.xml")
        default_profile = users.getroot().find("profiles/default")
        assert default_profile is not None, "packaged users.xml has no default profile"
        # An idle connection notices shutdown only when its poll times out: 10 s by default.
        _set_child(default_profile, "poll_interval", "1")
        users.write(self.base_dir / "users.xml")

    def _configure(self, root: ET.Element) -> None:
        """Further changes to config.xml (a cluster node adds its cluster, ZooKeeper and macros)."""


def _set_child(parent: ET.Element, tag: str, text: str) -> None:
    child = parent.find(tag)
    if child is None:
        child = ET.SubElement(parent, tag)
    child.text = text


def database_url(url: str, database: str) -> str:
    """`url` (clickhouse:// or chdb://) pointed at another database."""
    if url.startswith("chdb://"):
        return f"{url.partition('?')[0]}?database={database}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def new_database_name() -> str:
    """A name no other test's database has."""
    return f"test_{uuid.uuid4().hex[:16]}"


@contextmanager
def fresh_database(url: str) -> Iterator[ClickHouse]:
    """A connection to a new, uniquely named database of the engine at `url`, dropped afterwards
    (on a cluster: `ClickHouseCluster.fresh_database`)."""
    name = new_database_name()
    with connect(url) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            with connect(database_url(url, name)) as ch:
                yield ch
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
