"""storage.connect: every value type round-trips, parameters are inert, outages raise Unavailable.

Runs on embedded chDB and on the 18.16 server through the parametrized `clickhouse` fixture.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from clickhouse_driver.util.escape import escape_params

from harness.clickhouse import EVERY_ENGINE, ClickHouseServer
from inkloop.errors import Unavailable
from inkloop_analytics.storage import (
    _UTC_CONTEXT,
    ClickHouse,
    DataError,
    QueryError,
    bind,
    connect,
    quote_identifier,
)

CLICKHOUSE_ENGINES = EVERY_ENGINE

CREATE_SAMPLES = """
CREATE TABLE samples (
    id UInt32,
    text String,
    maybe_text Nullable(String),
    count Int64,
    maybe_count Nullable(Int64),
    ratio Float64,
    at DateTime('UTC'),
    day Date,
    uid UUID,
    tags Array(String)
) ENGINE = MergeTree ORDER BY id
"""
COLUMNS = ["id", "text", "maybe_text", "count", "maybe_count", "ratio", "at", "day", "uid", "tags"]

TRICKY_TEXTS = [
    "plain",
    "",
    "it's",
    'double "quotes"',
    "back\\slash at the end\\",
    "\\'",
    "new\nline\ttab\rreturn",
    "中文的提示词：一只猫在月球上",
    "emoji 🖼️ and nul \0 byte",
    "x'; DROP TABLE samples; --",
    "%(id)s and 100% literal",
]
AT = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)


def sample_rows() -> list[tuple[Any, ...]]:
    """One row per tricky text, cycling the other values through their edge cases."""
    counts = [0, -1, 2**63 - 1, -(2**63)]
    times = [AT, AT.replace(tzinfo=None), AT.astimezone(timezone(timedelta(hours=8)))]
    tag_lists: list[list[str]] = [[], ["a"], ["it's", "中文", "new\nline", "\\"]]
    return [
        (
            number,
            text,
            None if number % 2 else text,
            counts[number % 4],
            None if number % 3 == 0 else counts[number % 4],
            [0.0, -1.5, 1e300, 0.1][number % 4],
            times[number % 3],
            date(2024, 2, 29) - timedelta(days=number),
            uuid.UUID(int=number * 7919),
            tag_lists[number % 3],
        )
        for number, text in enumerate(TRICKY_TEXTS)
    ]


def as_stored(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a row reads back as: DateTime('UTC') is an aware UTC datetime whatever went in."""
    at = row[6] if row[6].tzinfo else row[6].replace(tzinfo=UTC)
    return (*row[:6], at.astimezone(UTC), *row[7:])


def read_samples(ch: ClickHouse) -> list[tuple[Any, ...]]:
    return ch.query(f"SELECT {', '.join(COLUMNS)} FROM samples ORDER BY id")


def test_insert_round_trips_every_value_type(clickhouse: ClickHouse) -> None:
    clickhouse.execute(CREATE_SAMPLES)
    clickhouse.insert("samples", COLUMNS, sample_rows())
    assert read_samples(clickhouse) == [as_stored(row) for row in sample_rows()]


CREATE_EXTREMES = """
CREATE TABLE extremes (
    id UInt8,
    u64 UInt64,
    i64 Int64,
    u32 UInt32,
    f32 Float32,
    f64 Float64,
    at DateTime('UTC'),
    maybe Nullable(UInt64),
    flag UInt8,
    text String
) ENGINE = MergeTree ORDER BY id
"""
EXTREME_COLUMNS = ["id", "u64", "i64", "u32", "f32", "f64", "at", "maybe", "flag", "text"]


def float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


EXTREME_ROWS = [
    (0, 0, -(2**63), 0, float32(1.401298464324817e-45), 5e-324, datetime.fromtimestamp(0, UTC), None, False, ""),
    (
        1,
        2**64 - 1,
        2**63 - 1,
        2**32 - 1,
        float32(3.4e38),
        sys.float_info.max,
        datetime.fromtimestamp(2**32 - 1, UTC),
        2**64 - 1,
        True,
        "🖼️😀 four-byte UTF-8 " * 500,
    ),
    (2, 2**63, -1, 1, float32(0.1), -sys.float_info.max, AT, 2**63, 1, "中\0\n"),
]


