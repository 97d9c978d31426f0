"""ClickHouse access for analytics: one small interface over a ClickHouse server and embedded chDB.

    ch = connect("clickhouse://user:secret@clickhouse:9000/analytics")   # production, native protocol
    ch = connect("chdb:///var/lib/inkloop/analytics?database=analytics")  # all-in-one dev mode, on disk
    ch.execute("CREATE TABLE IF NOT EXISTS t (ts DateTime('UTC'), name String) ENGINE = MergeTree ORDER BY ts")
    ch.insert("t", ["ts", "name"], [(datetime.now(UTC), "render")])
    ch.query("SELECT count() FROM t WHERE name = %(name)s", {"name": "render"})   # -> [(1,)]

Both engines get identical SQL: parameters use pyformat `%(name)s` and are substituted on the client
with clickhouse-driver's own escaping, because ClickHouse 18.16 (Debian's server) has no server-side
`{name:Type}` parameters. With params given, a literal `%` in the SQL must be written `%%`.

Datetimes are bound and inserted as UTC; declare columns `DateTime('UTC')` so that they mean the
same on any server time zone. Results have the Python types clickhouse-driver returns, on both
engines: DateTime('UTC') columns come back as aware datetimes, plain DateTime as naive ones.

A server connection may name a cluster (`connect(url, cluster="inkloop")`): the database then lives
on every node of that cluster, and the connection asks for the settings such a database needs
(CLUSTER_SETTINGS); which tables are Distributed and which are stored is the migrations' business
(tables.local_table). chDB is one process: it cannot be a cluster.

Connection trouble (refused, reset, timeout, chDB path held by another process) raises
`inkloop.errors.Unavailable`, so callers can spool and retry; SQL the engine rejects raises
`QueryError`, and values a column cannot hold (out of its range, of another type, not UTF-8) raise
its subclass `DataError` on both engines alike: such rows never go in, however often retried.
Both engines take exactly what the column holds: chDB gets Arrow arrays of the table's own column
types (pyarrow refuses what does not fit, where ClickHouse would wrap, clamp or default it), the
server gets what clickhouse-driver checks the same way.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import struct
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from ipaddress import ip_address
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import clickhouse_driver
from clickhouse_driver import errors as driver_errors
from clickhouse_driver.util.escape import escape_params

from inkloop.errors import Unavailable

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Params = Mapping[str, Any]

# Server error codes that mean "up, but cannot take this now": spooling and retrying is right.
RETRYABLE_ERROR_CODES = frozenset(
    {
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        252,  # TOO_MANY_PARTS: inserts come faster than merges
        # On a cluster: a shard, a replica or ZooKeeper is down or unreachable.
        225,  # NO_ZOOKEEPER
        242,  # TABLE_IS_READ_ONLY: a replicated table whose ZooKeeper session is lost
        279,  # ALL_CONNECTION_TRIES_FAILED: no replica of a shard answers
        319,  # UNKNOWN_STATUS_OF_INSERT: the connection to ZooKeeper broke while an insert committed
        999,  # KEEPER_EXCEPTION: ZooKeeper refused or timed out an operation
    }
)

# UNFINISHED: a replicated ALTER is recorded in ZooKeeper and applied where the replicas answered;
# a replica that is down applies it when it is back (18.16 waited replication_alter_columns_timeout).
ALTER_LEFT_TO_REPLICATION = 341

# Where each shard's replicas are, in the cluster's order: by the names the cluster's config gives
# (in Kubernetes the operator's stable per-replica Service names; an address could be a pod's old IP).
CLUSTER_NODES = (
    "SELECT shard_num, host_name, port FROM system.clusters WHERE cluster = %(cluster)s ORDER BY shard_num, replica_num"
)

# Asked of every statement on a cluster connection (unless its URL sets them otherwise).
CLUSTER_SETTINGS = {
    # An insert into a Distributed table returns once every shard's part is written on one of its
    # replicas, instead of once it is queued on the receiving node's disk to be sent on later: only
    # then is an acknowledged event stored, and a shard that is down fails the insert (so ingest
    # spools it) instead of leaving it in a queue the service cannot see.
    "insert_distributed_sync": 1,
    # An IN or JOIN subquery over a Distributed table, inside a query over a Distributed table, runs
    # once on the node asked and its result is sent to every shard (as GLOBAL IN / GLOBAL JOIN):
    # exact however the rows are sharded. The default refuses such queries.
    "distributed_product_mode": "global",
    # Each shard's replicas in the cluster's order, for inserts and reads alike (the node asked
    # first for its own shard): a query sees what this connection's last acknowledged insert wrote,
    # instead of reading a replica still fetching it. A replica that is down is passed over.
    "load_balancing": "in_order",
}

# Server error codes that mean "these values cannot go into this column": the rows are at fault, not
# the engine's state, so retrying the same rows can never succeed. Anything else about a statement
# (unknown table, memory, a code not listed) is the engine's state and may pass later.
DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH: what clickhouse-driver raises for a value its column type cannot pack
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
    }
)
TYPE_MISMATCH = 53

# What converting a Python value for a column raises when the value does not fit: ArrowInvalid and
# ArrowTypeError are a ValueError and a TypeError, UnicodeEncodeError (a lone surrogate) a ValueError.
CONVERSION_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, struct.error)

# A DDL per feature, tried once on a scratch table rather than inferred from the version: 18.16,
# for one, has LowCardinality, but only behind an experimental setting.
FEATURE_PROBES = {
    "ttl": "CREATE TABLE {table} (ts DateTime) ENGINE = MergeTree ORDER BY ts TTL ts + INTERVAL 1 DAY",
    "low_cardinality": "CREATE TABLE {table} (name LowCardinality(String)) ENGINE = MergeTree ORDER BY name",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# How both engines' messages name the column at fault: clickhouse-driver "Column seed: …" or
# 'for column "seed"', ClickHouse "while converting column `seed` …", this module "column 'seed': …".
_COLUMN_AT_FAULT = re.compile(r"column [`'\"]?(\w+)", re.IGNORECASE)

# The characters clickhouse-driver's escape_params escapes in a string literal.
_NEEDS_ESCAPING = re.compile(r"[\\'\0\a\b\t\n\v\f\r]")

# `INSERT INTO t [(columns)] VALUES (…)` / `FORMAT …` carry their data in the SQL text. Over the
# native protocol 18.16 ignores that data and waits for data blocks that never come: the call hangs.
_INLINE_DATA_INSERT = re.compile(r"\s*INSERT\s+INTO\s+[\w.`\"]+\s*(\([^)]*\))?\s*(VALUES|FORMAT)\b", re.IGNORECASE)


class QueryError(Exception):
    """ClickHouse rejected the statement or its data (bad SQL, unknown table, type mismatch)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ClickHouse error {code}: {message}")
        self.code = code
        self.message = message


