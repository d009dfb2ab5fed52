"""The ClickHouse side of traces, written once for both engines.

The embedded chdb engine (the default, under `REFLUX_HOME/clickhouse`) and a ClickHouse
server (`REFLUX_CLICKHOUSE_URL`) sit behind the same clickhouse-connect `Client`, so the
schema, inserts and queries below do not know which one they talk to. Only opening
differs: chdb runs inside this process and locks its directory, so only one process (the
trace sink) may own it; any other gets a ServiceError that says to query through the sink
(`reflection.sql`) instead of chdb's bare "Cannot lock file".

Redelivered events must not count twice. `traces` is a ReplacingMergeTree ordered by the
event key, so copies collapse when parts merge; until then `Warehouse.query` runs every
query with the `final` setting (FINAL on each table that supports it) and `readonly=1`,
so no caller can forget either; only a statement that reads nothing but the Critic's
derived tables, whose readers merge rows themselves (`rollup.MERGED_BY_READERS`), runs
without FINAL, at half the cost. Anyone reading the tables by other means adds FINAL.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel

from infra import ConfigError, ServiceError, Settings, check_applied, stack_home
from reflection import rollup
from reflection.events import LATER_FIELDS, TraceEvent

DATABASE = "reflux"
"""The database of the embedded engine, and of a server URL that names none."""
TABLE = "traces"

INSERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "String"),
    ("step_id", "String"),
    ("item", "Int64"),
    ("attempt", "Int64"),
    ("node", "LowCardinality(String)"),
    ("node_version", "LowCardinality(String)"),
    ("status", "LowCardinality(String)"),
    ("start", "DateTime64(3, 'UTC')"),
    ("end", "DateTime64(3, 'UTC')"),
    ("latency_ms", "Float64"),
    ("inputs_hash", "String"),
    ("metrics", "Map(LowCardinality(String), Float64)"),
    ("error", "Nullable(String)"),
    ("error_class", "LowCardinality(Nullable(String))"),
    ("retry_count", "Int64"),
    ("cache_hit", "Bool"),
    ("cost_tokens", "Nullable(Int64)"),
    ("context", "Map(LowCardinality(String), String)"),
    ("workflow_id", "LowCardinality(String)"),
    ("workflow_version", "Nullable(Int64)"),
    ("namespace", "LowCardinality(String)"),
    ("replica", "LowCardinality(String)"),
    ("labels", "Map(LowCardinality(String), String)"),
)
"""What `insert` sends, in the table's types (a test checks them against DESCRIBE, so a
migration that changes a column must change this too). `ingested_at` is the server's."""

READ_SETTINGS = {"readonly": 1, "final": 1}
MERGED_READ_SETTINGS = {"readonly": 1, "final": 0}
"""For a statement that reads only tables its readers merge (`_needs_final`)."""
REPLACING = frozenset({TABLE, "schema_version"})
"""The tables whose readers count on copies collapsed, so FINAL until parts merge
(`trace_retries` collapses them too, but its reader does not count on it)."""


@dataclass(frozen=True)
class Migration:
    """One forward-only schema step. ClickHouse DDL has no transactions, so each statement
    is idempotent (IF NOT EXISTS) and a step interrupted halfway simply runs again."""

    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()


SCHEMA = Path(__file__).with_name("schema")
"""The statements of applied migrations whose code has changed since, frozen as they ran."""


def frozen(name: str) -> tuple[str, ...]:
    """The statements of a frozen migration (`SCHEMA`), in the text its checksum was of."""
    return tuple((SCHEMA / name).read_text().split("\n;\n"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "traces",
        (
            """
            CREATE TABLE IF NOT EXISTS traces (
                run_id String,
                step_id String,
                item Int64,
                attempt Int64,
                node LowCardinality(String),
                node_version LowCardinality(String),
                status LowCardinality(String),
                start DateTime64(3, 'UTC'),
                `end` DateTime64(3, 'UTC'),
                latency_ms Float64,
                inputs_hash String,
                metrics Map(LowCardinality(String), Float64),
                error Nullable(String),
                error_class LowCardinality(Nullable(String)),
                retry_count Int64,
                cache_hit Bool,
                cost_tokens Nullable(Int64),
                context Map(LowCardinality(String), String),
                workflow_id LowCardinality(String),
                workflow_version Nullable(Int64),
                namespace LowCardinality(String),
                replica LowCardinality(String),
                ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
            )
            ENGINE = ReplacingMergeTree(ingested_at)
            PARTITION BY toYYYYMM(start)
            ORDER BY (run_id, step_id, item, attempt)
            """,
        ),
    ),
    Migration(
        2,
        "labels",
        (
            # Rows stored before read as an empty map (the type's default).
            """
            ALTER TABLE traces
                ADD COLUMN IF NOT EXISTS labels Map(LowCardinality(String), String) AFTER replica
            """,
        ),
    ),
    Migration(3, "trace minutes", frozen("0003_trace_minutes.sql")),
    Migration(4, "trace attributes", rollup.STATEMENTS),
)
LATER_COLUMNS: dict[str, Any] = {
    name: TraceEvent.model_fields[name].get_default(call_default_factory=True)
    for name in LATER_FIELDS
}
"""Columns a migration after the first added, and what an event without them stores: one
from a publisher older than the column (`insert` takes dicts as well as models)."""

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