def test_integer_float_time_and_text_extremes_round_trip_exactly(clickhouse: ClickHouse) -> None:
    clickhouse.execute(CREATE_EXTREMES)
    clickhouse.insert("extremes", EXTREME_COLUMNS, EXTREME_ROWS)
    assert clickhouse.query(f"SELECT {', '.join(EXTREME_COLUMNS)} FROM extremes ORDER BY id") == EXTREME_ROWS


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("u64", -1),
        ("u64", 2**64),
        ("i64", 2**63),
        ("u32", 2**32),
        ("u32", -1),
        ("u32", None),
        ("at", datetime(2200, 1, 1, tzinfo=UTC)),
        ("at", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("text", "lone surrogate \ud800"),
    ],
)
def test_a_value_its_column_cannot_hold_is_a_data_error_naming_the_column(
    clickhouse: ClickHouse, column: str, value: Any
) -> None:
    """Both engines refuse it the same way (never wrapped, clamped or defaulted), and store nothing of the batch."""
    clickhouse.execute(CREATE_EXTREMES)
    bad = list(EXTREME_ROWS[1])
    bad[EXTREME_COLUMNS.index(column)] = value
    with pytest.raises(DataError) as refused:
        clickhouse.insert("extremes", EXTREME_COLUMNS, [EXTREME_ROWS[0], tuple(bad)])
    assert refused.value.column == column, refused.value
    assert clickhouse.query("SELECT count() FROM extremes") == [(0,)]
    clickhouse.insert("extremes", EXTREME_COLUMNS, EXTREME_ROWS)  # the connection still works
    assert clickhouse.query("SELECT count() FROM extremes") == [(len(EXTREME_ROWS),)]


def test_params_round_trip_every_value_type(clickhouse: ClickHouse) -> None:
    clickhouse.execute(CREATE_SAMPLES)
    placeholders = ", ".join(f"%({column})s" for column in COLUMNS)
    for row in sample_rows():
        clickhouse.execute(
            f"INSERT INTO samples ({', '.join(COLUMNS)}) SELECT {placeholders}", dict(zip(COLUMNS, row, strict=True))
        )
    assert read_samples(clickhouse) == [as_stored(row) for row in sample_rows()]


def test_params_filter_on_every_value_type(clickhouse: ClickHouse) -> None:
    clickhouse.execute(CREATE_SAMPLES)
    rows = sample_rows()
    clickhouse.insert("samples", COLUMNS, rows)
    for row in rows:
        number = row[0]
        assert clickhouse.query("SELECT id FROM samples WHERE text = %(text)s", {"text": row[1]}) == [(number,)]
        assert clickhouse.query("SELECT id FROM samples WHERE uid = %(uid)s", {"uid": row[8]}) == [(number,)]
        assert clickhouse.query("SELECT id FROM samples WHERE day = %(day)s", {"day": row[7]}) == [(number,)]
    assert clickhouse.query("SELECT count() FROM samples WHERE at = %(at)s", {"at": AT}) == [(len(rows),)]
    assert clickhouse.query("SELECT id FROM samples WHERE has(tags, %(tag)s) ORDER BY id", {"tag": "中文"}) == [
        (2,),
        (5,),
        (8,),
    ]
    assert clickhouse.query(
        "SELECT id FROM samples WHERE text IN %(texts)s ORDER BY id", {"texts": ("it's", "\\'")}
    ) == [(2,), (5,)]
    assert clickhouse.query("SELECT id FROM samples WHERE maybe_count IS NULL ORDER BY id") == [(0,), (3,), (6,), (9,)]


def test_injection_in_params_is_stored_literally(clickhouse: ClickHouse) -> None:
    clickhouse.execute("CREATE TABLE notes (body String) ENGINE = MergeTree ORDER BY body")
    attacks = ["x'; DROP TABLE notes; --", "\\'; DROP TABLE notes; --", "') , ('injected"]
    for attack in attacks:
        clickhouse.execute("INSERT INTO notes (body) SELECT %(body)s", {"body": attack})
    assert sorted(clickhouse.query("SELECT body FROM notes")) == sorted((attack,) for attack in attacks)


def test_both_engines_get_identical_sql() -> None:
    sql = bind(
        "SELECT %(text)s, %(at)s, %(tags)s, %(flag)s, %(nothing)s, 100%%",
        {
            "text": "it's\n",
            "at": AT.astimezone(timezone(timedelta(hours=8))),
            "tags": ["a'"],
            "flag": True,
            "nothing": None,
        },
    )
    assert sql == "SELECT 'it\\'s\\n', '2024-02-29 23:59:58', ['a\\''], 1, NULL, 100%"
    assert bind("SELECT 'a%'", None) == "SELECT 'a%'"


def test_strings_with_nothing_to_escape_bind_as_the_driver_would_bind_them() -> None:
    texts = [*TRICKY_TEXTS, "a,b,c", "%", "\x7f\x01 del", "tab\there", "bell\a", "x" * 100_000]
    for text in texts:
        assert bind("%(text)s", {"text": text}) == escape_params({"text": text}, _UTC_CONTEXT)["text"], text


def test_another_connection_reads_the_same_database(clickhouse: ClickHouse) -> None:
    clickhouse.execute("CREATE TABLE seen (id UInt32) ENGINE = MergeTree ORDER BY id")
    clickhouse.insert("seen", ["id"], [(1,), (2,)])
    other = clickhouse.another_connection()
    try:
        assert other.database == clickhouse.database
        assert other.query("SELECT count() FROM seen") == [(2,)]
    finally:
        if other is not clickhouse:
            other.close()
    assert clickhouse.query("SELECT count() FROM seen") == [(2,)]