class DataError(QueryError):
    """The engine refused values of the rows (out of the column's range, wrong type, not UTF-8).
    Retrying the same rows can never succeed; other rows may. `column` is "" where unnamed."""

    def __init__(self, code: int, message: str, column: str = "") -> None:
        super().__init__(code, message)
        match = _COLUMN_AT_FAULT.search(message)
        self.column = column or (match.group(1) if match else "")


class ClickHouse(ABC):
    """A connection to one database of a ClickHouse engine. Safe to share between threads."""

    def __init__(self, database: str, lock: threading.Lock, cluster: str = "") -> None:
        self._database = database
        self._lock = lock
        self._cluster = cluster
        self._version: tuple[int, ...] | None = None
        self._features: dict[str, bool] = {}

    @property
    def database(self) -> str:
        return self._database

    @property
    def cluster(self) -> str:
        """The cluster the database lives on ("" for a single node)."""
        return self._cluster

    @property
    @abstractmethod
    def exclusive(self) -> bool:
        """Whether this process is the only one that can reach the database (chDB holds its path)."""

    def execute(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT … SELECT, OPTIMIZE)."""
        bound = bind(sql, params)
        with self._lock:
            self._execute(bound)

    def execute_on_each_shard(self, sql: str) -> None:
        """Run `sql` on one replica of every shard of the cluster (on a single node: here), for what a
        shard's replicas replicate among themselves: the ALTER of a Replicated table.

        Not `ON CLUSTER`, which runs such an ALTER through every replica's DDL worker: on 18.16 two
        replicas of a shard then race to mark it executed, and the loser's DDL worker thread ends
        ("Unexpected ZooKeeper error: Node exists … /executed … Terminating", seen in CI), after which
        that node runs no ON CLUSTER statement until it restarts."""
        self.execute(sql)

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        bound = bind(sql, params)
        with self._lock:
            return self._query(bound)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk insert in the engine's fastest way; each row holds one value per column, in order."""
        if not columns:
            raise ValueError("insert needs at least one column")
        for position, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"row {position} has {len(row)} values for {len(columns)} columns")
        if not rows:
            return
        statement = f"INSERT INTO {quote_identifier(table)} ({', '.join(map(quote_identifier, columns))})"
        with self._lock:
            self._insert(table, statement, columns, rows)

    def version(self) -> tuple[int, ...]:
        """The engine's version, e.g. (18, 16, 1) for Debian's server."""
        if self._version is None:
            [(text,)] = self.query("SELECT version()")
            self._version = tuple(int(part) for part in text.split("."))
        return self._version

    def supports(self, feature: str) -> bool:
        """Whether the engine accepts `feature` (one of FEATURE_PROBES), found by trying it once."""
        if feature not in FEATURE_PROBES:
            raise ValueError(f"unknown feature {feature!r}; known: {', '.join(sorted(FEATURE_PROBES))}")
        if feature not in self._features:
            self._features[feature] = self._accepts(FEATURE_PROBES[feature])
        return self._features[feature]

    def ping(self) -> None:
        """Returns when the engine answers; raises Unavailable when it cannot be reached."""
        self.query("SELECT 1")

    @abstractmethod
    def another_connection(self) -> ClickHouse:
        """A second connection to the same database, for calls that must not queue behind this one's
        (a lookup behind a long insert); or this very connection where a second would not run
        alongside it anyway (chDB). Close it only when it is another object."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accepts(self, ddl: str) -> bool:
        table = f"_inkloop_probe_{uuid.uuid4().hex[:12]}"
        try:
            self.execute(ddl.format(table=table))
        except QueryError:
            return False  # a failed CREATE leaves no table behind
        self.execute(f"DROP TABLE {table}")
        return True

    @abstractmethod
    def _execute(self, sql: str) -> None: ...

    @abstractmethod
    def _query(self, sql: str) -> list[Row]: ...

    @abstractmethod
    def _insert(self, table: str, statement: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...


def connect(url: str, cluster: str = "") -> ClickHouse:
    """`clickhouse://[user[:password]@]host[:port]/db[?driver options]` or `chdb://PATH[?database=db]`.

    Driver options are clickhouse-driver's URL options (connect_timeout, send_receive_timeout,
    compression, alt_hosts for other nodes to fail over to, …). PATH is a directory:
    `chdb:///abs/path` or `chdb://relative/path`; the database must exist (default: `default`).
    `cluster` names the server's cluster (its `remote_servers` entry) the database lives on.

    Server connections are lazy: a server that is down makes the first call raise Unavailable, and
    calls succeed again once it is back.
    """
    if url.startswith(("clickhouse://", "clickhouses://")):
        return ServerClickHouse(url, cluster)
    if cluster:
        raise ValueError(f"a cluster ({cluster!r}) needs a clickhouse:// server URL, not {url!r}")
    if url.startswith("chdb://"):
        path, _, query = url.removeprefix("chdb://").partition("?")
        options = dict(parse_qsl(query))
        database = options.pop("database", "default")
        if options:
            raise ValueError(f"unknown chdb:// options {sorted(options)} in {url!r}; only database= is known")
        return EmbeddedClickHouse(path, database)
    raise ValueError(f"unsupported ClickHouse URL {url!r}: use clickhouse://… or chdb://PATH")


def bind(sql: str, params: Params | None) -> str:
    """Substitute pyformat parameters the way clickhouse-driver does, with datetimes rendered in UTC."""
    if _INLINE_DATA_INSERT.match(sql):
        raise ValueError(
            "INSERT … VALUES/FORMAT with the data in the SQL hangs on ClickHouse 18.16: "
            "use insert(), or INSERT … SELECT %(value)s, … for a few bound values"
        )
    if params is None:
        return sql
    quoted = {name: _quoted(value) for name, value in params.items() if _is_uuid_list(value) or _is_plain_text(value)}
    others = {name: _plain(value) for name, value in params.items() if name not in quoted}
    return sql % (escape_params(others, _UTC_CONTEXT) | quoted)


def _quoted(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else _uuid_list(value)


def _is_plain_text(value: Any) -> bool:
    """A string with nothing to escape: quoting it as it is gives what escape_params would, without
    its Python loop over every character (which costs milliseconds for a long list of ids)."""
    return isinstance(value, str) and _NEEDS_ESCAPING.search(value) is None


def _is_uuid_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(item, uuid.UUID) for item in value)


def _uuid_list(values: Sequence[uuid.UUID]) -> str:
    """What escape_params makes of a tuple of UUIDs, in one join (UUID text is hex digits and hyphens only)."""
    opening, closing = ("(", ")") if isinstance(values, tuple) else ("[", "]")
    return opening + ", ".join([f"'{item}'" for item in values]) + closing


def quote_identifier(name: str) -> str:
    """`db.table` or `column` in backquotes, after checking it is a plain identifier."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise ValueError(f"not a plain identifier: {name!r}")
    return ".".join(f"`{part}`" for part in parts)


