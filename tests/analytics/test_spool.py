"""Rows as spool records, and the writer's spool-and-replay with the 18.16 server stopped mid-ingest.

The spool itself (order, framing, bounds) is tested in tests/test_spool.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from harness import free_ports
from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.errors import ResourceExhausted
from inkloop.prompts import PrivacyPolicy
from inkloop.spool import Spool
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.service import Analytics
from inkloop_analytics.spooled_rows import SpoolFormatError, decode, encode
from inkloop_analytics.tables import BACKEND_COLUMNS, FRONTEND_COLUMNS, REJECTED_COLUMNS, Rows
from inkloop_analytics.validation import Limits, Rejection, backend_row, frontend_row, rejected_row

from .builders import backend, page_view, track
from .generator import NOW, T0

POLICY = PrivacyPolicy(store_text="redacted", max_chars=64, salt="test-salt")


def rows(number: int) -> Rows:
    """Real rows of each table, as ingest builds them; `number` is the front-end row's `value`."""
    front = track(T0, "v1", "generate", "click", value=number, request_id=f"r{number}", custom_vars={"plan": "pro"})
    back = backend(T0, pb.BACKEND_EVENT_TYPE_SUCCEEDED, f"r{number}", latency_s=1.25, prompt={"redacted": "一只狐狸"})
    front_row = frontend_row(front, uuid.UUID(front.event_id), NOW, Limits(), POLICY)
    back_row = backend_row(back, uuid.UUID(back.event_id), NOW, Limits(), POLICY)
    assert isinstance(front_row, tuple) and isinstance(back_row, tuple)
    rejected = rejected_row("frontend", "bad-id", "t1", "b1", Rejection("event_id", "not a UUID"), 12, NOW)
    return Rows(frontend=[front_row], backend=[back_row], rejected=[rejected])


def value_of(record: Rows) -> int:
    return record.frontend[0][FRONTEND_COLUMNS.index("value")]


def spool_at(directory: Path) -> Spool:
    return Spool(directory, name="analytics-rows", max_bytes=10_000_000)


def replay(spool: Spool) -> list[Rows]:
    """What the writer's replayer does: oldest segment first, each removed once read."""
    records = []
    while (segment := spool.oldest()) is not None:
        records.extend(decode(record) for record in spool.read(segment))
        spool.remove(segment)
    return records


def test_rows_come_back_equal_with_their_types(tmp_path: Path) -> None:
    written = rows(7)
    value = FRONTEND_COLUMNS.index("value")
    written.frontend.append((*written.frontend[0][:value], None, *written.frontend[0][value + 1 :]))
    spool = spool_at(tmp_path)
    spool.append(encode(written))
    [record] = replay(spool)
    assert record == written
    for replayed, original in zip(
        record.frontend + record.backend + record.rejected,
        written.frontend + written.backend + written.rejected,
        strict=True,
    ):
        assert [type(item) for item in replayed] == [type(item) for item in original]
    assert isinstance(record.frontend[0][0], uuid.UUID)
    replayed_time = record.backend[0][BACKEND_COLUMNS.index("time")]
    assert replayed_time == T0 and replayed_time.tzinfo is not None


def test_records_are_json_documents_with_tagged_types() -> None:
    written = rows(3)
    document = json.loads(encode(written))
    front = document["frontend_events"]
    assert front["columns"] == list(FRONTEND_COLUMNS)
    [row] = front["rows"]
    assert row[0] == {"$uuid": str(written.frontend[0][0])}
    assert row[FRONTEND_COLUMNS.index("time")] == {"$time": T0.isoformat()}
    assert row[FRONTEND_COLUMNS.index("custom_var_names")] == ["plan"]
    assert document["backend_events"]["rows"][0][BACKEND_COLUMNS.index("prompt_redacted")] == "一只狐狸"


