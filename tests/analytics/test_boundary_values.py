"""Every value the protos allow and validation lets through is stored exactly, on both engines.

A table of boundary values per column goes through ingest; each row is read back from its table and
compared with what was sent (exact equality, floats included), and the back-end rows also through a
query answer (compare_variants). Runs on embedded chDB and on the 18.16 server.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.matchers import TimeRange
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.validation import (
    BACKEND_LIMITS,
    FRONTEND_LIMITS,
    MAX_CUSTOM_VAR_CHARS,
    MAX_CUSTOM_VARS,
    MAX_PROMPT_HASH_CHARS,
    MAX_PROMPT_LENGTH,
)
from inkloop_analytics.variants import CompareVariantsQuery

from .builders import backend, page_view, timestamp
from .conftest import SettingsFactory
from .generator import NOW, T0

EMOJI = "😀"  # four bytes in UTF-8
LONGEST_EXCERPT = 1024  # the largest privacy_max_chars the settings take


def float32(value: float) -> float:
    """The float32 nearest `value`, as a Python float: what a protobuf float field holds."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


FLOAT32_MAX = float32(3.4028234663852886e38)
FLOAT32_TINY = float32(1.401298464324817e-45)  # the smallest subnormal

# Column -> the values it takes, row i taking values[i % len(values)]: every list has ROWS entries
# or a divisor of it, so each extreme is paired with the same others every time.
ROWS = 4
BACKEND_BOUNDARIES: dict[str, list[Any]] = {
    "seed": [0, 2**63 - 1, 2**63, 2**64 - 1],
    "width": [0, 2**32 - 1],
    "height": [2**32 - 1, 0],
    "steps": [0, 2**32 - 1],
    "num_images": [2**32 - 1, 0],
    "true_cfg_scale": [FLOAT32_TINY, -FLOAT32_MAX, FLOAT32_MAX, float32(4.1)],
    "latency_s": [0.0, 5e-324, sys.float_info.max, 0.1],
    "prompt_length": [0, MAX_PROMPT_LENGTH],
    "prompt_hash": ["", EMOJI * MAX_PROMPT_HASH_CHARS],
    "prompt_redacted": [EMOJI * LONGEST_EXCERPT, ""],
    "has_negative_prompt": [1, 0],
    # The longest strings validation lets through, of four-byte characters, and empty ones.
    **{name: [EMOJI * longest, "" if name != "tenant_id" else "t"] for name, longest in BACKEND_LIMITS},
}
# variant is the key of compare_variants: one value per row, so each answer is one row's latency.
BACKEND_BOUNDARIES["variant"] = [EMOJI * 64, "", "A", "中" * 64]
PROMPT_FIELDS = {"prompt_length": "length", "prompt_hash": "hash", "prompt_redacted": "redacted"}

FRONTEND_BOUNDARIES: dict[str, list[Any]] = {
    "value": [-(2**63), 2**63 - 1, 0, None],
    # DateTime holds 1970-01-01 00:00:00 to 2106-02-07 06:28:15; unset means "received now".
    "server_time": [datetime.fromtimestamp(0, UTC), datetime.fromtimestamp(2**32 - 1, UTC), None, T0],
    **{name: [EMOJI * longest, "x"] for name, longest in FRONTEND_LIMITS if name != "label"},
    # Labels longer than 16 characters are scrubbed to "excerpt#hash" (test_privacy); this one is kept.
    "label": [EMOJI * 16, ""],
}
CUSTOM_VARS = [
    {f"{number:02d}" + EMOJI * (MAX_CUSTOM_VAR_CHARS - 2): EMOJI * MAX_CUSTOM_VAR_CHARS for number in range(16)},
    {},
]


def row_values(boundaries: dict[str, list[Any]], row: int) -> dict[str, Any]:
    return {column: values[row % len(values)] for column, values in boundaries.items()}


def backend_event(row: int) -> pb.BackendEvent:
    values = row_values(BACKEND_BOUNDARIES, row)
    prompt = {PROMPT_FIELDS[column]: values.pop(column) for column in PROMPT_FIELDS}
    values["has_negative_prompt"] = bool(values["has_negative_prompt"])
    return backend(T0 + timedelta(seconds=row), pb.BACKEND_EVENT_TYPE_SUCCEEDED, prompt=prompt, **values)


def frontend_event(row: int) -> pb.FrontendEvent:
    values = row_values(FRONTEND_BOUNDARIES, row)
    server_time = values.pop("server_time")
    value = values.pop("value")
    optional = {"value": value} if value is not None else {}
    at, visitor = T0 + timedelta(seconds=row), values.pop("visitor_id")
    event = page_view(at, visitor, custom_vars=CUSTOM_VARS[row % 2], **values, **optional)
    if server_time is not None:
        event.server_time.CopyFrom(timestamp(server_time))
    return event