def _plain(value: Any) -> Any:
    # 18.16 has no true/false literals.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def _epoch_seconds(values: tuple[Any, ...]) -> list[Any]:
    """A column with its aware datetimes as Unix seconds; other columns (naive datetimes too) unchanged."""
    first = next((value for value in values if value is not None), None)
    if not isinstance(first, datetime) or first.tzinfo is None:
        return list(values)
    # Converted once per distinct value: a batch's times repeat (to the second, and inserted_at is one).
    seconds = {
        value: int(value.timestamp()) if isinstance(value, datetime) and value.tzinfo is not None else value
        for value in set(values)
    }
    return list(map(seconds.__getitem__, values))


def _unencodable_column(columns: Sequence[str], data: Sequence[Sequence[Any]]) -> str:
    """The first column holding a string UTF-8 cannot encode (the one error the driver leaves unnamed)."""
    for name, values in zip(columns, data, strict=True):
        for value in values:
            if isinstance(value, str) and not _encodable(value):
                return name
    return ""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _UtcServerInfo:
    @staticmethod
    def get_timezone() -> str:
        return "UTC"


class _UtcContext:
    """What escape_params reads from a driver connection: only the time zone datetimes go to."""

    server_info = _UtcServerInfo()


_UTC_CONTEXT = _UtcContext()