def test_rows_written_with_another_column_order_are_reordered_by_name() -> None:
    [original] = rows(1).rejected
    tagged = [{"$time": item.isoformat()} if isinstance(item, datetime) else item for item in original]
    columns, stored = [*reversed(REJECTED_COLUMNS), "dropped_since"], [*reversed(tagged), "obsolete"]
    payload = json.dumps({"v": 1, "rejected_events": {"columns": columns, "rows": [stored]}}).encode()
    assert decode(payload).rejected == [original]
    del columns[0], stored[0]  # size_bytes, a column this version needs
    payload = json.dumps({"v": 1, "rejected_events": {"columns": columns, "rows": [stored]}}).encode()
    with pytest.raises(SpoolFormatError, match="size_bytes"):
        decode(payload)


class Exploit:
    """What a pickle-based spool would run on read; the JSON records cannot even express it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, ("PWNED",))


def test_a_record_of_another_format_version_is_refused_not_guessed() -> None:
    document = json.loads(encode(rows(1)))
    document["v"] = 2
    with pytest.raises(SpoolFormatError, match="version 2"):
        decode(json.dumps(document).encode())
    with pytest.raises(TypeError, match="Exploit"):
        encode(Rows(frontend=[(Exploit(),)]))


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
    spooled = [row for record in replay(spool_at(settings.resolved_spool_dir())) for row in record.frontend]
    assert accepted > 0 and len(spooled) == accepted  # every acknowledged event is on disk


async def test_server_stopped_and_restarted_mid_ingest_loses_and_doubles_nothing(
    clickhouse_server: ClickHouseServer, make_settings
) -> None:
    with fresh_database(clickhouse_server.url) as ch:
        url = database_url(clickhouse_server.url, ch.database)
        service = Analytics(make_settings(url, flush_interval_s=0.01), clock=lambda: NOW)
        await service.open()
        await service.connect()
        rows_spooled = REGISTRY.get_sample_value("inkloop_analytics_rows_spooled_total") or 0.0
        rows_replayed = REGISTRY.get_sample_value("inkloop_analytics_rows_replayed_total") or 0.0
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
            spooled = (REGISTRY.get_sample_value("inkloop_analytics_rows_spooled_total") or 0.0) - rows_spooled
            replayed = (REGISTRY.get_sample_value("inkloop_analytics_rows_replayed_total") or 0.0) - rows_replayed
            assert spooled >= 50 * spooled_batches and replayed == spooled
            assert REGISTRY.get_sample_value("inkloop_spool_bytes", {"spool": "analytics-rows"}) == 0
            [(distinct,)] = ch.query("SELECT uniqExact(event_id) FROM frontend_events")
            stored = {str(event_id) for (event_id,) in ch.query("SELECT DISTINCT event_id FROM frontend_events")}
        finally:
            if not clickhouse_server.running:
                clickhouse_server.start()
        # A batch cancelled before its acknowledgement may or may not be stored; every acked one is, once.
        assert set(acknowledged) <= stored
        assert distinct - len(acknowledged) <= 50


async def test_a_segment_this_version_cannot_read_is_set_aside_and_the_rest_replayed(
    clickhouse_server: ClickHouseServer, make_settings
) -> None:
    with fresh_database(clickhouse_server.url) as ch:
        settings = make_settings(database_url(clickhouse_server.url, ch.database))
        spool_dir = settings.resolved_spool_dir()
        spool_dir.mkdir(parents=True)
        unreadable = json.loads(encode(rows(41)))
        unreadable["v"] = 2  # written by a later version, say, before a rollback
        bad = spool_at(spool_dir)
        bad.append(json.dumps(unreadable).encode())
        bad.close()
        spool_at(spool_dir).append(encode(rows(42)))  # a good segment after the bad one
        service = Analytics(settings, clock=lambda: NOW)
        await service.open()
        await service.connect()
        try:
            for _ in range(100):
                if service.spool.empty():
                    break
                await asyncio.sleep(0.05)
        finally:
            await service.close()
        [(values,)] = ch.query("SELECT groupArray(value) FROM frontend_events")
    assert values == [42]  # the readable segment was replayed past the unreadable one
    assert [path.name for path in spool_dir.iterdir()] == ["000000000001.jsonl.unreadable"]  # kept, not deleted