class QueryResult(BaseModel):
    """Rows of a read-only query, as JSON values (datetimes in ISO 8601, decimals as
    strings), so a result is the same whether it came from ClickHouse or over NATS."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Warehouse:
    """A clickhouse-connect client on the trace database. Not async: the sink calls it
    from a worker thread."""

    def __init__(self, client: Client, database: str, where: str) -> None:
        self._client = client
        self.database = database
        self.where = where
        """Where the data lives, for messages (no credentials)."""

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
        """Create the database and apply every pending migration in order; return those
        this call applied. A schema newer than this code, or a changed applied migration,
        is refused rather than guessed at."""
        client = self._client
        db = _quote(self.database)
        self._run(client.command, f"CREATE DATABASE IF NOT EXISTS {db}", use_database=False)
        self._run(client.command, _VERSION_TABLE)
        found = self._run(client.query, "SELECT version, checksum FROM schema_version FINAL")
        applied = {int(version): checksum for version, checksum in found.result_rows}
        known = {m.version: (f"{m.version} ({m.name})", m.checksum) for m in migrations}
        check_applied("ClickHouse", known, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                self._run(client.command, statement)
            row = [migration.version, migration.name, migration.checksum]
            self._run(
                client.insert, "schema_version", [row], column_names=["version", "name", "checksum"]
            )
            done.append(migration)
        return done

    def insert(self, events: Sequence[TraceEvent | Mapping[str, Any]]) -> None:
        """Insert events (models, or dicts of their fields as `reflection.stream.decode`
        gives them) as one batch: column-oriented Native, no per-row parsing on the server,
        ~130k rows/s into chdb here."""
        if not events:
            return
        fields = [e if isinstance(e, Mapping) else e.__dict__ for e in events]
        columns = [
            [_milliseconds(f[name]) for f in fields]
            if name in ("start", "end")
            else [f.get(name, LATER_COLUMNS[name]) for f in fields]
            if name in LATER_COLUMNS
            else [f[name] for f in fields]
            for name, _ in INSERT_COLUMNS
        ]
        self._run(
            self._client.insert,
            TABLE,
            columns,
            column_names=[name for name, _ in INSERT_COLUMNS],
            column_type_names=[kind for _, kind in INSERT_COLUMNS],
            column_oriented=True,
        )

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        """Run one read-only statement (SELECT, WITH, SHOW, DESCRIBE); ClickHouse enforces
        `readonly` too. `{name:Type}` placeholders bind `parameters` on the server."""
        sql = read_only_statement(sql)
        values = dict(parameters or {})
        settings = READ_SETTINGS if _needs_final(sql, values) else MERGED_READ_SETTINGS
        result = self._run(self._client.query, sql, parameters=values, settings=settings)
        return QueryResult(
            columns=list(result.column_names),
            types=[kind.name for kind in result.column_types],
            rows=[
                [v if type(v) in _PLAIN else _jsonable(v) for v in row]
                for row in result.result_rows
            ],
        )

    def _use_database(self) -> None:
        self._client.database = self.database

    def _run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call(*args, **kwargs)` with ClickHouse's errors made one-line ServiceErrors."""
        try:
            return call(*args, **kwargs)
        except ClickHouseError as exc:
            raise ServiceError(f"ClickHouse ({self.where}): {one_line(exc)}") from None


def open_warehouse(settings: Settings) -> Warehouse:
    """The trace warehouse of these settings: a server when `clickhouse.url` is set, else
    the embedded engine under REFLUX_HOME (which then belongs to this process alone)."""
    url = settings.clickhouse.url
    if url is None:
        warehouse = _open_chdb(stack_home(settings) / "clickhouse")
    else:
        warehouse = _open_server(url)
    warehouse._use_database()
    return warehouse


def _open_chdb(path: Path) -> Warehouse:
    path.mkdir(parents=True, exist_ok=True)
    owner = _other_owner(path)
    if owner is not None:
        raise _owned(path, owner)
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}", tz_mode="schema")
    except ClickHouseError as exc:
        owner = _other_owner(path)
        if owner is not None:  # lost a race with another process opening it
            raise _owned(path, owner) from None
        raise ServiceError(
            f"cannot open the embedded ClickHouse at {path}: {one_line(exc)}"
        ) from None
    return Warehouse(client, DATABASE, str(path))


def _open_server(url: str) -> Warehouse:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"REFLUX_CLICKHOUSE_URL must be http(s)://[user:pass@]host:port[/database], got {url!r}"
        )
    database = parts.path.strip("/") or DATABASE
    where = urlunsplit((parts.scheme, parts.hostname + _port(parts.port), f"/{database}", "", ""))
    # The database may not exist before the first migrate: connect without it.
    dsn = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    try:
        client = clickhouse_connect.get_client(
            dsn=dsn, tz_mode="schema", autogenerate_session_id=False, connect_timeout=5
        )
    except ClickHouseError as exc:
        raise ServiceError(f"cannot reach ClickHouse at {where}: {one_line(exc)}") from None
    return Warehouse(client, database, where)


