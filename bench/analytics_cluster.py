"""Analytics on a 2 × 2 ClickHouse cluster vs one server: ingest events/s and the funnel, same run.

    .venv/bin/python bench/analytics_cluster.py [--ingest-events 200000] [--funnel-events 10000000] [--repeat 3]

Starts one clickhouse-server (18.16) and the test harness's cluster (ZooKeeper and 2 shards × 2
replicas of the same server) on this machine, side by side.
- Ingest: the same IngestRequests (bench/analytics_ingest.py) through the service's gRPC
  IngestStream, once into a fresh database of the single server and once into one on the cluster
  (through its first node: Distributed tables, insert_distributed_sync=1), until every event is
  acknowledged.
- Funnel: the same synthetic events (bench/analytics_queries.py: 4 front-end events per visitor
  plus back-end REQUESTED events) generated inside ClickHouse, on the cluster through the
  Distributed tables; once replication has caught up, the service's 4-step funnel and the
  hand-written windowFunnel run on both (median of --repeat runs, after one warm-up).
Every node of the cluster shares this machine's cores with the others: the cluster cannot be faster
than one server here, and the ratios show what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytics_ingest import make_requests, through_service
from analytics_queries import BASE, FILL_BACKEND, FILL_FRONTEND, FRONT_STEPS, HAND_WRITTEN_FUNNEL, timed

from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from harness.clickhouse_cluster import ClickHouseCluster
from inkloop_analytics import funnel
from inkloop_analytics.matchers import TimeRange
from inkloop_analytics.migrations import migrate
from inkloop_analytics.storage import ClickHouse, connect

STORED = "SELECT (SELECT uniqExact(event_id) FROM frontend_events) + (SELECT uniqExact(event_id) FROM backend_events)"
REPLICATION_BACKLOG = "SELECT count() FROM system.replication_queue WHERE database = %(database)s"


def ingest(url: str, cluster: str, events: int, batch: int, streams: int) -> float:
    """Events/s through the service into `url`'s database."""
    requests = make_requests(events, batch)
    with tempfile.TemporaryDirectory() as directory:
        seconds = asyncio.run(through_service(url, requests, streams, Path(directory), cluster))
    return events / seconds


def fill(ch: ClickHouse, events: int) -> float:
    """Generates the funnel's events (bench/analytics_queries.py's recipe); returns the seconds it took."""
    migrate(ch)
    front = events * 4 // 5
    began = time.perf_counter()
    ch.execute(FILL_FRONTEND, {"base": BASE, "count": front})
    ch.execute(FILL_BACKEND, {"base": BASE, "count": front // 4})
    return time.perf_counter() - began


def wait_for_replication(cluster: ClickHouseCluster, database: str) -> float:
    """Until no replica has parts left to fetch: the funnel must not race the replicas' catching up."""
    began = time.perf_counter()
    nodes = [connect(database_url(node.url, database)) for node in cluster.nodes]
    while any(node.query(REPLICATION_BACKLOG, {"database": database})[0][0] for node in nodes):
        time.sleep(0.5)
    for node in nodes:
        node.close()
    return time.perf_counter() - began


def funnel_seconds(ch: ClickHouse, repeat: int) -> tuple[float, float, list[tuple[int, int]]]:
    window = TimeRange(BASE, BASE + timedelta(days=1))
    params = {"start": window.start, "end": window.end + timedelta(hours=1)}
    query = funnel.FunnelQuery("t1", FRONT_STEPS, 3600, window)
    anchor = timed(repeat, lambda: ch.query(HAND_WRITTEN_FUNNEL, params))
    ours = timed(repeat, lambda: funnel.run(ch, query))
    counts = [(step.count, int(step.median_seconds_from_first)) for step in funnel.run(ch, query)[0].steps]
    return ours, anchor, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingest-events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000, help="Events per IngestRequest.")
    parser.add_argument("--streams", type=int, default=2, help="Concurrent IngestStream calls.")
    parser.add_argument("--funnel-events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as directory,
        ClickHouseServer(Path(directory) / "single") as server,
        ClickHouseCluster(Path(directory) / "cluster") as cluster,
    ):
        events = arguments.ingest_events
        with fresh_database(server.url) as single_db, cluster.fresh_database() as cluster_db:
            single_url = database_url(server.url, single_db.database)
            single_rate = ingest(single_url, "", events, arguments.batch, arguments.streams)
            cluster_url = database_url(cluster.url, cluster_db.database)
            cluster_rate = ingest(cluster_url, cluster.name, events, arguments.batch, arguments.streams)
            stored = (single_db.query(STORED)[0][0], cluster_db.query(STORED)[0][0])
        print(
            f"ingest, {events:,} events through IngestStream x{arguments.streams}"
            f" (stored: {stored[0]:,} one server, {stored[1]:,} cluster)"
        )
        print(f"  one server      {single_rate:10,.0f} events/s")
        print(f"  2 x 2 cluster   {cluster_rate:10,.0f} events/s  ({cluster_rate / single_rate:.2f}x one server)")

        events = arguments.funnel_events
        with fresh_database(server.url) as single_db, cluster.fresh_database() as cluster_db:
            single_fill = fill(single_db, events)
            cluster_fill = fill(cluster_db, events)
            catch_up = wait_for_replication(cluster, cluster_db.database)
            print(
                f"funnel, {events:,} events: generated in {single_fill:.1f} s (one server), "
                f"{cluster_fill:.1f} s + {catch_up:.1f} s replication (cluster)"
            )
            single = funnel_seconds(single_db, arguments.repeat)
            clustered = funnel_seconds(cluster_db, arguments.repeat)
        assert single[2] == clustered[2], f"answers differ: {single[2]} vs {clustered[2]}"
        print(f"  one server      service funnel {single[0]:7.3f} s, hand-written windowFunnel {single[1]:7.3f} s")
        print(
            f"  2 x 2 cluster   service funnel {clustered[0]:7.3f} s, hand-written windowFunnel {clustered[1]:7.3f} s"
        )
        print(
            f"  cluster / one server: service funnel {clustered[0] / single[0]:.2f}x, "
            f"windowFunnel {clustered[1] / single[1]:.2f}x; same answer: {single[2]}"
        )


if __name__ == "__main__":
    main()
