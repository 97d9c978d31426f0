"""The length limits validation checks inline (for speed) are exactly FRONTEND_LIMITS / BACKEND_LIMITS:
a field at its limit is accepted, one character more is rejected naming that field. And the batch
functions ingest uses (column by column) give exactly what the one-event functions give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.batch_validation import backend_rows, frontend_rows, id_list_text, parse_event_ids
from inkloop_analytics.validation import (
    BACKEND_LIMITS,
    FRONTEND_LIMITS,
    Limits,
    Rejection,
    backend_row,
    frontend_row,
    parse_event_id,
)

from .builders import backend, new_id, page_view, timestamp, track

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = PrivacyPolicy(salt="test-salt")


@pytest.mark.parametrize(("field", "limit"), FRONTEND_LIMITS)
def test_frontend_length_limit(field: str, limit: int) -> None:
    for length, accepted in ((limit, True), (limit + 1, False)):
        fields = {"category": "generate", "action": "click", field: "x" * length}
        event = track(NOW, "v1", **fields)
        row = frontend_row(event, uuid.UUID(event.event_id), NOW, Limits(), POLICY)
        assert (not isinstance(row, Rejection)) == accepted, (field, length, row)
        if not accepted:
            assert isinstance(row, Rejection) and row.field == field


@pytest.mark.parametrize(("field", "limit"), BACKEND_LIMITS)
def test_backend_length_limit(field: str, limit: int) -> None:
    for length, accepted in ((limit, True), (limit + 1, False)):
        fields = {"request_id": "r1", "job_id": "j1", field: "x" * length}
        event = backend(NOW, pb.BACKEND_EVENT_TYPE_REQUESTED, **fields)
        row = backend_row(event, uuid.UUID(event.event_id), NOW, Limits(), POLICY)
        assert (not isinstance(row, Rejection)) == accepted, (field, length, row)
        if not accepted:
            assert isinstance(row, Rejection) and row.field == field


def _one_by_one(events: list, row_of) -> list:
    results = []
    for event in events:
        parsed = parse_event_id(event.event_id)
        results.append(parsed if isinstance(parsed, Rejection) else row_of(event, parsed, NOW, Limits(), POLICY))
    return results


def test_frontend_batch_gives_what_one_event_at_a_time_gives() -> None:
    """frontend_rows (column by column) == frontend_row for each event, valid or not, in order."""
    at = NOW - timedelta(hours=1)
    events = [
        track(at, "v1", "generate", "click", label="style:anime", value=3, referrer="https://r.test/?email=a@b.co"),
        page_view(at, "v2", event_id=new_id().upper()),
        page_view(at, "v2", event_id="{" + new_id() + "}"),
        page_view(at, "v3", event_id="not-a-uuid"),
        page_view(at, "v3", event_id=""),
        page_view(at, "v4", tenant_id=""),
        page_view(at, ""),
        page_view(at, "v5", type=pb.FRONTEND_EVENT_TYPE_UNSPECIFIED),
        page_view(at, "v5", type=42),
        track(at, "v6", "generate", ""),
        page_view(NOW + timedelta(days=2), "v7"),
        page_view(NOW - timedelta(days=400), "v7"),
        page_view(at, "v8", screen="x" * 33),
        page_view(at, "v9", custom_vars={"plan": "pro", "seats": "3"}),
        page_view(at, "v9", custom_vars={"k": "x" * 257}),
        page_view(at, "v10", label="一只猫在月球上散步，背景是地球 with a long prompt-like label"),
        page_view(at, "v11", server_time=timestamp(at + timedelta(seconds=2))),
        page_view(at, "v11", server_time=timestamp(datetime.fromtimestamp(2**32 - 1, UTC))),
        page_view(at, "v11", server_time=timestamp(datetime.fromtimestamp(2**32, UTC))),  # past DateTime
        page_view(at, "v11", server_time=timestamp(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC))),
    ]
    events.append(pb.FrontendEvent(event_id=new_id(), tenant_id="t1", visitor_id="v12", type=1))  # no client_time
    batch = frontend_rows(events, parse_event_ids([event.event_id for event in events]), NOW, Limits(), POLICY)
    assert batch == _one_by_one(events, frontend_row)
    assert sum(not isinstance(result, Rejection) for result in batch) == 7
    assert [result.field for result in batch[-3:-1] if isinstance(result, Rejection)] == ["server_time"] * 2


def test_backend_batch_gives_what_one_event_at_a_time_gives() -> None:
    at = NOW - timedelta(hours=1)
    requested = pb.BACKEND_EVENT_TYPE_REQUESTED
    unknown_kind = backend(at, requested, "r8")
    unknown_kind.kind = 99  # type: ignore[assignment]  # a generation kind this version does not know
    events = [
        backend(at, requested, "r1", prompt={"redacted": "call 13800138000", "hash": "ab" * 32, "length": 12}),
        backend(at, requested, "r2", event_id=new_id().replace("-", "")),
        backend(at, requested, "r3", event_id="x" * 36),
        backend(at, requested, "r4", tenant_id=""),
        backend(at, pb.BACKEND_EVENT_TYPE_UNSPECIFIED, "r5"),
        backend(NOW + timedelta(days=2), requested, "r6"),
        backend(at, requested, "r7", job_id="j" * 129),
        unknown_kind,
        backend(at, requested, "r9", latency_s=-1.0),
        backend(at, requested, "r10", latency_s=float("inf")),
        backend(at, requested, "r11", true_cfg_scale=float("nan")),
        backend(at, requested, "r12", prompt={"language": 17}),
        backend(at, requested, "r13", prompt={"hash": "h" * 129}),
        backend(at, requested, "r14", prompt={"length": 1_000_001}),
        backend(at, requested, "r15", has_negative_prompt=True, error_code="E1", policy="p"),
    ]
    events.append(pb.BackendEvent(event_id=new_id(), tenant_id="t1", type=requested))  # no time
    batch = backend_rows(events, parse_event_ids([event.event_id for event in events]), NOW, Limits(), POLICY)
    assert batch == _one_by_one(events, backend_row)
    assert sum(not isinstance(result, Rejection) for result in batch) == 3


@pytest.mark.parametrize(
    "texts",
    [
        [],
        [str(uuid.uuid4()) for _ in range(3)],
        [str(uuid.uuid4()).upper(), str(uuid.uuid4())],
        [str(uuid.uuid4()), str(uuid.uuid4())[:-1] + " "],  # whitespace bytes.fromhex would skip
        [str(uuid.uuid4()), "0x" + str(uuid.uuid4())[2:]],
        [str(uuid.uuid4()), "a" * 8 + "-" + "b" * 4 + "-" + "c" * 4 + "-" + "d" * 4 + "-" + "g" * 12],
        [uuid.uuid4().hex, "urn:uuid:" + str(uuid.uuid4()), ""],
        [str(uuid.uuid4())[:-2] + "_1"],  # int(…, 16) takes underscores between digits
    ],
)
def test_parse_event_ids_matches_parse_event_id(texts: list[str]) -> None:
    parsed = parse_event_ids(texts)
    assert parsed == [parse_event_id(text) for text in texts]
    ids = [event_id for event_id in parsed if isinstance(event_id, uuid.UUID)]
    sent = [text for text, event_id in zip(texts, parsed, strict=True) if isinstance(event_id, uuid.UUID)]
    assert id_list_text(sent, ids) == ",".join(str(event_id) for event_id in ids)


def test_event_times_no_datetime_column_holds_are_rejected_even_within_the_age_limit() -> None:
    """With a max age reaching before 1970 (a setting allows it), a 1969 time is still rejected."""
    limits = Limits(max_age_s=100 * 365 * 86_400)
    before_1970 = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
    front = [page_view(before_1970, "v1"), page_view(datetime.fromtimestamp(0, UTC), "v1")]
    requested = pb.BACKEND_EVENT_TYPE_REQUESTED
    back = [backend(before_1970, requested, "r1"), backend(NOW, requested, "r2")]
    for events, rows_of, row_of, field in (
        (front, frontend_rows, frontend_row, "client_time"),
        (back, backend_rows, backend_row, "time"),
    ):
        batch = rows_of(events, parse_event_ids([event.event_id for event in events]), NOW, limits, POLICY)
        one_by_one = [row_of(event, uuid.UUID(event.event_id), NOW, limits, POLICY) for event in events]
        assert batch == one_by_one
        assert isinstance(batch[0], Rejection) and batch[0].field == field and "store" in batch[0].reason
        assert not isinstance(batch[1], Rejection)
