"""A private ClickHouse cluster: ZooKeeper and 2 shards × 2 replicas of Debian's clickhouse-server 18.16.

    with ClickHouseCluster() as cluster:
        ch = connect(cluster.url, cluster=cluster.name)      # the first node, s1r1
        cluster.node(2, 1).kill()                           # SIGKILL shard 2's first replica
        cluster.node(2, 1).start()

Every node is a `ClickHouseServer` (free ports, data in its own directory, restarts keep both) whose
config also names the cluster, ZooKeeper, its macros (`{shard}`, `{replica}`) and its interserver
port, the way `../shared/notes/clickhouse-cluster.md` describes. Nodes start in about 2 s together.
"""

from __future__ import annotations

import re
import socket
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self
from urllib.parse import unquote

from clickhouse_driver import errors as driver_errors

from inkloop_analytics.storage import ClickHouse, connect

from . import HarnessError, ServerProcess, free_ports, log_tail, require_binary
from .clickhouse import ClickHouseServer, _set_child, database_url, new_database_name

ZOOKEEPER_JARS = (
    "/usr/share/java/zookeeper.jar",
    # Only so that ZooKeeper writes a log (zookeeper.console.log); it serves without them.
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
)
CLUSTER_NAME = "inkloop"
# A killed node's ZooKeeper session must expire before it may take its replica back: short here.
ZOOKEEPER_SESSION_TIMEOUT_MS = 6000
# What 18.16 answers when a node has not run an ON CLUSTER query within distributed_ddl_task_timeout.
DDL_TIMEOUT_CODE = 159

LOG4J_PROPERTIES = """log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d %p [%t] %c: %m%n
"""


class ZooKeeperServer(ServerProcess):
    """A standalone ZooKeeper 3.8 (Debian's package), its data under base_dir."""

    name = "zookeeper"

    def __init__(self, base_dir: Path | None = None) -> None:
        super().__init__(base_dir)
        [self.port] = free_ports(1)

    def command(self) -> list[str]:
        java = require_binary("/usr/bin/java")
        for jar in ZOOKEEPER_JARS:
            if not Path(jar).exists():
                raise HarnessError(f"{jar} is missing: install Debian's zookeeper (see the test command in README.md)")
        config = self.base_dir / "zoo.cfg"
        if not config.exists():
            (self.base_dir / "data").mkdir(exist_ok=True)
            config.write_text(
                f"dataDir={self.base_dir / 'data'}\n"
                f"clientPort={self.port}\n"
                "clientPortAddress=127.0.0.1\n"
                "tickTime=2000\n"
                "admin.enableServer=false\n"
                "4lw.commands.whitelist=ruok,stat,mntr,srvr\n"
            )
            (self.base_dir / "log4j.properties").write_text(LOG4J_PROPERTIES)
        classpath = ":".join([str(self.base_dir), *ZOOKEEPER_JARS])
        memory = ["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC"]
        return [java, *memory, "-cp", classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config)]

    def answers(self) -> bool:
        # `ruok` says imok before ZooKeeper serves; `srvr` names its mode only once it does.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"srvr")
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
        except OSError:
            return False
        return any(line.startswith(b"Mode: ") for line in reply.splitlines())


class HarnessWarning(UserWarning):
    """Something the harness repaired so the tests could go on; pytest's summary shows it."""


class DDLTimeout(Exception):
    """A node had not run `ddl`, the DDL queue's `task`, within the cluster's ddl_timeout_s."""

    def __init__(self, ddl: str, task: str) -> None:
        super().__init__(f"{ddl!r} ({task}) timed out")
        self.ddl = ddl
        self.task = task


