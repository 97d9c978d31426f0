"""The spool on its own, and the writer's spool-and-replay with the 18.16 server stopped mid-ingest."""

from __future__ import annotations

import asyncio
import json
import pickle
import struct
import time
import uuid
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from harness import free_ports
from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.errors import ResourceExhausted
from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.service import Analytics
from inkloop_analytics.spool import Spool, SpoolFormatError, decode
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


def replay(spool: Spool) -> list[Rows]:
    """What the writer's replayer does: oldest segment first, each removed once read."""
    records = []
    while (segment := spool.oldest()) is not None:
        records.extend(spool.read(segment))
        spool.remove(segment)
    return records


def test_records_come_back_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=3000)
    assert spool.empty()
    for number in range(10):
        spool.append(rows(number))
    assert not spool.empty() and spool.size_bytes > 0
    spool.close()
    assert len(list(tmp_path.iterdir())) > 1  # several segments, replayed in order
    reopened = Spool(tmp_path, max_bytes=10_000_000)
    assert [value_of(record) for record in replay(reopened)] == list(range(10))
    assert reopened.empty() and reopened.size_bytes == 0 and list(tmp_path.iterdir()) == []


def test_rows_come_back_equal_with_their_types(tmp_path: Path) -> None:
    written = rows(7)
    value = FRONTEND_COLUMNS.index("value")
    written.frontend.append((*written.frontend[0][:value], None, *written.frontend[0][value + 1 :]))
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.append(written)
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


def test_records_are_lines_of_checksummed_json_with_tagged_types(tmp_path: Path) -> None:
    written = rows(3)
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.append(written)
    spool.close()
    [segment] = tmp_path.iterdir()
    [line] = segment.read_bytes().splitlines()
    crc, payload = line.split(b" ", 1)
    assert int(crc, 16) == zlib.crc32(payload)
    document = json.loads(payload)
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


def test_a_torn_last_record_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.append(rows(1))
    spool.append(rows(2))
    spool.close()
    [segment] = tmp_path.iterdir()
    data = segment.read_bytes()
    for cut in (1, 5, len(data) // 4):  # a crash in the middle of the second append
        segment.write_bytes(data[:-cut])
        assert [value_of(record) for record in Spool(tmp_path, 10_000_000).read(segment)] == [1]


def test_reading_stops_at_a_corrupt_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000)
    for number in range(3):
        spool.append(rows(number))
    spool.close()
    [segment] = tmp_path.iterdir()
    data = bytearray(segment.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 40] ^= 0x01  # a flipped bit inside the second record
    segment.write_bytes(bytes(data))
    assert [value_of(record) for record in Spool(tmp_path, 10_000_000).read(segment)] == [0]


def legacy_record(payload: bytes) -> bytes:
    """A record as the pickle spool wrote it: magic, length, CRC-32, payload."""
    return struct.pack(">4sII", b"INKS", len(payload), zlib.crc32(payload)) + payload


def test_pickle_segments_of_the_previous_version_are_replayed_once_first(tmp_path: Path) -> None:
    old = [rows(1), rows(2)]
    pickled = [pickle.dumps((r.frontend, r.backend, r.rejected), protocol=pickle.HIGHEST_PROTOCOL) for r in old]
    torn = legacy_record(pickled[0])[:-3]
    (tmp_path / "000000000007.spool").write_bytes(b"".join(legacy_record(p) for p in pickled) + torn)
    spool = Spool(tmp_path, max_bytes=10_000_000)
    new = rows(3)
    spool.append(new)
    assert replay(spool) == [*old, new]
    assert list(tmp_path.iterdir()) == []


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, ("PWNED",))


def test_a_pickle_that_would_build_anything_but_row_types_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps(([(Exploit(),)], [], []))
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "000000000001.spool").write_bytes(legacy_record(payload))
    spool = Spool(tmp_path / "spool", max_bytes=10_000_000)
    with pytest.raises(SpoolFormatError, match="pathlib"):
        spool.read(spool.oldest())
    assert not (tmp_path / "PWNED").exists()


def test_full_is_reported_by_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=5000)
    while not spool.full():
        spool.append(rows(0))
    assert spool.size_bytes >= 5000


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
            assert REGISTRY.get_sample_value("inkloop_analytics_spool_bytes") == 0
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
        (spool_dir / "000000000001.spool").write_bytes(legacy_record(pickle.dumps(([(Exploit(),)], [], []))))
        Spool(spool_dir, settings.spool_max_bytes).append(rows(42))  # a good segment after the bad one
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
    assert [path.name for path in spool_dir.iterdir()] == ["000000000001.spool.unreadable"]  # kept, not deleted
