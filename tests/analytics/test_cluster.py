"""Analytics on a real 2 × 2 ClickHouse cluster (ZooKeeper and four 18.16 servers, tests/harness).

What a cluster adds to what test_queries, test_storage and test_migrations prove on it as a third
engine: the layout (Replicated per shard behind Distributed tables, rows of an actor on one shard),
deduplication across retries and replicas, two services migrating an empty cluster at once, and
retention on every shard, and faults: a replica SIGKILLed mid-ingest, a whole shard down, ZooKeeper
down. After each fault the answers must equal those of a single 18.16 server that got the same events.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from harness.clickhouse_cluster import ClickHouseCluster, ClusterNode
from inkloop.errors import Unavailable
from inkloop_analytics import (
    adoption,
    correlation,
    discrepancy,
    funnel,
    insights,
    outcomes,
    retention,
    template_ranking,
    variants,
)
from inkloop_analytics.ingest import Ingestor
from inkloop_analytics.matchers import EventMatcher, TimeRange
from inkloop_analytics.migrations import discover, migrate
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse, connect
from inkloop_analytics.tables import BACKEND_TABLE, FRONTEND_TABLE

from .conftest import SettingsFactory
from .generator import NOW, RANGE_END, T0, WINDOW_S, Day, generate

RANGE = TimeRange(T0, RANGE_END)
STEPS = (
    EventMatcher("frontend", name="page view", frontend_type="page_view"),
    EventMatcher("frontend", name="click", category="generate", action="click"),
    EventMatcher("backend", name="requested", backend_type="requested"),
    EventMatcher("backend", name="succeeded", backend_type="succeeded"),
)
INPAINT_EXPOSURE = EventMatcher("frontend", category="inpaint", action="exposure")
BATCH_EVENTS = 1000
# Generous: a SIGKILLed replica takes its replica back only once its old ZooKeeper session expired
# (6 s here), then fetches what it missed.
CONVERGE_S = 120.0
RESTART_REPLICAS_AFTER_S = 30.0


@pytest.fixture
def cluster(clickhouse_cluster: ClickHouseCluster) -> Iterator[ClickHouseCluster]:
    """The session's cluster, healthy again after the test whatever it stopped or killed."""
    yield clickhouse_cluster
    clickhouse_cluster.wait_healthy()


@asynccontextmanager
async def running(settings: Any) -> AsyncIterator[Analytics]:
    service = Analytics(settings, clock=lambda: NOW)
    await service.open()
    await service.connect()
    try:
        yield service
    finally:
        await service.close()


@asynccontextmanager
async def cluster_and_single_node(
    cluster: ClickHouseCluster, server: ClickHouseServer, make_settings: SettingsFactory, **overrides: Any
) -> AsyncIterator[tuple[Analytics, Analytics, ClickHouse]]:
    """A service on a fresh database of the cluster and one on a fresh database of the single server,
    and a connection to the cluster's database."""
    with cluster.fresh_database() as ch, fresh_database(server.url) as single_ch:
        on_cluster = make_settings(database_url(cluster.url, ch.database), clickhouse_cluster=cluster.name, **overrides)
        single = make_settings(database_url(server.url, single_ch.database), data_dir=on_cluster.data_dir / "single")
        try:
            async with running(on_cluster) as clustered, running(single) as alone:
                yield clustered, alone, ch
        finally:
            # Every node back before the database is dropped ON CLUSTER (which waits for all of them).
            await asyncio.to_thread(cluster.wait_healthy)


