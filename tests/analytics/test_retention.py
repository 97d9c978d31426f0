"""Retention on both engines: TTL where the engine has it, whole monthly partitions dropped on 18.16."""

from __future__ import annotations

import calendar
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest

from harness.clickhouse import ClickHouseServer, fresh_database
from inkloop_analytics import retention
from inkloop_analytics.migrations import migrate
from inkloop_analytics.storage import ClickHouse, Params
from inkloop_analytics.tables import BACKEND_TABLE, FRONTEND_TABLE, REJECTED_TABLE

TABLES = (FRONTEND_TABLE, BACKEND_TABLE, REJECTED_TABLE)


class RecordingClickHouse:
    """Passes every call through to `ch` and keeps the statements `execute` and
    `execute_on_each_shard` ran."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self.statements: list[str] = []

    def execute(self, sql: str, params: Params | None = None) -> None:
        self.statements.append(sql)
        self.ch.execute(sql, params)

    def execute_on_each_shard(self, sql: str) -> None:
        self.statements.append(sql)
        self.ch.execute_on_each_shard(sql)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ch, name)


def insert_events(ch: ClickHouse, times: list[datetime]) -> None:
    """One row per time in each event table (only the columns retention looks at are set)."""
    ch.insert(FRONTEND_TABLE, ("event_id", "tenant_id", "time"), [(uuid.uuid4(), "t1", at) for at in times])
    ch.insert(BACKEND_TABLE, ("event_id", "tenant_id", "time"), [(uuid.uuid4(), "t1", at) for at in times])
    ch.insert(REJECTED_TABLE, ("received_at", "stream"), [(at, "frontend") for at in times])


def stored_times(ch: ClickHouse) -> dict[str, Counter[datetime]]:
    """What each table holds once merges (and the TTL they apply) have run."""
    stored = {}
    for table, column in retention.TIME_COLUMNS.items():
        ch.execute(f"OPTIMIZE TABLE {table} FINAL")
        stored[table] = Counter(at for (at,) in ch.query(f"SELECT {column} FROM {table}"))
    return stored


def every_day_of_month_before(at: datetime, oldest_kept: date) -> bool:
    last_day = calendar.monthrange(at.year, at.month)[1]
    return date(at.year, at.month, last_day) < oldest_kept


def test_events_past_retention_go_and_the_rest_stay(clickhouse: ClickHouse) -> None:
    migrate(clickhouse)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    days = 90
    times = [now - timedelta(days=age, hours=1) for age in (2, 31, 60, 89, 95, 130, 200, 380)]
    insert_events(clickhouse, times)

    retention.apply(clickhouse, days, today=today)

    if clickhouse.supports("ttl"):  # row by row, once merges apply the TTL
        expected = [at for at in times if at + timedelta(days=days) >= now]
    else:  # whole months only: a month stays while any of its days is within retention
        expected = [at for at in times if not every_day_of_month_before(at, today - timedelta(days=days))]
    assert len(expected) < len(times)  # something is past retention whatever today's date
    for table, kept in stored_times(clickhouse).items():
        assert kept == Counter(expected), table


@pytest.fixture
def server_18_16(clickhouse_server: ClickHouseServer) -> Iterator[ClickHouse]:
    """A fresh database on the 18.16 server: no TTL, so retention drops whole monthly partitions."""
    with fresh_database(clickhouse_server.url) as ch:
        assert not ch.supports("ttl")
        yield ch


@pytest.fixture
def chdb(chdb_url: str) -> Iterator[ClickHouse]:
    """A fresh database on embedded chDB, whose tables carry a TTL."""
    with fresh_database(chdb_url) as ch:
        assert ch.supports("ttl")
        yield ch


def test_partitions_are_dropped_only_when_every_day_is_past_retention(server_18_16: ClickHouse) -> None:
    clickhouse = server_18_16  # engines with TTL expire rows by the server's clock, not by partition
    migrate(clickhouse)
    december, january = datetime(2025, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    insert_events(clickhouse, [december, january])
    today = date(2026, 1, 31)

    retention.apply(clickhouse, 31, today=today)  # 31 Dec is the oldest day kept: December stays
    assert all(kept == Counter([december, january]) for kept in stored_times(clickhouse).values())
    retention.apply(clickhouse, 0, today=today)  # forever: nothing goes, however old
    assert all(kept == Counter([december, january]) for kept in stored_times(clickhouse).values())
    retention.apply(clickhouse, 30, today=today)  # 1 Jan is the oldest day kept: all of December is past
    assert all(kept == Counter([january]) for kept in stored_times(clickhouse).values())


def test_zero_days_keeps_events_forever(clickhouse: ClickHouse) -> None:
    migrate(clickhouse)
    retention.apply(clickhouse, 30)
    retention.apply(clickhouse, 0)  # after a shorter retention, as when the setting changes
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)
    insert_events(clickhouse, [old])
    for table, kept in stored_times(clickhouse).items():
        assert kept == Counter([old]), table


def test_ttl_is_changed_only_when_it_differs(chdb: ClickHouse) -> None:
    clickhouse = chdb  # 18.16 has no TTL
    migrate(clickhouse)
    recording = RecordingClickHouse(clickhouse)
    engine = cast(ClickHouse, recording)

    def ttl_days() -> dict[str, str | None]:
        found = {}
        for table in TABLES:
            [(engine_full,)] = clickhouse.query(retention.ENGINE_FULL, {"table": table})
            match = retention._TTL_DAYS.search(engine_full)
            found[table] = match.group(1) if match else None
        return found

    retention.apply(engine, 30)
    assert ttl_days() == dict.fromkeys(TABLES, "30")
    assert len(recording.statements) == len(TABLES)
    retention.apply(engine, 30)
    assert len(recording.statements) == len(TABLES)  # already right: parts are not rewritten again
    retention.apply(engine, 0)
    assert ttl_days() == dict.fromkeys(TABLES, None)
    assert all("TTL" not in clickhouse.query(retention.ENGINE_FULL, {"table": t})[0][0] for t in TABLES)
    retention.apply(engine, 0)
    assert len(recording.statements) == 2 * len(TABLES)
