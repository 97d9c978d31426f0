"""The shared spool on its own: order across segments and reopens, durability framing, both bounds."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from inkloop.spool import Spool, WhenFull


def record(number: int, size: int = 40) -> bytes:
    return f'{{"n":{number},"pad":"{"x" * size}"}}'.encode()


def replay(spool: Spool) -> list[bytes]:
    """What both services' replayers do: oldest segment first, each removed once delivered."""
    records = []
    while (segment := spool.oldest()) is not None:
        records.extend(spool.read(segment))
        spool.remove(segment)
    return records


def dropped(name: str) -> float:
    return REGISTRY.get_sample_value("inkloop_spool_dropped_records_total", {"spool": name}) or 0.0


def size_gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("inkloop_spool_bytes", {"spool": name})


def test_records_come_back_in_order_across_segments_and_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="order", max_bytes=10_000_000, segment_bytes=300)
    assert spool.empty()
    for number in range(10):
        spool.append(record(number))
    spool.append_many([record(10), record(11)])
    assert not spool.empty() and spool.size_bytes == size_gauge("order") > 0
    spool.close()
    assert len(list(tmp_path.iterdir())) > 1  # several segments, replayed in order
    reopened = Spool(tmp_path, name="order", max_bytes=10_000_000)
    assert replay(reopened) == [record(n) for n in range(12)]
    assert reopened.empty() and reopened.size_bytes == 0 == size_gauge("order") and list(tmp_path.iterdir()) == []


def test_each_record_is_a_checksummed_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="lines", max_bytes=10_000_000)
    spool.append(record(3))
    spool.close()
    [segment] = tmp_path.iterdir()
    [line] = segment.read_bytes().splitlines()
    crc, payload = line.split(b" ", 1)
    assert payload == record(3) and int(crc, 16) == zlib.crc32(payload)


def test_a_record_holding_a_newline_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="newline", max_bytes=10_000_000)
    with pytest.raises(ValueError, match="newline"):
        spool.append_many([record(1), b'{"a":\n1}'])
    assert spool.empty()


def test_a_torn_last_record_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="torn", max_bytes=10_000_000)
    spool.append(record(1))
    spool.append(record(2))
    spool.close()
    [segment] = tmp_path.iterdir()
    data = segment.read_bytes()
    for cut in (1, 5, len(data) // 4):  # a crash in the middle of the second append
        segment.write_bytes(data[:-cut])
        assert Spool(tmp_path, name="torn", max_bytes=10_000_000).read(segment) == [record(1)]


def test_reading_stops_at_a_corrupt_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="corrupt", max_bytes=10_000_000)
    spool.append_many([record(n) for n in range(3)])
    spool.close()
    [segment] = tmp_path.iterdir()
    data = bytearray(segment.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 20] ^= 0x01  # a flipped bit inside the second record
    segment.write_bytes(bytes(data))
    assert Spool(tmp_path, name="corrupt", max_bytes=10_000_000).read(segment) == [record(0)]


def test_push_back_never_drops_and_reports_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="push", max_bytes=2000, segment_bytes=500)
    appended = 0
    while not spool.full():
        spool.append(record(appended))
        appended += 1
    spool.append_many([record(appended), record(appended + 1)])  # the owner decides; the spool keeps all
    assert spool.size_bytes >= 2000 and dropped("push") == 0
    assert replay(spool) == [record(n) for n in range(appended + 2)]


def test_drop_oldest_stays_within_its_bound_and_counts_what_it_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, name="drop", max_bytes=4000, when_full=WhenFull.DROP_OLDEST)
    before = dropped("drop")
    for number in range(200):
        spool.append(record(number))
        assert spool.size_bytes <= 4000
    kept = replay(spool)
    lost = int(dropped("drop") - before)
    # The newest records are kept, the oldest dropped, each one counted: nothing vanishes unaccounted.
    assert lost > 0 and kept == [record(n) for n in range(lost, 200)]
    assert any("dropped the oldest records" in r.getMessage() for r in caplog.records)


def test_a_segment_set_aside_leaves_the_replay_order_and_stays_on_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, name="aside", max_bytes=10_000_000, segment_bytes=1)  # one record per segment
    spool.append_many([record(1), record(2)])
    first = spool.oldest()
    assert first is not None
    kept = spool.set_aside(first)
    assert replay(spool) == [record(2)]
    assert [path.name for path in tmp_path.iterdir()] == [kept.name] and kept.name.endswith(".jsonl.unreadable")
