"""The spool on its own, and the writer's spool-and-replay with the 18.16 server stopped mid-ingest."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from harness import free_ports
from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.errors import ResourceExhausted
from inkloop_analytics.service import Analytics
from inkloop_analytics.spool import Spool
from inkloop_analytics.tables import Rows

from .builders import page_view
from .generator import NOW, T0


def rows(number: int) -> Rows:
    return Rows(
        frontend=[(uuid.UUID(int=number), "t1", T0, number)], rejected=[(T0, "frontend", "", "", "", "f", "r", 1)]
    )


def test_records_come_back_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=300)
    assert spool.empty()
    for number in range(10):
        spool.append(rows(number))
    assert not spool.empty() and spool.size_bytes > 0
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10_000_000)
    replayed: list[int] = []
    while (segment := reopened.oldest()) is not None:
        replayed.extend(record.frontend[0][3] for record in reopened.read(segment))
        reopened.remove(segment)
    assert replayed == list(range(10))
    assert reopened.empty() and reopened.size_bytes == 0 and list(tmp_path.iterdir()) == []


def test_a_torn_last_record_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.append(rows(1))
    spool.append(rows(2))
    spool.close()
    [segment] = tmp_path.iterdir()
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # a crash in the middle of the second append
    assert [record.frontend[0][3] for record in Spool(tmp_path, 10_000_000).read(segment)] == [1]


def test_full_is_reported_by_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=500)
    while not spool.full():
        spool.append(rows(0))
    assert spool.size_bytes >= 500


async def test_backpressure_when_clickhouse_is_down_and_the_spool_is_full(tmp_path: Path, make_settings) -> None:
    [closed_port] = free_ports(1)
    settings = make_settings(
        f"clickhouse://127.0.0.1:{closed_port}/default", spool_max_bytes=4096, backpressure_timeout_s=0.3
    )
    service = Analytics(settings, clock=lambda: NOW)
    await service.open()  # never connects: everything goes to the spool
    accepted = 0
    try:
        with pytest.raises(ResourceExhausted) as error:
            for _ in range(200):
                result = await service.ingest([page_view(T0, "v1") for _ in range(10)], [], "")
                assert result.spooled
                accepted += result.count("accepted")
        began = time.monotonic()
        with pytest.raises(ResourceExhausted):
            await service.ingest([page_view(T0, "v1")], [], "")
        assert 0.25 <= time.monotonic() - began < 2  # it waited, boundedly
    finally:
        await service.close()
    assert error.value.retry_after_s and error.value.retry_after_s > 0
    assert 4096 <= service.spool.size_bytes < 4096 + 8192
    spool = Spool(settings.resolved_spool_dir(), settings.spool_max_bytes)
    spooled: list[tuple] = []
    while (segment := spool.oldest()) is not None:
        spooled.extend(row for record in spool.read(segment) for row in record.frontend)
        spool.remove(segment)
    assert accepted > 0 and len(spooled) == accepted  # every acknowledged event is on disk


async def test_server_stopped_and_restarted_mid_ingest_loses_and_doubles_nothing(
    clickhouse_server: ClickHouseServer, make_settings
) -> None:
    with fresh_database(clickhouse_server.url) as ch:
        url = database_url(clickhouse_server.url, ch.database)
        service = Analytics(make_settings(url, flush_interval_s=0.01), clock=lambda: NOW)
        await service.open()
        await service.connect()
        acknowledged: list[str] = []
        spooled_batches = 0

        async def send(batches: int) -> None:
            nonlocal spooled_batches
            for number in range(batches):
                events = [page_view(T0 + timedelta(seconds=number), f"v{i}") for i in range(50)]
                result = await service.ingest(events, [], f"b{number}")
                assert result.count("accepted") == 50
                acknowledged.extend(event.event_id for event in events)
                spooled_batches += result.spooled
                await asyncio.sleep(0.01)

        try:
            sender = asyncio.create_task(send(10_000))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(clickhouse_server.stop)  # mid-ingest
            await asyncio.sleep(0.5)
            await asyncio.to_thread(clickhouse_server.start)
            await asyncio.sleep(0.3)
            sender.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sender
            # Let the replayer drain the spool.
            for _ in range(200):
                if service.spool.empty():
                    break
                await asyncio.sleep(0.05)
            await service.close()
            assert service.spool.empty()
            assert spooled_batches > 0, "nothing was spooled: the outage was not noticed"
            [(distinct,)] = ch.query("SELECT uniqExact(event_id) FROM frontend_events")
            stored = {str(event_id) for (event_id,) in ch.query("SELECT DISTINCT event_id FROM frontend_events")}
        finally:
            if not clickhouse_server.running:
                clickhouse_server.start()
        # A batch cancelled before its acknowledgement may or may not be stored; every acked one is, once.
        assert set(acknowledged) <= stored
        assert distinct - len(acknowledged) <= 50