def test_insert_with_inline_data_is_refused_because_18_16_would_hang() -> None:
    for sql in ["INSERT INTO t VALUES (1)", "insert into db.t (a, b) values (%(a)s, 2)", "INSERT INTO `t` FORMAT TSV"]:
        with pytest.raises(ValueError, match="hangs"):
            bind(sql, {"a": 1})
    assert bind("INSERT INTO t (a) SELECT %(a)s", {"a": "VALUES (1)"}) == "INSERT INTO t (a) SELECT 'VALUES (1)'"


def test_identifiers_are_checked_not_escaped() -> None:
    assert quote_identifier("analytics.events") == "`analytics`.`events`"
    for bad in ["events; DROP TABLE x", "a`b", "", "a.b.c", "1abc"]:
        with pytest.raises(ValueError, match="identifier"):
            quote_identifier(bad)


def test_bad_sql_raises_query_error(clickhouse: ClickHouse) -> None:
    with pytest.raises(QueryError) as syntax:
        clickhouse.query("SELEC 1")
    assert syntax.value.code == 62  # SYNTAX_ERROR on both engines
    with pytest.raises(QueryError) as missing:
        clickhouse.query("SELECT * FROM no_such_table")
    assert missing.value.code == 60  # UNKNOWN_TABLE
    # The store's state, not the values: never a reason to set rows aside.
    assert not isinstance(syntax.value, DataError) and not isinstance(missing.value, DataError)


def test_insert_checks_row_width(clickhouse: ClickHouse) -> None:
    with pytest.raises(ValueError, match="row 1 has 1 values for 2 columns"):
        clickhouse.insert("anything", ["a", "b"], [(1, 2), (3,)])


def test_features_are_detected_and_leave_nothing_behind(clickhouse: ClickHouse) -> None:
    is_server_18_16 = clickhouse.version()[:2] == (18, 16)
    assert clickhouse.supports("ttl") is not is_server_18_16
    assert clickhouse.supports("low_cardinality") is not is_server_18_16
    assert clickhouse.query("SELECT name FROM system.tables WHERE database = currentDatabase()") == []
    with pytest.raises(ValueError, match="unknown feature"):
        clickhouse.supports("time_travel")


def test_one_connection_serves_many_threads(clickhouse: ClickHouse) -> None:
    def square(number: int) -> int:
        [(result,)] = clickhouse.query("SELECT %(n)s * %(n)s", {"n": number})
        return int(result)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(square, range(200))) == [number * number for number in range(200)]


def test_200k_row_insert(clickhouse: ClickHouse, request: pytest.FixtureRequest) -> None:
    clickhouse.execute("""
        CREATE TABLE events (at DateTime('UTC'), name String, user_id String, event_id UUID, value Float64)
        ENGINE = MergeTree ORDER BY (name, at)""")
    start = AT.replace(tzinfo=None)
    rows = [
        (
            start + timedelta(seconds=number),
            f"event_{number % 20}",
            f"user_{number % 5000}",
            uuid.UUID(int=number),
            number / 7,
        )
        for number in range(200_000)
    ]
    began = time.perf_counter()
    clickhouse.insert("events", ["at", "name", "user_id", "event_id", "value"], rows)
    elapsed = time.perf_counter() - began
    engine = request.node.callspec.params["clickhouse"]
    print(f"\n{engine}: inserted {len(rows):,} rows in {elapsed:.2f} s = {len(rows) / elapsed:,.0f} rows/s")
    assert clickhouse.query("SELECT count(), uniqExact(user_id) FROM events") == [(200_000, 5000)]


def test_stopped_server_raises_unavailable_until_it_is_back() -> None:
    with ClickHouseServer() as server:
        ch = connect(server.url)
        ch.execute("CREATE TABLE spooled (n UInt32) ENGINE = MergeTree ORDER BY n")
        server.stop()
        for call in (
            lambda: ch.query("SELECT 1"),
            lambda: ch.execute("SELECT 1"),
            ch.ping,
            lambda: ch.insert("spooled", ["n"], [(1,)]),
        ):
            with pytest.raises(Unavailable):
                call()
        server.start()
        ch.insert("spooled", ["n"], [(1,)])
        assert ch.query("SELECT count() FROM spooled") == [(1,)]
        ch.close()


def test_server_url_that_refuses_connections_raises_unavailable() -> None:
    with ClickHouseServer() as server:
        url = server.url
    with pytest.raises(Unavailable, match="unavailable"):
        connect(url).query("SELECT 1")


def test_chdb_path_held_by_another_process_raises_unavailable(chdb_url: str) -> None:
    # This process holds the path (the chdb_url fixture keeps it open); a second process cannot.
    script = (
        "from inkloop.errors import Unavailable\n"
        "from inkloop_analytics.storage import connect\n"
        "try:\n"
        f"    connect({chdb_url!r})\n"
        "except Unavailable as error:\n"
        "    print('Unavailable:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("Unavailable:"), result.stderr


def test_unknown_url_is_rejected() -> None:
    for url in ["postgres://localhost/db", "chdb:///tmp/x?datbase=typo"]:
        with pytest.raises(ValueError):
            connect(url)