async def ingest_all(
    service: Analytics, day: Day, between: Callable[[int], Awaitable[None]] | None = None
) -> list[str]:
    """Sends the day in batches; returns the ids of every acknowledged event (all, or it fails)."""
    acknowledged: list[str] = []
    for number, start in enumerate(range(0, max(len(day.frontend), len(day.backend)), BATCH_EVENTS // 2)):
        front = day.frontend[start : start + BATCH_EVENTS // 2]
        back = day.backend[start : start + BATCH_EVENTS // 2]
        result = await service.ingest(front, back, f"b{number}")
        assert result.count("accepted") == len(front) + len(back), result
        acknowledged.extend(event.event_id for event in [*front, *back])
        if between is not None:
            await between(number)
    return acknowledged


async def answers(service: Analytics) -> dict[str, Any]:
    """Every kind of answer the service gives about the day (samples, which are arbitrary picks, aside)."""
    rules = service.outcome_rules
    gap = await service.discrepancy(
        discrepancy.DiscrepancyQuery("t1", STEPS[1], STEPS[2], RANGE, bucket_s=1800, sample_size=5)
    )
    plain = funnel.FunnelQuery("t1", STEPS, WINDOW_S, RANGE)
    excluded = replace(plain, exclusions=(funnel.FunnelExclusion(INPAINT_EXPOSURE, 2, 4),))
    return {
        "funnel": await service.funnel(plain),
        "funnel by device": await service.funnel(replace(plain, breakdown="device")),
        "funnel by user": await service.funnel(funnel.FunnelQuery("t1", STEPS[2:], WINDOW_S, RANGE, actor="user")),
        "strict funnel": await service.funnel(replace(plain, order="strict")),
        "any-order funnel": await service.funnel(replace(plain, order="any")),
        "funnel with an exclusion": await service.funnel(excluded),
        "correlation": await service.funnel_correlation(correlation.CorrelationQuery("t1", plain)),
        "adoption": await service.feature_adoption(adoption.FeatureAdoptionQuery("t1", RANGE)),
        "templates": await service.recommend_templates(template_ranking.RecommendTemplatesQuery("t1", RANGE, rules)),
        "discrepancy": replace(gap, frontend_only_sample=[], backend_only_sample=[]),
        "discrepancy samples": (len(gap.frontend_only_sample), len(gap.backend_only_sample)),
        "prompt insights": await service.prompt_insights(insights.PromptInsightsQuery("t1", RANGE)),
        "variants": await service.compare_variants(variants.CompareVariantsQuery("t1", RANGE)),
        "outcomes": await service.outcomes(outcomes.OutcomesQuery("t1", RANGE, rules, "language_class")),
        "retry loops": await service.retry_loops(outcomes.RetryLoopsQuery("t1", RANGE, rules)),
    }


def node_query(node: ClusterNode, database: str, sql: str) -> list[tuple[Any, ...]]:
    with connect(database_url(node.url, database)) as ch:
        return ch.query(sql)


def stored_per_replica(cluster: ClickHouseCluster, database: str, table: str) -> dict[str, tuple[int, int]]:
    """Per node: rows and distinct event ids of its shard's copy of `table`, repeats merged (FINAL)."""
    sql = f"SELECT count(), uniqExact(event_id) FROM {table}_local FINAL"
    return {node.replica_name: node_query(node, database, sql)[0] for node in cluster.nodes}


def wait_until_converged(cluster: ClickHouseCluster, database: str, expected: dict[str, int]) -> None:
    """Until every replica holds its shard's rows once each and the shards add up to `expected` (per
    table): the state after a fault once replication has caught up. Fails past CONVERGE_S."""
    started = time.monotonic()
    restarted = False
    while True:
        try:
            seen = {table: stored_per_replica(cluster, database, table) for table in expected}
        except Unavailable:
            seen = {}
        if seen and all(_converged(cluster, seen[table], total) for table, total in expected.items()):
            return
        waited = time.monotonic() - started
        if waited > RESTART_REPLICAS_AFTER_S and not restarted:
            # Seen once in CI with every suite on two cores: a restarted 18.16 replica's fetches stayed in
            # backoff for minutes. What an operator does then, SYSTEM RESTART REPLICA, reloads its queue.
            restarted = True
            for node in cluster.nodes:
                for table in expected:
                    node_query(node, database, f"SYSTEM RESTART REPLICA {table}_local")
        assert waited < CONVERGE_S, f"replicas never converged to {expected}: {seen}; {_queues(cluster, database)}"
        time.sleep(0.25)


def _queues(cluster: ClickHouseCluster, database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Each replica's pending replication work and its last error: why a replica lags."""
    sql = (
        "SELECT table, type, num_tries, last_exception FROM system.replication_queue "
        "WHERE database = currentDatabase() LIMIT 5"
    )
    return {node.replica_name: node_query(node, database, sql) for node in cluster.nodes}


def _converged(cluster: ClickHouseCluster, per_replica: dict[str, tuple[int, int]], total: int) -> bool:
    shards = sorted({node.shard for node in cluster.nodes})
    first_replicas = [cluster.node(shard, 1).replica_name for shard in shards]
    replicas_agree = all(
        per_replica[node.replica_name] == per_replica[cluster.node(node.shard, 1).replica_name]
        for node in cluster.nodes
    )
    stored_once = all(rows == distinct for rows, distinct in per_replica.values())
    return replicas_agree and stored_once and sum(per_replica[name][1] for name in first_replicas) == total


async def wait_for_empty_spool(service: Analytics) -> None:
    deadline = time.monotonic() + CONVERGE_S
    while not service.spool.empty():
        assert time.monotonic() < deadline, "the spool was never replayed"
        await asyncio.sleep(0.1)


def with_users(day: Day, users: int) -> Day:
    """The day with its requests spread over `users` user ids (the generator gives them all one, which
    makes per-user answers quadratic at 100k events): each request's events keep one user."""
    for event in day.backend:
        event.user_id = f"u{zlib.crc32(event.request_id.encode()) % users}"
    return day


def expected_totals(day: Day) -> dict[str, int]:
    return {FRONTEND_TABLE: len(day.frontend), BACKEND_TABLE: len(day.backend)}


# --- layout and ingest --------------------------------------------------------------------------


async def test_tables_are_replicated_per_shard_behind_distributed_tables(
    cluster: ClickHouseCluster, make_settings: SettingsFactory
) -> None:
    day = generate(seed=3, visitors=300)
    with cluster.fresh_database() as ch:
        settings = make_settings(database_url(cluster.url, ch.database), clickhouse_cluster=cluster.name)
        async with running(settings) as service:
            await ingest_all(service, day)
            # Sent again by a process that neither remembers nor looks them up (a replay after a
            # crash): the same rows land on the same shard and collapse there.
            blind = Ingestor(service.store, service.writer, replace(service.ingestor.config, lookup_stored_ids=False))
            again = await blind.ingest(day.frontend[:400], day.backend[:300], "again")
            assert again.count("accepted") == 700
        wait_until_converged(cluster, ch.database, expected_totals(day))
        engines = "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name"
        for node in cluster.nodes:
            tables = dict(node_query(node, ch.database, engines))
            for table in (FRONTEND_TABLE, BACKEND_TABLE, "rejected_events", "fired_alerts"):
                assert tables[table] == "Distributed", (node.replica_name, table)
            assert tables["frontend_events_local"] == tables["backend_events_local"] == "ReplicatedReplacingMergeTree"
            assert tables["schema_migrations"] == "ReplicatedReplacingMergeTree"  # the ledger: on every node
            assert "schema_migrations_lock" not in tables  # released
        # Sharded: both shards hold rows, and never the same visitor's (a visitor is one of a tenant).
        visitors = "SELECT DISTINCT tenant_id, visitor_id FROM frontend_events_local"
        shard_1 = set(node_query(cluster.node(1, 1), ch.database, visitors))
        shard_2 = set(node_query(cluster.node(2, 2), ch.database, visitors))
        assert shard_1 and shard_2 and not shard_1 & shard_2
        [(rows, distinct)] = ch.query("SELECT count(), uniqExact(event_id) FROM frontend_events FINAL")
        assert rows == distinct == len(day.frontend)


async def test_two_services_starting_together_apply_each_migration_once(
    cluster: ClickHouseCluster, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inkloop_analytics")
    with cluster.fresh_database() as ch:
        # Each through another node, as two pods behind one Service would be.
        first, second = (
            make_settings(
                database_url(node.url, ch.database), clickhouse_cluster=cluster.name, data_dir=node.base_dir / "svc"
            )
            for node in (cluster.node(1, 1), cluster.node(2, 2))
        )
        services = [Analytics(settings, clock=lambda: NOW) for settings in (first, second)]
        try:
            await asyncio.gather(*(service.open() for service in services))
            await asyncio.gather(*(service.connect() for service in services))
        finally:
            await asyncio.gather(*(service.close() for service in services))
        applied = [record.getMessage() for record in caplog.records if record.getMessage().startswith("applying")]
        every = discover()
        assert sorted(applied) == sorted(f"applying migration {m.name}: {m.description}" for m in every)
        assert any("waiting for it" in record.getMessage() for record in caplog.records)  # one did wait
        ledger = "SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version"
        for node in cluster.nodes:
            node_query(node, ch.database, "SYSTEM SYNC REPLICA schema_migrations")
            assert node_query(node, ch.database, ledger) == [(m.number, 1) for m in every], node.replica_name


def columns_on(node: ClusterNode, database: str, table: str) -> set[str]:
    sql = f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{table}'"
    return {name for (name,) in node_query(node, database, sql)}


def test_alter_migrations_reach_every_replica_without_the_ddl_queue(cluster: ClickHouseCluster) -> None:
    """18.16 ends a replica's DDL worker when two replicas of a shard race on one ALTER … ON CLUSTER
    of a replicated table (seen in CI), so the ALTERs go to one replica per shard and replicate."""
    with cluster.fresh_database() as ch:
        migrate(ch)
        queue = "SELECT value FROM system.zookeeper WHERE path = '/clickhouse/task_queue/ddl'"
        queued = [entry for (entry,) in ch.query(queue) if ch.database in entry]
        assert queued and not [entry for entry in queued if "ALTER TABLE" in entry]
        added = {"prompt_signature", "base_request_id", "template_id"}
        for node in cluster.nodes:
            assert added <= columns_on(node, ch.database, "backend_events_local"), node.replica_name
            assert added <= columns_on(node, ch.database, BACKEND_TABLE), node.replica_name
            assert {"subject", "breakdown"} <= columns_on(node, ch.database, "fired_alerts_local")


def test_a_statement_for_each_shard_passes_over_a_replica_that_is_down(
    cluster: ClickHouseCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with cluster.fresh_database() as ch:
        migrate(ch)
        down = cluster.node(2, 1)
        down.kill()
        # 18.16 waits this long for every replica, the one down too (60 s by default), then leaves the
        # ALTER to replication and says so (code 341).
        url = database_url(cluster.url, ch.database) + "?replication_alter_columns_timeout=2"
        with connect(url, cluster.name) as impatient:
            impatient.execute_on_each_shard("ALTER TABLE frontend_events_local ADD COLUMN probe UInt8 DEFAULT 7")
        assert any("s2r1" in record.getMessage() for record in caplog.records if record.levelname == "WARNING")
        for node in cluster.nodes:
            if node is not down:
                assert "probe" in columns_on(node, ch.database, "frontend_events_local"), node.replica_name
        cluster.wait_healthy()  # the replica that was down takes the change from ZooKeeper
        deadline = time.monotonic() + CONVERGE_S
        while "probe" not in columns_on(down, ch.database, "frontend_events_local"):
            assert time.monotonic() < deadline, "the restarted replica never took the ALTER"
            time.sleep(0.2)


def test_retention_drops_old_partitions_on_every_shard(cluster: ClickHouseCluster) -> None:
    december, january = datetime(2025, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    with cluster.fresh_database() as ch:
        migrate(ch)
        rows = [(uuid.uuid4(), "t1", at, f"v{n}") for n in range(40) for at in (december, january)]
        ch.insert(FRONTEND_TABLE, ("event_id", "tenant_id", "time", "visitor_id"), rows)
        months = "SELECT toYYYYMM(time) AS month, count() FROM frontend_events_local GROUP BY month ORDER BY month"
        assert ch.query(months.replace("_local", "")) == [(202512, 40), (202601, 40)]
        retention.apply(ch, 30, today=date(2026, 1, 31))  # 1 Jan is the oldest day kept

        def only_january_everywhere() -> bool:
            per_node = {node.replica_name: node_query(node, ch.database, months) for node in cluster.nodes}
            shards = [per_node[cluster.node(shard, 1).replica_name] for shard in (1, 2)]
            replicas_agree = all(
                per_node[n.replica_name] == per_node[cluster.node(n.shard, 1).replica_name] for n in cluster.nodes
            )
            # Both shards held rows of both months, and now hold January's only.
            return (
                replicas_agree
                and all(len(held) == 1 and held[0][0] == 202601 for held in shards)
                and (sum(held[0][1] for held in shards) == 40)
            )

        deadline = time.monotonic() + CONVERGE_S
        while not only_january_everywhere():
            assert time.monotonic() < deadline, "December is still on some node"
            time.sleep(0.2)
        assert ch.query(months.replace("_local", "")) == [(202601, 40)]


def test_a_cluster_needs_a_server(make_settings: SettingsFactory) -> None:
    with pytest.raises(ValidationError, match="clickhouse_cluster needs a clickhouse:// server"):
        make_settings("chdb:///unused", clickhouse_cluster="inkloop")
    with pytest.raises(ValidationError, match="clickhouse_cluster"):
        make_settings("clickhouse://127.0.0.1:9000/db", clickhouse_cluster="inkloop; DROP")
    with pytest.raises(ValueError, match="needs a clickhouse:// server URL"):
        connect("chdb:///unused", cluster="inkloop")


# --- faults -------------------------------------------------------------------------------------


async def test_a_replica_killed_mid_ingest_loses_and_doubles_nothing(
    cluster: ClickHouseCluster, clickhouse_server: ClickHouseServer, make_settings: SettingsFactory
) -> None:
    day = with_users(generate(seed=5, visitors=24_500), users=5000)
    assert len(day.frontend) + len(day.backend) >= 100_000
    # Shard 2's first replica: the node asked (s1r1) sends it half of shard 2's inserts.
    victim = cluster.node(2, 1)

    async def kill_then_restart(batch: int) -> None:
        if batch == 30:
            await asyncio.to_thread(victim.kill)
        if batch == 70:
            await asyncio.to_thread(victim.start)

    async with cluster_and_single_node(cluster, clickhouse_server, make_settings) as (clustered, alone, ch):
        acknowledged = await ingest_all(clustered, day, between=kill_then_restart)
        assert len(acknowledged) == len(day.frontend) + len(day.backend)
        await ingest_all(alone, day)
        await wait_for_empty_spool(clustered)
        await asyncio.to_thread(wait_until_converged, cluster, ch.database, expected_totals(day))
        stored = {str(event_id) for (event_id,) in ch.query("SELECT event_id FROM frontend_events")}
        stored |= {str(event_id) for (event_id,) in ch.query("SELECT event_id FROM backend_events")}
        assert stored == set(acknowledged)
        assert await answers(clustered) == await answers(alone)


async def test_a_whole_shard_down_spools_ingest_and_fails_queries_as_unavailable(
    cluster: ClickHouseCluster, clickhouse_server: ClickHouseServer, make_settings: SettingsFactory
) -> None:
    day = generate(seed=9, visitors=1500)
    half = len(day.frontend) // 2
    async with cluster_and_single_node(cluster, clickhouse_server, make_settings) as (clustered, alone, ch):
        await ingest_all(alone, day)
        first = Day(frontend=day.frontend[:half], backend=day.backend[:half])
        await ingest_all(clustered, first)
        for replica in (1, 2):
            await asyncio.to_thread(cluster.node(2, replica).kill)
        # Shard 1 would take its share, but an insert is not split half-done: the batch is spooled.
        rest = Day(frontend=day.frontend[half:], backend=day.backend[half:])
        result = await clustered.ingest(rest.frontend[:200], rest.backend[:200], "during")
        assert result.spooled and result.count("accepted") == 400
        # Not a partial answer presented as complete: an error naming ClickHouse, UNAVAILABLE.
        with pytest.raises(Unavailable, match="ClickHouse"):
            await clustered.funnel(funnel.FunnelQuery("t1", STEPS, WINDOW_S, RANGE))
        with pytest.raises(Unavailable, match="ClickHouse"):
            await clustered.compare_variants(variants.CompareVariantsQuery("t1", RANGE))
        await clustered.ingest(rest.frontend[200:], rest.backend[200:], "still during")
        assert not clustered.spool.empty()
        for replica in (1, 2):
            await asyncio.to_thread(cluster.node(2, replica).start)
        await wait_for_empty_spool(clustered)
        await asyncio.to_thread(wait_until_converged, cluster, ch.database, expected_totals(day))
        assert await answers(clustered) == await answers(alone)


async def test_zookeeper_down_makes_clickhouse_refuse_inserts_so_events_spool_and_replay(
    cluster: ClickHouseCluster, clickhouse_server: ClickHouseServer, make_settings: SettingsFactory
) -> None:
    day = generate(seed=13, visitors=1500)
    half = len(day.frontend) // 2
    async with cluster_and_single_node(cluster, clickhouse_server, make_settings) as (clustered, alone, ch):
        await ingest_all(alone, day)
        await ingest_all(clustered, Day(frontend=day.frontend[:half], backend=day.backend[:half]))
        await asyncio.to_thread(cluster.zookeeper.kill)
        rest = Day(frontend=day.frontend[half:], backend=day.backend[half:])
        spooled = 0
        for start in range(0, len(rest.frontend), 300):
            result = await clustered.ingest(rest.frontend[start : start + 300], rest.backend[start : start + 300], "")
            spooled += result.spooled
        assert spooled > 0, "no insert was refused while ZooKeeper was down"
        # Reads need no ZooKeeper: what is stored can still be counted.
        [(stored,)] = ch.query("SELECT uniqExact(event_id) FROM frontend_events")
        assert half <= stored < len(day.frontend)
        await asyncio.to_thread(cluster.zookeeper.start)
        await wait_for_empty_spool(clustered)
        await asyncio.to_thread(wait_until_converged, cluster, ch.database, expected_totals(day))
        assert await answers(clustered) == await answers(alone)
