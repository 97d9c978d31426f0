"""Ingest on both engines: per-event acks, rejections with reasons, duplicates counted once, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.ingest import LOOKUP_CHUNK_IDS, Ack, Acks, RecentIds
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.validation import Rejection

from .builders import backend, new_id, page_view, track
from .generator import NOW, T0


def statuses(acks: list) -> list[str]:
    return [ack.status for ack in acks]


async def test_valid_events_are_accepted_and_stored(analytics: Analytics, clickhouse: ClickHouse) -> None:
    front = [page_view(T0, "v1"), track(T0 + timedelta(seconds=5), "v1", "generate", "click", request_id="r1")]
    back = [backend(T0 + timedelta(seconds=6), pb.BACKEND_EVENT_TYPE_REQUESTED, "r1")]
    result = await analytics.ingest(front, back, "b1")
    assert (result.batch_id, result.spooled) == ("b1", False)
    assert statuses(result.frontend) == ["accepted", "accepted"]
    assert statuses(result.backend) == ["accepted"]
    assert [ack.event_id for ack in result.frontend] == [event.event_id for event in front]
    stored = clickhouse.query(
        "SELECT toString(event_id), type, category, device, time FROM frontend_events ORDER BY time"
    )
    assert stored == [
        (front[0].event_id, "page_view", "", "desktop", T0),
        (front[1].event_id, "track_event", "generate", "desktop", T0 + timedelta(seconds=5)),
    ]
    assert clickhouse.query("SELECT type, request_id, variant, kind FROM backend_events") == [
        ("requested", "r1", "A", "text_to_image")
    ]


async def test_invalid_events_are_rejected_one_by_one_and_kept_with_reason(
    analytics: Analytics, clickhouse: ClickHouse
) -> None:
    good = page_view(T0, "v1")
    bad_front = [
        page_view(T0, "v1", event_id="not-a-uuid"),
        page_view(T0, "v1", tenant_id=""),
        page_view(T0, "v1", type=pb.FRONTEND_EVENT_TYPE_UNSPECIFIED),
        page_view(T0, "v1", type=42),  # an enum value this version does not know
        page_view(NOW + timedelta(days=2), "v1"),
        page_view(NOW - timedelta(days=400), "v1"),
        page_view(T0, "v1", page_url="https://x.test/" + "a" * 2100),
        track(T0, "v1", "generate", ""),
    ]
    bad_back = [
        backend(T0, pb.BACKEND_EVENT_TYPE_UNSPECIFIED, "r"),
        backend(T0, pb.BACKEND_EVENT_TYPE_REQUESTED, "r", latency_s=float("nan")),
        backend(T0, pb.BACKEND_EVENT_TYPE_REQUESTED, "r", variant="v" * 65),
    ]
    result = await analytics.ingest([good, *bad_front], bad_back, "batch-7")
    assert statuses(result.frontend) == ["accepted"] + ["rejected"] * len(bad_front)
    fields = [(ack.field, ack.reason) for ack in result.frontend[1:]]
    assert [field for field, _ in fields] == [
        "event_id",
        "tenant_id",
        "type",
        "type",
        "client_time",
        "client_time",
        "page_url",
        "action",
    ]
    assert "future" in fields[4][1] and "past" in fields[5][1]
    assert [(ack.status, ack.field) for ack in result.backend] == [
        ("rejected", "type"),
        ("rejected", "latency_s"),
        ("rejected", "variant"),
    ]
    assert (result.count("accepted"), result.count("rejected")) == (1, 11)
    rows = clickhouse.query("SELECT stream, field, event_id, batch_id FROM rejected_events ORDER BY stream, field")
    assert len(rows) == 11
    assert ("frontend", "event_id", "not-a-uuid", "batch-7") in rows
    assert sorted(field for stream, field, _, _ in rows if stream == "backend") == ["latency_s", "type", "variant"]
    assert clickhouse.query("SELECT count() FROM frontend_events") == [(1,)]


async def test_retries_and_in_batch_repeats_are_duplicates(analytics: Analytics, clickhouse: ClickHouse) -> None:
    first = page_view(T0, "v1")
    second = page_view(T0 + timedelta(seconds=1), "v2")
    result = await analytics.ingest([first, second, first], [], "")
    assert statuses(result.frontend) == ["accepted", "accepted", "duplicate"]
    retry = await analytics.ingest([second, page_view(T0, "v3")], [], "")
    assert statuses(retry.frontend) == ["duplicate", "accepted"]
    assert (retry.count("accepted"), retry.count("duplicate")) == (1, 1)
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM frontend_events") == [(3, 3)]


async def test_ids_already_in_clickhouse_are_duplicates_after_a_restart(
    analytics: Analytics, clickhouse: ClickHouse, clickhouse_url: str, make_settings
) -> None:
    event = backend(T0, pb.BACKEND_EVENT_TYPE_REQUESTED, "r1")
    assert statuses((await analytics.ingest([], [event], "")).backend) == ["accepted"]
    # A new process: its memory of recent ids is empty, ClickHouse is asked instead.
    fresh = Analytics(make_settings(clickhouse_url, data_dir=analytics.settings.data_dir / "other"), clock=lambda: NOW)
    await fresh.open()
    await fresh.connect()
    try:
        again = await fresh.ingest([], [event, backend(T0, pb.BACKEND_EVENT_TYPE_SUCCEEDED, "r1")], "")
    finally:
        await fresh.close()
    assert statuses(again.backend) == ["duplicate", "accepted"]
    assert clickhouse.query("SELECT count() FROM backend_events") == [(2,)]


async def test_uuid_spellings_are_one_event(analytics: Analytics) -> None:
    event_id = new_id()
    upper = page_view(T0, "v1", event_id=event_id.upper())
    bare = page_view(T0, "v1", event_id=event_id.replace("-", ""))
    result = await analytics.ingest([upper, bare], [], "")
    assert statuses(result.frontend) == ["accepted", "duplicate"]


async def _requests(requests: list[pb.IngestRequest]) -> AsyncIterator[pb.IngestRequest]:
    for request in requests:
        yield request


async def test_a_stream_answers_in_order_while_reading_ahead(analytics: Analytics, clickhouse: ClickHouse) -> None:
    repeated = page_view(T0, "v0")
    requests = [
        pb.IngestRequest(batch_id=f"b{n}", frontend=[repeated, *(page_view(T0, f"v{n}") for _ in range(n))])
        for n in range(12)  # more than the window: reading waits for answers
    ]
    results = [result async for result in analytics.ingest_stream(_requests(requests))]
    assert [result.batch_id for result in results] == [f"b{n}" for n in range(12)]
    assert statuses(results[0].frontend) == ["accepted"]
    for n, result in enumerate(results[1:], start=1):  # the id stored by the first batch, then n new ones
        assert statuses(result.frontend) == ["duplicate"] + ["accepted"] * n
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM frontend_events") == [(67, 67)]


async def test_a_failed_batch_ends_the_stream_and_its_ids_stay_acceptable(analytics: Analytics) -> None:
    class Refused(Exception):
        pass

    events = [page_view(T0, "v1"), page_view(T0, "v2")]

    async def refuse(rows: object) -> bool:
        raise Refused

    write, analytics.writer.write = analytics.writer.write, refuse  # type: ignore[method-assign]
    requests = [pb.IngestRequest(batch_id="b0", frontend=events[:1]), pb.IngestRequest(frontend=events[1:])]
    with pytest.raises(Refused):
        async for _ in analytics.ingest_stream(_requests(requests)):
            pass
    analytics.writer.write = write  # type: ignore[method-assign]
    retry = await analytics.ingest(events, [], "")
    assert statuses(retry.frontend) == ["accepted", "accepted"]


async def test_large_batches_are_looked_up_in_parts(
    analytics: Analytics, clickhouse: ClickHouse, clickhouse_url: str, make_settings
) -> None:
    # More ids than one lookup query may carry (ClickHouse limits the query's size).
    events = [backend(T0, pb.BACKEND_EVENT_TYPE_REQUESTED, f"r{n}") for n in range(LOOKUP_CHUNK_IDS + 100)]
    assert (await analytics.ingest([], events, "")).count("accepted") == len(events)
    fresh = Analytics(make_settings(clickhouse_url, data_dir=analytics.settings.data_dir / "other"), clock=lambda: NOW)
    await fresh.open()
    await fresh.connect()
    try:
        again = await fresh.ingest([], [*events, backend(T0, pb.BACKEND_EVENT_TYPE_SUCCEEDED, "r0")], "")
    finally:
        await fresh.close()
    assert (again.count("duplicate"), again.count("accepted")) == (len(events), 1)
    assert clickhouse.query("SELECT count() FROM backend_events") == [(len(events) + 1,)]


def test_acks_read_like_a_list() -> None:
    acks = Acks(["a", "b", "c"])
    acks.reject(1, Rejection("tenant_id", "required"))
    acks.statuses[2] = "duplicate"
    assert list(acks) == [Ack("a", "accepted"), Ack("b", "rejected", "required", "tenant_id"), Ack("c", "duplicate")]
    assert (acks[-1], acks[1:], len(acks)) == (Ack("c", "duplicate"), list(acks)[1:], 3)
    with pytest.raises(IndexError):
        acks[3]


def test_recent_ids_keep_at_least_half_their_capacity() -> None:
    recent = RecentIds(capacity=4)
    for key in range(10):
        recent.add_all([key])
        assert key in recent and (key == 0 or key - 1 in recent)  # the latest capacity / 2
    assert sum(key in recent for key in range(10)) <= 4
    recent.discard_all([9])
    assert 9 not in recent and recent.isdisjoint([9, 100])
    nothing = RecentIds(capacity=0)
    nothing.add_all([1])
    assert 1 not in nothing


async def test_acknowledgements_are_counted_by_stream_and_status(analytics: Analytics) -> None:
    def counted(stream: str, status: str) -> float:
        return REGISTRY.get_sample_value("inkloop_analytics_events_total", {"stream": stream, "status": status}) or 0.0

    keys = [(stream, status) for stream in ("frontend", "backend") for status in ("accepted", "duplicate", "rejected")]
    before = {key: counted(*key) for key in keys}
    view = page_view(T0, "v1")
    invalid = page_view(T0, "")  # no visitor id
    await analytics.ingest([view, view, invalid], [backend(T0, pb.BACKEND_EVENT_TYPE_SUCCEEDED, "r1")], "")
    assert {key: counted(*key) - before[key] for key in keys} == {
        ("frontend", "accepted"): 1,
        ("frontend", "duplicate"): 1,
        ("frontend", "rejected"): 1,
        ("backend", "accepted"): 1,
        ("backend", "duplicate"): 0,
        ("backend", "rejected"): 0,
    }