class ClusterNode(ClickHouseServer):
    """One clickhouse-server of the cluster: replica `replica` of shard `shard` (both from 1)."""

    def __init__(self, base_dir: Path, shard: int, replica: int, zookeeper: ZooKeeperServer) -> None:
        super().__init__(base_dir)
        self.shard = shard
        self.replica = replica
        self.zookeeper = zookeeper
        self.layout: list[list[int]] = []  # every shard's replicas' tcp ports, set by the cluster

    @property
    def replica_name(self) -> str:
        return f"s{self.shard}r{self.replica}"

    def answers(self) -> bool:
        """Ready once its ZooKeeper session is up: until then replicated tables are read-only."""
        if not super().answers():
            return False
        client = self.client(connect_timeout=1, send_receive_timeout=2)
        try:
            client.execute("SELECT count() FROM system.zookeeper WHERE path = '/'")
        except (driver_errors.Error, EOFError, OSError):
            return False
        finally:
            client.disconnect()
        return True

    def log_lines(self, containing: str) -> list[str]:
        """Lines of its error log that contain `containing`."""
        err_log = self.logs()[0]
        text = err_log.read_text(errors="replace") if err_log.exists() else ""
        return [line for line in text.splitlines() if containing in line]

    def _configure(self, root: ET.Element) -> None:
        assert self.layout, "the cluster sets every node's layout before starting it"
        # Replicas fetch parts from each other here; the packaged host is a placeholder.
        _set_child(root, "interserver_http_host", "127.0.0.1")
        for tag in ("remote_servers", "zookeeper", "macros", "distributed_ddl"):
            for element in root.findall(tag):
                root.remove(element)

        remote_servers = ET.SubElement(root, "remote_servers")
        cluster = ET.SubElement(remote_servers, CLUSTER_NAME)
        for ports in self.layout:
            shard = ET.SubElement(cluster, "shard")
            # Inserts through a Distributed table go to one replica; replication copies them.
            ET.SubElement(shard, "internal_replication").text = "true"
            for port in ports:
                replica = ET.SubElement(shard, "replica")
                ET.SubElement(replica, "host").text = "127.0.0.1"
                ET.SubElement(replica, "port").text = str(port)

        zookeeper = ET.SubElement(root, "zookeeper")
        node = ET.SubElement(zookeeper, "node")
        ET.SubElement(node, "host").text = "127.0.0.1"
        ET.SubElement(node, "port").text = str(self.zookeeper.port)
        ET.SubElement(zookeeper, "session_timeout_ms").text = str(ZOOKEEPER_SESSION_TIMEOUT_MS)

        macros = ET.SubElement(root, "macros")
        ET.SubElement(macros, "cluster").text = CLUSTER_NAME
        ET.SubElement(macros, "shard").text = f"{self.shard:02d}"
        ET.SubElement(macros, "replica").text = self.replica_name

        ddl = ET.SubElement(root, "distributed_ddl")
        ET.SubElement(ddl, "path").text = "/clickhouse/task_queue/ddl"


