"""Ingest on both engines: per-event acks, rejections with reasons, duplicates counted once."""

from __future__ import annotations

from datetime import timedelta

from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse

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