def _port(port: int | None) -> str:
    return f":{port}" if port else ""


def _other_owner(path: Path) -> int | None:
    """The PID of another live process holding this chdb directory, if any. chdb writes
    its PID into `status` and flocks it while the engine is open; a stale file after a
    crash names a dead process or is not locked, and then the directory is free."""
    status = path / "status"
    try:
        text = status.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"PID:\s*(\d+)", text)
    pid = int(match[1]) if match else None
    if pid == os.getpid():
        return None
    if pid is not None and not _alive(pid):
        return None
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return pid or -1
    finally:
        os.close(fd)  # also drops the probe's lock
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owned(path: Path, pid: int) -> ServiceError:
    who = f"process {pid}" if pid > 0 else "another process"
    return ServiceError(
        f"the embedded ClickHouse at {path} is owned by another process ({who}, the trace "
        "sink); query through it (reflection.sql) or set REFLUX_CLICKHOUSE_URL"
    )


def read_only_statement(sql: str) -> str:
    """`sql` without a trailing semicolon, if it is one SELECT, WITH, SHOW or DESCRIBE
    statement; else ServiceError. The first guard; ClickHouse's `readonly` is the second
    (it stops writes and file/url table functions), and INTO OUTFILE, which `readonly`
    lets through on chdb, is refused here."""
    code = _code_only(sql)
    end = len(code.rstrip().rstrip(";").rstrip())
    if ";" in code[:end]:
        raise ServiceError("one statement at a time: remove the ';' between statements")
    word = re.match(r"[\s(]*([A-Za-z]*)", code)
    verb = word[1].upper() if word else ""
    if not code[:end].strip():
        raise ServiceError("the query is empty")
    if verb not in _READ_VERBS:
        what = f"{verb} statements" if verb else "this"
        raise ServiceError(f"only SELECT, WITH, SHOW and DESCRIBE are allowed here, not {what}")
    if re.search(r"\bINTO\s+OUTFILE\b", code, re.IGNORECASE):
        raise ServiceError("INTO OUTFILE is not allowed: results come back to the caller")
    return sql[:end]


def _needs_final(sql: str, parameters: Mapping[str, Any] | None = None) -> bool:
    """Whether FINAL may change the answer of `sql`: unless it names a table its readers
    merge (`rollup.MERGED_BY_READERS`) and none that collapses copies (`REPLACING`).
    Names count anywhere in the text or its parameters (an `{t:Identifier}` may name a
    table), quoted or in a comment: a wrong guess costs time, not a count."""
    text = " ".join([sql, *(str(v) for v in (parameters or {}).values())])
    names = set(re.findall(r"\w+", text))
    return not names & rollup.MERGED_BY_READERS or bool(names & REPLACING)


_READ_VERBS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC"}
_QUOTES = "'\"`"


def _code_only(sql: str) -> str:
    """`sql`, same length, with comments blanked and quoted text replaced by `_`, so
    keywords and semicolons can be looked for without being fooled by either."""
    out = list(sql)
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in _QUOTES:
            j = i + 1
            while j < n and sql[j] != ch:
                j += 2 if sql[j] == "\\" else 1
            j = min(j, n - 1)
            out[i : j + 1] = "_" * (j + 1 - i)
            i = j + 1
        elif sql.startswith("--", i) or ch == "#":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = " " * (j - i)
            i = j
        else:
            i += 1
    return "".join(out)


def one_line(exc: BaseException) -> str:
    """A ClickHouse error as one line: the server's message without the client's wrapping,
    the version trailer or a stack trace."""
    text = " ".join(str(exc).split())
    text = text.split("server response: ", 1)[-1]
    text = re.sub(r"\s*\(for url [^)]*\)", "", text)
    text = re.sub(r"\s*\(version [^)]*\)", "", text)
    text = re.sub(r"^.*?(Code: \d+\. DB::Exception: )+", "", text)
    text = re.sub(r"(\(\w+\))\. \1$", r"\1", text)  # chdb repeats the error name
    return text.split(" Stack trace:", 1)[0].strip()[:500]


def _quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _utc(value: datetime) -> datetime:
    """Naive datetimes in a TraceEvent, and from bare DateTime columns, mean UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _milliseconds(value: datetime) -> int:
    """DateTime64(3) ticks, computed here: half the cost of the client's conversion."""
    return (_utc(value) - _EPOCH) // _MILLISECOND


_PLAIN = frozenset({bool, int, float, str, type(None)})
"""Types a result value keeps as it is: checked inline before a call (a sample of 2,000
latencies is 2,000 calls otherwise)."""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return _utc(value).isoformat() if value.tzinfo is None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [v if type(v) in _PLAIN else _jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)  # UUID, IP addresses, …