class ClickHouseCluster:
    """ZooKeeper plus `shards` × `replicas` clickhouse-server nodes, started and stopped together."""

    name = CLUSTER_NAME

    def __init__(self, base_dir: Path, shards: int = 2, replicas: int = 2, ddl_timeout_s: int = 60) -> None:
        self.base_dir = base_dir
        # How long ON CLUSTER DDL waits for every node (18.16's default: 180 s).
        self.ddl_timeout_s = ddl_timeout_s
        self.unusable = ""  # why, once a recovery failed
        self.zookeeper = ZooKeeperServer(base_dir / "zookeeper")
        self.nodes = [
            ClusterNode(base_dir / f"s{shard}r{replica}", shard, replica, self.zookeeper)
            for shard in range(1, shards + 1)
            for replica in range(1, replicas + 1)
        ]
        layout = [[node.port for node in self.nodes if node.shard == shard] for shard in range(1, shards + 1)]
        for node in self.nodes:
            node.layout = layout

    @property
    def url(self) -> str:
        """The first node (shard 1, replica 1): what connections of the tests go through."""
        return self.nodes[0].url

    def node(self, shard: int, replica: int) -> ClusterNode:
        return next(node for node in self.nodes if (node.shard, node.replica) == (shard, replica))

    def start(self) -> None:
        self.zookeeper.start()
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.zookeeper.stop()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Returns once every node runs and answers with its ZooKeeper session up (after faults)."""
        for server in (self.zookeeper, *self.nodes):
            if not server.running:
                if server.exited_by_itself:
                    crash = f"{server.name} exited by itself\n" + log_tail(*server.logs())
                    warnings.warn(HarnessWarning(crash), stacklevel=2)
                server.start()
        deadline = time.monotonic() + timeout_s
        while not all(node.answers() for node in self.nodes):
            if time.monotonic() > deadline:
                raise HarnessError("cluster not healthy\n" + log_tail(*[log for n in self.nodes for log in n.logs()]))
            time.sleep(0.2)

    @contextmanager
    def fresh_database(self) -> Iterator[ClickHouse]:
        """A connection (through the first node) to a new database on every node, dropped afterwards."""
        name = new_database_name()
        self.on_cluster(f"CREATE DATABASE {name} ON CLUSTER {self.name}")
        try:
            with connect(database_url(self.url, name), self.name) as ch:
                yield ch
        finally:
            self.on_cluster(f"DROP DATABASE IF EXISTS {name} ON CLUSTER {self.name}")

    def on_cluster(self, ddl: str) -> None:
        """Runs `ddl` (ON CLUSTER) through the first node, recovering nodes that do not run it.

        18.16's DDL worker thread ends on unexpected ZooKeeper errors, after which every ON CLUSTER
        query waits out its timeout for that node: seen in CI when two replicas of a shard raced for
        one `ALTER … ON CLUSTER` of a replicated table (each later test then waited 180 s). The
        product no longer sends such ALTERs (`ClickHouse.execute_on_each_shard`); this stays the net
        for anything else that ends a DDL worker. A server restart is the documented recovery. Past a
        failed recovery every later call fails at once, so a broken cluster costs one timeout, not one
        per test."""
        if self.unusable:
            raise HarnessError(f"the cluster is unusable since an earlier failure: {self.unusable}")
        self.wait_healthy()
        try:
            self.run_ddl(ddl)
        except DDLTimeout as timeout:
            self.recover(timeout)

    def run_ddl(self, ddl: str) -> None:
        """`ddl` through the first node; DDLTimeout if a node has not run it within ddl_timeout_s."""
        client = self.nodes[0].client(send_receive_timeout=self.ddl_timeout_s + 30)
        try:
            client.execute(ddl, settings={"distributed_ddl_task_timeout": self.ddl_timeout_s})
        except driver_errors.ServerException as error:
            task = re.search(r"/\S+/query-\d+", error.message)
            if error.code != DDL_TIMEOUT_CODE or task is None:
                raise
            raise DDLTimeout(ddl, task.group(0)) from error
        finally:
            client.disconnect()

    def recover(self, timeout: DDLTimeout) -> None:
        """Restarts the nodes that have not run the timed-out DDL, and waits until every node has."""
        finished = self.finished(timeout.task)
        stuck = [node for node in self.nodes if node not in finished]
        warnings.warn(
            HarnessWarning(
                f"{', '.join(n.replica_name for n in stuck)} had not run {timeout.ddl!r} after "
                f"{self.ddl_timeout_s} s: restarted. Their DDL worker's last errors:\n"
                + "\n".join(line for node in stuck for line in node.log_lines("DDLWorker")[-5:])
            ),
            stacklevel=2,
        )
        for node in stuck:
            node.stop()
        self.wait_healthy()
        deadline = time.monotonic() + self.ddl_timeout_s
        while len(self.finished(timeout.task)) < len(self.nodes):
            if time.monotonic() > deadline:
                self.unusable = f"{timeout.ddl!r} never ran on every node, even after restarting them"
                raise HarnessError(self.unusable + "\n" + log_tail(*[log for n in stuck for log in n.logs()]))
            time.sleep(0.5)

    def finished(self, task: str) -> list[ClusterNode]:
        """The nodes that ran the DDL queue's `task` (ZooKeeper names each by host:port, escaped)."""
        client = self.nodes[0].client()
        try:
            sql = "SELECT name FROM system.zookeeper WHERE path = %(path)s"
            rows = client.execute(sql, {"path": f"{task}/finished"})
        finally:
            client.disconnect()
        ports = {unquote(name).rpartition(":")[2] for (name,) in rows}
        return [node for node in self.nodes if str(node.port) in ports]

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
