"""A row the store refuses for its values (a poison record) never blocks the rows behind it.

It goes to rejected_events with the column and the reason, is counted in
inkloop_analytics_poison_records_total and logged once; every other row is stored. Errors that are
not about the values (a missing table here, an outage in test_spool) keep the pause-and-retry.
Runs on embedded chDB and on the 18.16 server, through the spool replay and the live writer.

Validation keeps poison out of ingest, so these tests put the rows in the spool or hand them to the
writer directly, as a version with weaker validation or a bug would have: a front-end row whose
server_time lies past 2106 (exactly what the previous validation let through) and a back-end row
with seed -1 (no protobuf carries it: it stands for any value a faulty writer put in a row).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from inkloop.prompts import PrivacyPolicy
from inkloop.spool import Spool
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.service import Analytics
from inkloop_analytics.spooled_rows import encode
from inkloop_analytics.storage import ClickHouse
from inkloop_analytics.tables import BACKEND_COLUMNS, FRONTEND_COLUMNS, Row, Rows
from inkloop_analytics.validation import Limits, backend_row, frontend_row

from .builders import backend, page_view
from .conftest import SettingsFactory
from .generator import NOW, T0

POLICY = PrivacyPolicy(salt="test-salt")
PAST_DATETIME = datetime(2200, 1, 1, tzinfo=UTC)  # DateTime ends at 2106-02-07 06:28:15


def good_frontend() -> Row:
    event = page_view(T0, "v1")
    row = frontend_row(event, uuid.UUID(event.event_id), NOW, Limits(), POLICY)
    assert isinstance(row, tuple)
    return row


def good_backend() -> Row:
    event = backend(T0, pb.BACKEND_EVENT_TYPE_SUCCEEDED, "r1")
    row = backend_row(event, uuid.UUID(event.event_id), NOW, Limits(), POLICY)
    assert isinstance(row, tuple)
    return row


def with_value(row: Row, columns: tuple[str, ...], column: str, value: object) -> Row:
    position = columns.index(column)
    return (*row[:position], value, *row[position + 1 :])


def poison_frontend() -> Row:
    return with_value(good_frontend(), FRONTEND_COLUMNS, "server_time", PAST_DATETIME)


def poison_backend() -> Row:
    return with_value(good_backend(), BACKEND_COLUMNS, "seed", -1)


def ids(rows: list[Row]) -> set[str]:
    return {str(row[0]) for row in rows}


def poison_count(table: str) -> float:
    return REGISTRY.get_sample_value("inkloop_analytics_poison_records_total", {"table": table}) or 0.0


async def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still not true after {timeout_s} s")


def stored_ids(ch: ClickHouse, table: str) -> set[str]:
    return {event_id for (event_id,) in ch.query(f"SELECT toString(event_id) FROM {table}")}


def check_dead_lettered(ch: ClickHouse, poison: dict[str, tuple[str, str]]) -> None:
    """`poison` is event id -> (stream, column): each is in rejected_events once, naming its column."""
    rejected = ch.query("SELECT event_id, stream, field, reason FROM rejected_events")
    assert {event_id: (stream, field) for event_id, stream, field, _ in rejected} == poison
    assert len(rejected) == len(poison)
    for _, _, field, reason in rejected:
        assert field in reason, reason  # the engine's own words, naming the column


def warnings_about(caplog: pytest.LogCaptureFixture, event_id: str) -> int:
    return sum(event_id in record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)


async def test_a_poison_record_in_the_middle_of_a_spooled_batch_is_dead_lettered_and_the_rest_replayed(
    clickhouse: ClickHouse, clickhouse_url: str, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bad_front, bad_back = poison_frontend(), poison_backend()
    records = [
        Rows(frontend=[good_frontend()], backend=[good_backend()]),
        Rows(frontend=[good_frontend(), bad_front, good_frontend()], backend=[good_backend(), bad_back]),
        Rows(frontend=[good_frontend()], backend=[good_backend()]),
    ]
    settings = make_settings(clickhouse_url)
    spool = Spool(settings.resolved_spool_dir(), name="analytics-rows", max_bytes=settings.spool_max_bytes)
    spool.append_many([encode(record) for record in records])
    spool.close()
    counted = poison_count("frontend_events"), poison_count("backend_events")

    service = Analytics(settings, clock=lambda: NOW)
    await service.open()
    await service.connect()
    try:
        await wait_until(service.spool.empty)
        later = page_view(T0, "v-later")  # what the issue saw never arrive
        result = await service.ingest([later], [], "later")
        assert result.count("accepted") == 1 and not result.spooled
    finally:
        await service.close()

    all_front = [row for record in records for row in record.frontend]
    all_back = [row for record in records for row in record.backend]
    assert stored_ids(clickhouse, "frontend_events") == ids(all_front) - ids([bad_front]) | {later.event_id}
    assert stored_ids(clickhouse, "backend_events") == ids(all_back) - ids([bad_back])
    check_dead_lettered(
        clickhouse, {str(bad_front[0]): ("frontend", "server_time"), str(bad_back[0]): ("backend", "seed")}
    )
    assert (poison_count("frontend_events"), poison_count("backend_events")) == (counted[0] + 1, counted[1] + 1)
    assert warnings_about(caplog, str(bad_front[0])) == 1 and warnings_about(caplog, str(bad_back[0])) == 1


async def test_a_poison_row_in_a_live_batch_is_dead_lettered_and_the_rest_stored(
    analytics: Analytics, clickhouse: ClickHouse, caplog: pytest.LogCaptureFixture
) -> None:
    bad_front, bad_back = poison_frontend(), poison_backend()
    front = [good_frontend() for _ in range(5)]
    front.insert(2, bad_front)
    back = [bad_back, good_backend(), good_backend()]
    counted = poison_count("frontend_events"), poison_count("backend_events")

    spooled = await analytics.writer.write(Rows(frontend=front, backend=back))

    assert spooled is False and analytics.spool.empty()
    assert stored_ids(clickhouse, "frontend_events") == ids(front) - ids([bad_front])
    assert stored_ids(clickhouse, "backend_events") == ids(back) - ids([bad_back])
    check_dead_lettered(
        clickhouse, {str(bad_front[0]): ("frontend", "server_time"), str(bad_back[0]): ("backend", "seed")}
    )
    assert (poison_count("frontend_events"), poison_count("backend_events")) == (counted[0] + 1, counted[1] + 1)
    assert warnings_about(caplog, str(bad_front[0])) == 1 and warnings_about(caplog, str(bad_back[0])) == 1


async def test_an_error_not_about_the_values_pauses_the_replay_and_dead_letters_nothing(
    analytics: Analytics, clickhouse: ClickHouse
) -> None:
    """A missing table refuses every row alike: that is the store's state, not the rows' fault."""
    rows = [good_backend(), good_backend()]
    clickhouse.execute("RENAME TABLE backend_events TO backend_events_away")
    try:
        assert await analytics.writer.write(Rows(backend=rows)) is True  # refused, so spooled
        await asyncio.sleep(analytics.settings.retry_interval_s * 5)  # several replay attempts
        assert not analytics.spool.empty()
    finally:
        clickhouse.execute("RENAME TABLE backend_events_away TO backend_events")
    await wait_until(analytics.spool.empty)
    assert stored_ids(clickhouse, "backend_events") == ids(rows)
    assert clickhouse.query("SELECT count() FROM rejected_events") == [(0,)]