def _error_for(code: int, message: str) -> Exception:
    if code in RETRYABLE_ERROR_CODES:
        return Unavailable(f"ClickHouse cannot take this now (error {code}): {message}")
    if code in DATA_ERROR_CODES:
        return DataError(code, message)
    return QueryError(code, message)


def _url_of_node(url: str, host: str, port: int) -> str:
    """`url` pointed at another node of its cluster: the same user, database and options, but no
    fail-over hosts (the statement is for this node)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = urlencode([(key, value) for key, value in parse_qsl(parts.query) if key != "alt_hosts"])
    return urlunsplit(parts._replace(netloc=f"{user}@{address}" if user else address, query=options))


class ServerClickHouse(ClickHouse):
    """A ClickHouse server over the native protocol (clickhouse-driver), reconnecting as needed."""

    def __init__(self, url: str, cluster: str = "") -> None:
        self._url = url
        self._client = clickhouse_driver.Client.from_url(url)
        if cluster:
            quote_identifier(cluster)  # it is written into DDL
            self._client.settings = {**CLUSTER_SETTINGS, **self._client.settings}  # the URL's own win
        host, port = self._client.connection.hosts[0]
        self._address = f"{host}:{port}"
        # clickhouse-driver's Client is not thread-safe: one lock per connection.
        super().__init__(self._client.connection.database, threading.Lock(), cluster)

    @property
    def exclusive(self) -> bool:
        return False

    def another_connection(self) -> ServerClickHouse:
        return ServerClickHouse(self._url, self.cluster)

    def execute_on_each_shard(self, sql: str) -> None:
        if not self.cluster:
            super().execute_on_each_shard(sql)
            return
        nodes = self.query(CLUSTER_NODES, {"cluster": self.cluster})
        if not nodes:
            raise QueryError(0, f"the server at {self._address} knows no cluster {self.cluster!r}")
        for shard, replicas in itertools.groupby(nodes, key=lambda node: node[0]):
            self._execute_on_one_of(shard, [(host, port) for _, host, port in replicas], sql)

    def _execute_on_one_of(self, shard: int, addresses: list[tuple[str, int]], sql: str) -> None:
        """`sql` on the first of a shard's replicas that takes it (a replica down is passed over)."""
        failures = []
        for host, port in addresses:
            node = ServerClickHouse(_url_of_node(self._url, host, port), self.cluster)
            try:
                node.execute(sql)
                return
            except Unavailable as error:
                failures.append(str(error))
            except QueryError as error:
                if error.code != ALTER_LEFT_TO_REPLICATION:
                    raise
                log.warning("shard %s: %s", shard, error.message.partition(". Stack trace")[0])
                return
            finally:
                node.close()
        raise Unavailable(f"no replica of shard {shard} of {self.cluster!r} took it: {'; '.join(failures)}")

    def close(self) -> None:
        """Drops the connection (a later call would open a new one)."""
        with self._lock:
            self._client.disconnect()

    def _execute(self, sql: str) -> None:
        with self._translated_errors():
            self._client.execute(sql)

    def _query(self, sql: str) -> list[Row]:
        with self._translated_errors():
            rows: list[Row] = self._client.execute(sql)
            return rows

    def _insert(self, table: str, statement: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        # Column by column: the driver sends columns anyway, and aware datetimes become epoch seconds
        # here (what the driver would compute) at a fraction of its per-value time zone conversion.
        data = [_epoch_seconds(values) for values in zip(*rows, strict=True)]
        with self._translated_errors():
            try:
                self._client.execute(f"{statement} VALUES", data, columnar=True)
            except CONVERSION_ERRORS as error:  # the driver wraps most as TypeMismatchError, not these
                column = _unencodable_column(columns, data) if isinstance(error, UnicodeEncodeError) else ""
                raise DataError(TYPE_MISMATCH, f"{type(error).__name__}: {error}", column) from error

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (driver_errors.NetworkError, driver_errors.SocketTimeoutError, EOFError, OSError) as error:
            # The driver reconnects on the next call; drop the half-read socket now.
            self._client.disconnect()
            raise Unavailable(f"ClickHouse at {self._address} is unavailable: {error}") from error
        except driver_errors.Error as error:
            raise _error_for(getattr(error, "code", None) or 0, getattr(error, "message", str(error))) from error


# chDB hosts one engine per process, bound to one path: opening another path fails while any
# session is open (the `chdb_url` test fixture is that one path in tests). chDB 4.4 says sessions
# are thread-safe, but earlier releases were not, and a session serves nothing else while a
# streaming insert is open; so every chDB call in the process takes this one lock. Each query
# still runs on all cores inside the engine.
_CHDB_LOCK = threading.Lock()

# Asked for on every chDB session: a JSON result that converts losslessly, and UTC like the server.
_CHDB_SESSION_SETTINGS = (
    "session_timezone=UTC"
    "&output_format_json_quote_64bit_integers=0"
    "&output_format_json_quote_denormals=1"
    "&output_format_json_quote_decimals=1"
    "&output_format_json_named_tuples_as_objects=0"
)

_CHDB_ERROR_CODE = re.compile(r"Code: (\d+)\.")

COLUMN_TYPES = "SELECT name, type FROM system.columns WHERE database = %(database)s AND table = %(table)s"
# (database, table) -> column name -> type, for every chDB connection of the process (one engine),
# guarded by _CHDB_LOCK and cleared by any statement that could change a table.
_CHDB_COLUMN_TYPES: dict[tuple[str, str], dict[str, str]] = {}


class EmbeddedClickHouse(ClickHouse):
    """chDB in this process, persisting under `path`. Meant for the all-in-one dev mode and tests."""

    def __init__(self, path: str, database: str = "default") -> None:
        super().__init__(database, _CHDB_LOCK)
        from chdb.session import Session  # chDB is the optional `embedded` extra: import on use.

        with self._lock:
            try:
                self._session: Any = Session(f"{path}?{_CHDB_SESSION_SETTINGS}")
            except RuntimeError as error:
                if "already initialized with path" in str(error):
                    raise RuntimeError(f"chDB serves one path per process: {error}") from error
                raise Unavailable(f"chDB at {path} cannot be opened (held by another process?): {error}") from error
        self.execute(f"USE {quote_identifier(database)}")

    @property
    def exclusive(self) -> bool:
        return True

    def another_connection(self) -> EmbeddedClickHouse:
        # Every chDB call in the process takes _CHDB_LOCK: a second session would overlap nothing.
        return self

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _query(self, sql: str) -> list[Row]:
        output = self._run(sql, "JSONCompact").bytes()
        if not output:
            return []
        result = json.loads(output.decode("utf-8", errors="replace"))
        converters = [_converter(column["type"]) for column in result["meta"]]
        return [tuple(convert(value) for convert, value in zip(converters, row, strict=True)) for row in result["data"]]

    def _execute(self, sql: str) -> None:
        # Any statement may change a table (DDL, or a DROP DATABASE test clean-up): read types again.
        _CHDB_COLUMN_TYPES.clear()
        self._run(sql, "Null")

    def _insert(self, table: str, statement: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        payload = _arrow_stream(columns, rows, self._column_types(table))
        with self._translated_errors(), self._open_session().send_insert(statement, "ArrowStream") as stream:
            stream.append(payload)
            stream.finish()

    def _column_types(self, table: str) -> Mapping[str, str]:
        """Column name -> ClickHouse type of `table` ([db.]name), read once; empty if no such table."""
        database, _, name = table.rpartition(".")
        key = (database or self._database, name)
        if key not in _CHDB_COLUMN_TYPES:
            sql = bind(COLUMN_TYPES, {"database": key[0], "table": key[1]})
            types: dict[str, str] = dict(self._query(sql))
            if not types:
                return types  # the insert fails on the missing table; a table made later is read then
            _CHDB_COLUMN_TYPES[key] = types
        return _CHDB_COLUMN_TYPES[key]

    def _run(self, sql: str, output_format: str) -> Any:
        with self._translated_errors():
            return self._open_session().query(sql, output_format)

    def _open_session(self) -> Any:
        if self._session is None:
            raise RuntimeError("this chDB connection is closed")
        return self._session

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as error:  # chdb's ChdbError is a RuntimeError
            match = _CHDB_ERROR_CODE.search(str(error))
            if match is None:
                raise
            raise _error_for(int(match.group(1)), str(error)) from error


def _arrow_stream(columns: Sequence[str], rows: Sequence[Sequence[Any]], types: Mapping[str, str]) -> memoryview:
    """Rows as one Arrow IPC stream: pyarrow converts whole columns in C, far faster than text formats.
    Each column is built as its ClickHouse type (`types`), so a value it cannot hold raises DataError."""
    import pyarrow as pa  # comes with chdb

    by_column = zip(columns, zip(*rows, strict=True), strict=True)
    arrays = [_arrow_column(name, types.get(name), values) for name, values in by_column]
    table = pa.Table.from_arrays(arrays, names=list(columns))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


def _arrow_column(name: str, type_name: str | None, values: tuple[Any, ...]) -> Any:
    """One column's values as an Arrow array of its ClickHouse type (inferred where the type is unknown)."""
    try:
        array = _to_arrow(type_name, values)
    except CONVERSION_ERRORS as error:  # pyarrow's ArrowInvalid / ArrowTypeError among them
        raise DataError(TYPE_MISMATCH, f"column {name!r} of type {type_name}: {error}", name) from error
    if array.null_count and type_name is not None and not _nullable(type_name):
        # ClickHouse would store the type's default (0, ""), where the driver refuses the None.
        raise DataError(TYPE_MISMATCH, f"column {name!r} of type {type_name} cannot hold NULL", name)
    return array


def _to_arrow(type_name: str | None, values: tuple[Any, ...]) -> Any:
    import pyarrow as pa

    base = _without_wrappers(type_name) if type_name else None
    if base == "UUID" or (base is None and isinstance(_first_value(values), uuid.UUID)):
        storage = pa.array([None if value is None else value.bytes for value in values], pa.binary(16))
        return pa.ExtensionArray.from_storage(pa.uuid(), storage)
    if base is not None and base.partition("(")[0] == "DateTime":
        # DateTime is seconds in UInt32: as that, out-of-range times fail here instead of being clamped.
        # Naive datetimes count as UTC, as they do on the server path.
        stamps = pa.array(values, pa.timestamp("s", tz="UTC"))
        return stamps.cast(pa.int64()).cast(pa.uint32())
    arrow_type = _arrow_type(base) if base is not None else None
    try:
        return pa.array(values, arrow_type)
    except pa.ArrowTypeError:
        if not any(isinstance(value, bool) for value in values):
            raise
        # UInt8 is 18.16's boolean and the driver takes True/False there; pyarrow wants integers.
        return pa.array([int(value) if isinstance(value, bool) else value for value in values], arrow_type)


def _nullable(type_name: str) -> bool:
    return type_name.removeprefix("LowCardinality(").startswith("Nullable(")


def _first_value(values: tuple[Any, ...]) -> Any:
    return next((value for value in values if value is not None), None)


def _without_wrappers(type_name: str) -> str:
    """`Nullable(LowCardinality(String))` -> `String`: what the values must be."""
    while type_name.startswith(("Nullable(", "LowCardinality(")):
        type_name = type_name.partition("(")[2][:-1]
    return type_name


@cache
def _arrow_type(type_name: str) -> Any:
    """The Arrow type exactly holding `type_name`'s values (wrappers removed), or None to infer it."""
    import pyarrow as pa

    scalars = {
        "Int8": pa.int8(),
        "Int16": pa.int16(),
        "Int32": pa.int32(),
        "Int64": pa.int64(),
        "UInt8": pa.uint8(),
        "UInt16": pa.uint16(),
        "UInt32": pa.uint32(),
        "UInt64": pa.uint64(),
        "Float32": pa.float32(),
        "Float64": pa.float64(),
        "String": pa.string(),
        "Bool": pa.bool_(),
        "Date": pa.date32(),
    }
    if type_name.startswith("Array("):
        element = _arrow_type(_without_wrappers(type_name.removeprefix("Array(")[:-1]))
        return None if element is None else pa.list_(element)
    return scalars.get(type_name)


@cache
def _converter(type_name: str) -> Callable[[Any], Any]:
    """How to turn one JSONCompact value of `type_name` into what clickhouse-driver would return."""
    outer, _, inner = type_name.partition("(")
    arguments = _split_arguments(inner[:-1]) if inner else []
    if outer == "Nullable":
        convert = _converter(arguments[0])
        return lambda value: None if value is None else convert(value)
    if outer == "LowCardinality":
        return _converter(arguments[0])
    if outer == "Array":
        convert = _converter(arguments[0])
        return lambda value: [convert(item) for item in value]
    if outer == "Tuple":
        element_converters = [_converter(_without_name(argument)) for argument in arguments]
        return lambda value: tuple(convert(item) for convert, item in zip(element_converters, value, strict=True))
    if outer == "Map":
        convert_key, convert_value = _converter(arguments[0]), _converter(arguments[1])
        return lambda value: {convert_key(key): convert_value(item) for key, item in value.items()}
    if outer.startswith(("Int", "UInt")):
        return int
    if outer == "Float32":
        # JSON prints a Float32 in its shortest decimal ("0.1"): back to the float32 it is, which is
        # what clickhouse-driver returns.
        return _float32
    if outer.startswith("Float"):
        return float  # also reads the quoted "nan" and "inf"
    if outer.startswith("Decimal"):
        return Decimal
    if outer in ("Date", "Date32"):
        return date.fromisoformat
    if outer in ("DateTime", "DateTime64"):
        zone_arguments = [argument for argument in arguments if argument.startswith("'")]
        zone = ZoneInfo(zone_arguments[0].strip("'")) if zone_arguments else None
        return lambda value: _parse_datetime(value, zone)
    if outer == "UUID":
        return uuid.UUID
    if outer in ("IPv4", "IPv6"):
        return ip_address
    if outer == "Bool":
        return bool
    return lambda value: value  # String, FixedString, Enum: already right


def _float32(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        return number
    return float(_FLOAT32.unpack(_FLOAT32.pack(number))[0])


_FLOAT32 = struct.Struct("<f")


def _parse_datetime(text: str, zone: ZoneInfo | None) -> datetime:
    whole, _, fraction = text.partition(".")
    parsed = datetime.fromisoformat(whole).replace(microsecond=int(fraction[:6].ljust(6, "0")) if fraction else 0)
    return parsed.replace(tzinfo=zone) if zone is not None else parsed


def _split_arguments(text: str) -> list[str]:
    """`String, Array(Tuple(a Int8, b String)), 'UTC'` into its top-level comma-separated parts."""
    parts, depth, quoted, start = [], 0, False, 0
    for position, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(text[start:position].strip())
            start = position + 1
    parts.append(text[start:].strip())
    return parts


def _without_name(element: str) -> str:
    """`a String` in a named Tuple is the type `String`; `Array(String)` stays as it is."""
    name, space, rest = element.partition(" ")
    return rest if space and "(" not in name else element