@pytest.fixture
async def service(clickhouse_url: str, make_settings: SettingsFactory) -> AsyncIterator[Analytics]:
    """As the `analytics` fixture, with the longest prompt excerpt the settings allow."""
    analytics = Analytics(make_settings(clickhouse_url, privacy_max_chars=LONGEST_EXCERPT), clock=lambda: NOW)
    await analytics.open()
    await analytics.connect()
    yield analytics
    await analytics.close()


def check_proto_round_trip(event: Any, boundaries: dict[str, list[Any]], row: int) -> None:
    """The test's own premise: the event carries each boundary value unchanged (no proto rounding)."""
    for column, value in row_values(boundaries, row).items():
        if column in PROMPT_FIELDS:
            assert getattr(event.prompt, PROMPT_FIELDS[column]) == value, column
        elif column not in ("server_time", "value", "has_negative_prompt"):
            assert getattr(event, column) == value, column


async def test_backend_boundary_values_are_stored_and_answered_exactly(
    service: Analytics, clickhouse: ClickHouse
) -> None:
    events = [backend_event(row) for row in range(ROWS)]
    for row, event in enumerate(events):
        check_proto_round_trip(event, BACKEND_BOUNDARIES, row)
    result = await service.ingest([], events, "boundaries")
    assert [ack.status for ack in result.backend] == ["accepted"] * ROWS, [ack.reason for ack in result.backend]
    assert not result.spooled and service.spool.empty()

    columns = list(BACKEND_BOUNDARIES)
    stored = clickhouse.query(f"SELECT toString(event_id), {', '.join(columns)} FROM backend_events")
    assert {row[0]: dict(zip(columns, row[1:], strict=True)) for row in stored} == {
        event.event_id: row_values(BACKEND_BOUNDARIES, row) for row, event in enumerate(events)
    }

    answer = await service.compare_variants(CompareVariantsQuery("t", TimeRange(T0, T0 + timedelta(hours=1))))
    expected = {
        values["variant"]: values["latency_s"]
        for values in map(row_values, [BACKEND_BOUNDARIES] * ROWS, range(ROWS))
        if values["tenant_id"] == "t"
    }
    assert len(expected) == ROWS // 2
    assert {stats.variant: (stats.successes, stats.latency_p50_s, stats.latency_p95_s) for stats in answer} == {
        variant: (1, latency, latency) for variant, latency in expected.items()
    }


async def test_frontend_boundary_values_are_stored_exactly(service: Analytics, clickhouse: ClickHouse) -> None:
    events = [frontend_event(row) for row in range(ROWS)]
    for row, event in enumerate(events):
        check_proto_round_trip(event, FRONTEND_BOUNDARIES, row)
        assert len(event.custom_vars) in (0, MAX_CUSTOM_VARS)
    result = await service.ingest(events, [], "boundaries")
    assert [ack.status for ack in result.frontend] == ["accepted"] * ROWS, [ack.reason for ack in result.frontend]
    assert not result.spooled and service.spool.empty()

    columns = list(FRONTEND_BOUNDARIES)
    stored = clickhouse.query(
        f"SELECT toString(event_id), {', '.join(columns)}, custom_var_names, custom_var_values FROM frontend_events"
    )
    expected = {}
    for row, event in enumerate(events):
        values = row_values(FRONTEND_BOUNDARIES, row)
        values["server_time"] = values["server_time"] or NOW
        expected[event.event_id] = (values, CUSTOM_VARS[row % 2])
    assert {
        row[0]: (dict(zip(columns, row[1:-2], strict=True)), dict(zip(row[-2], row[-1], strict=True))) for row in stored
    } == expected


@pytest.mark.parametrize("seconds", [-1, 2**32, 2**40, -(2**62)])
async def test_a_server_time_no_datetime_column_holds_is_rejected_naming_it(
    service: Analytics, clickhouse: ClickHouse, seconds: int
) -> None:
    event = page_view(T0, "v1")
    event.server_time.seconds = seconds
    good = page_view(T0, "v2")
    result = await service.ingest([event, good], [], "b")
    assert [(ack.status, ack.field) for ack in result.frontend] == [("rejected", "server_time"), ("accepted", "")]
    assert clickhouse.query("SELECT field FROM rejected_events WHERE event_id = %(id)s", {"id": event.event_id}) == [
        ("server_time",)
    ]
    assert clickhouse.query("SELECT toString(event_id) FROM frontend_events") == [(good.event_id,)]
