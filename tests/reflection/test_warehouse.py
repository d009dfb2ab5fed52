"""The trace warehouse on both engines: embedded chdb, and a ClickHouse server over HTTP
(the chdb engine behind `tests.helpers.clickhouse_http`, since no server installs here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest

from infra.errors import ConfigError, ServiceError
from infra.ports import free_port
from infra.settings import ClickHouseSettings, Settings
from reflection.events import TraceEvent
from reflection.warehouse import (
    INSERT_COLUMNS,
    MIGRATIONS,
    Migration,
    Warehouse,
    _needs_final,
    open_warehouse,
)
from tests.helpers.clickhouse_http import REPO, clickhouse_http_server

T0 = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with clickhouse_http_server(tmp_path_factory.mktemp("clickhouse-http")) as url:
        yield url


@pytest.fixture(params=["chdb", "http"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of an empty warehouse: a new chdb dir, or a new database on the server."""
    if request.param == "chdb":
        return Settings(home=tmp_path, clickhouse=ClickHouseSettings(url=None))
    server = request.getfixturevalue("http_server")
    url = f"{server}/t_{uuid.uuid4().hex[:12]}"
    return Settings(home=tmp_path, clickhouse=ClickHouseSettings(url=url))


@pytest.fixture
def warehouse(settings: Settings) -> Iterator[Warehouse]:
    with open_warehouse(settings) as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def raw(settings: Settings, warehouse: Warehouse) -> Iterator[clickhouse_connect.driver.Client]:
    """A plain clickhouse-connect client on the same data, to look under the dedupe path."""
    if settings.clickhouse.url is None:
        client = clickhouse_connect.get_client(dsn=f"chdb://{Path(warehouse.where)}")
    else:
        client = clickhouse_connect.get_client(dsn=settings.clickhouse.url)
    client.database = warehouse.database
    yield client
    client.close()


def event(run_id: str, step: str = "fetch", **fields) -> TraceEvent:
    defaults = dict(
        node="http.request",
        node_version="1.2.3",
        status="ok",
        start=T0,
        end=T0 + timedelta(milliseconds=42),
        latency_ms=42.0,
    )
    return TraceEvent(run_id=run_id, step_id=step, **{**defaults, **fields})


def test_migrate_from_empty_then_again(settings: Settings):
    with open_warehouse(settings) as warehouse:
        assert [m.version for m in warehouse.migrate()] == [m.version for m in MIGRATIONS]
        assert warehouse.migrate() == []
        versions = warehouse.query("SELECT version, name FROM schema_version ORDER BY version")
        assert versions.rows == [[m.version, m.name] for m in MIGRATIONS]
        described = warehouse.query("DESCRIBE TABLE traces").rows
        assert [(row[0], row[1]) for row in described] == [
            *INSERT_COLUMNS,
            ("ingested_at", "DateTime64(3, 'UTC')"),
        ]
        table = warehouse.query(
            "SELECT engine_full FROM system.tables "
            "WHERE database = {db:String} AND name = 'traces'",
            {"db": warehouse.database},
        ).rows[0][0]
        assert "ReplacingMergeTree(ingested_at)" in table
        assert "ORDER BY (run_id, step_id, item, attempt)" in table
    with open_warehouse(settings) as again:  # a restarted sink finds the schema in place
        assert again.migrate() == []


def test_refuses_a_schema_it_does_not_know(warehouse: Warehouse):
    later = Migration(
        len(MIGRATIONS) + 1,
        "later",
        ("CREATE TABLE IF NOT EXISTS later (x UInt8) ENGINE = Memory",),
    )
    assert warehouse.migrate([*MIGRATIONS, later]) == [later]
    with pytest.raises(ConfigError, match="newer than this Reflux"):
        warehouse.migrate()
    changed = Migration(1, "traces", ("SELECT 1",))
    with pytest.raises(ConfigError, match="changed after it was applied"):
        warehouse.migrate([changed, *MIGRATIONS[1:], later])


def test_every_field_round_trips(warehouse: Warehouse):
    run = f"run-{uuid.uuid4()}"
    full = event(
        run,
        "notify",
        item=3,
        attempt=2,
        status="error",
        inputs_hash="ab" * 32,
        metrics={"http.bytes": 1234.0, "ttfb_ms": 12.5},
        error="connection reset — retrying",
        error_class="HttpConnectError",
        retry_count=1,
        cache_hit=True,
        cost_tokens=1_500,
        context={"trigger": "cron", "ünïcode": "✓"},
        labels={"experiment": "try1", "shadow": "true"},
        workflow_id="order-enrichment",
        workflow_version=7,
        namespace="demo",
        replica="nodes-http-1@host",
    )
    sparse = event(run, "skipped", status="skipped", start=T0.replace(tzinfo=None), end=T0)
    warehouse.insert([full, sparse])
    result = warehouse.query(
        "SELECT * EXCEPT ingested_at FROM traces WHERE run_id = {run:String} ORDER BY step_id",
        {"run": run},
    )
    stored = [TraceEvent.model_validate(record) for record in result.records()]
    assert stored == [full, sparse.model_copy(update={"start": T0})]  # naive means UTC
    assert result.types[result.columns.index("start")] == "DateTime64(3, 'UTC')"


def test_a_redelivered_event_counts_once(warehouse: Warehouse, raw):
    raw.command("SYSTEM STOP MERGES traces")  # keep the copies apart: only queries dedupe
    run = f"run-{uuid.uuid4()}"
    events = [event(run, f"s{i}", attempt=1 + i % 2) for i in range(10)]
    failed = events[0].model_copy(update={"status": "error"})
    warehouse.insert([failed, *events[1:]])
    warehouse.insert(events)  # the whole batch again, as after a sink crash
    warehouse.insert([events[3], events[3], events[4]])  # duplicates inside one batch

    physical = raw.query("SELECT count() FROM traces WHERE run_id = {r:String}", {"r": run})
    assert physical.result_rows[0][0] >= 20  # each insert's copy stays until a merge
    count = warehouse.query(
        "SELECT count(), uniqExact(step_id, attempt) FROM traces WHERE run_id = {r:String}",
        {"r": run},
    )
    assert count.rows == [[10, 10]]
    by_status = warehouse.query(
        "SELECT status, count() FROM traces WHERE run_id = {r:String} GROUP BY status",
        {"r": run},
    )
    assert by_status.rows == [["ok", 10]]  # the later copy replaced the earlier one
    in_subquery = warehouse.query(
        "SELECT count() FROM (SELECT step_id FROM traces WHERE run_id = {r:String})", {"r": run}
    )
    assert in_subquery.rows == [[10]]


def test_the_rollup_reads_without_final_and_the_same_answer(warehouse: Warehouse, raw):
    raw.command("SYSTEM STOP MERGES")  # every insert's rows stay apart: FINAL would merge them
    run = f"run-{uuid.uuid4()}"
    attempts = [event(run, "fetch", attempt=1 + i, latency_ms=10.0 * (i + 1)) for i in range(6)]
    for attempt in attempts:  # six inserts, six parts of each table
        warehouse.insert([attempt])
    warehouse.insert([attempts[0]])  # a copy: traces collapses it, the rollup counts it
    rollup = (
        "SELECT step_id, sum(attempts), quantilesTDigestMerge(0.5)(latency)"
        " FROM trace_minutes GROUP BY step_id"
    )
    with_final = [list(row) for row in raw.query(rollup, settings={"final": 1}).result_rows]
    assert warehouse.query(rollup).rows == with_final
    assert with_final[0][1] == 7
    both = warehouse.query(  # it names traces too: FINAL for every table it reads
        "SELECT (SELECT count() FROM traces WHERE run_id = {r:String}),"
        " (SELECT sum(attempts) FROM trace_minutes)",
        {"r": run},
    )
    assert both.rows == [[6, 7]]


@pytest.mark.parametrize(
    ("sql", "final"),
    [
        ("SELECT sum(attempts) FROM trace_minutes", False),
        ("SELECT a FROM (SELECT a FROM reflux.`trace_minutes`) ARRAY JOIN label_pairs", False),
        ("SELECT run_id FROM trace_retries GROUP BY run_id", False),
        ("SELECT * FROM trace_minutes, traces", True),
        ("SELECT * FROM trace_minutes WHERE run IN (SELECT run_id FROM `traces`)", True),
        ("SELECT * FROM trace_minutes -- and traces", True),  # a wrong guess costs time only
        ("SELECT * FROM trace_minutes_mv", True),
        ("SHOW TABLES", True),
    ],
)
def test_final_is_left_off_only_for_the_derived_tables(sql: str, final: bool):
    assert _needs_final(sql) is final
    bound = "SELECT count() FROM {t:Identifier} WHERE x IN (SELECT 1 FROM trace_minutes)"
    assert _needs_final(bound, {"t": "traces"})


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE traces",
        "INSERT INTO traces (run_id) VALUES ('x')",
        "SELECT 1; DROP TABLE traces",
        "SELECT 1 INTO OUTFILE 'stolen.txt'",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",  # ClickHouse's readonly refuses
        "SELECT 1 SETTINGS readonly = 0",
    ],
)
def test_queries_are_read_only(warehouse: Warehouse, sql: str):
    with pytest.raises(ServiceError) as caught:
        warehouse.query(sql)
    assert "\n" not in str(caught.value)
    assert warehouse.query("SELECT count() FROM traces").rows == [[0]]


def test_a_bad_query_is_one_line(warehouse: Warehouse):
    with pytest.raises(ServiceError, match="UNKNOWN_TABLE") as caught:
        warehouse.query("SELECT * FROM no_such_table")
    assert "\n" not in str(caught.value) and "Stack trace" not in str(caught.value)


def test_a_bad_or_unreachable_server_url(tmp_path: Path):
    bad = Settings(home=tmp_path, clickhouse=ClickHouseSettings(url="clickhouse://x:9000"))
    with pytest.raises(ConfigError, match="REFLUX_CLICKHOUSE_URL"):
        open_warehouse(bad)
    url = f"http://user:secret@127.0.0.1:{free_port()}/db"
    down = Settings(home=tmp_path, clickhouse=ClickHouseSettings(url=url))
    with pytest.raises(ServiceError, match="cannot reach ClickHouse") as caught:
        open_warehouse(down)
    assert "secret" not in str(caught.value)


OPEN_IN_CHILD = textwrap.dedent(
    """
    import sys, time
    from infra.errors import ServiceError
    from infra.settings import ClickHouseSettings, Settings
    from reflection.warehouse import open_warehouse
    try:
        warehouse = open_warehouse(Settings(home=sys.argv[1], clickhouse=ClickHouseSettings()))
    except ServiceError as exc:
        print(exc)
        sys.exit(3)
    warehouse.migrate()
    print("opened", flush=True)
    if sys.argv[2] == "hold":
        time.sleep(600)
    """
)


def open_in_child(home: Path, then: str = "exit", **kw) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("REFLUX_CLICKHOUSE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_IN_CHILD, str(home), then],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def test_a_second_process_is_told_to_ask_the_sink(tmp_path: Path):
    settings = Settings(home=tmp_path, clickhouse=ClickHouseSettings(url=None))
    with open_warehouse(settings) as warehouse:
        warehouse.migrate()
        child = open_in_child(tmp_path)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 3, err
        assert "is owned by another process" in out and f"process {os.getpid()}" in out
        assert "query through it" in out
        assert "Cannot lock file" not in out + err
        assert warehouse.query("SELECT count() FROM traces").rows == [[0]]


def test_a_killed_owner_leaves_the_directory_free(tmp_path: Path):
    holder = open_in_child(tmp_path, "hold")
    try:
        assert holder.stdout is not None and holder.stderr is not None
        line = holder.stdout.readline()  # blocks until the child opened it (or died)
        assert line == "opened\n", line + holder.stderr.read()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The status file still names the dead process; the next owner takes over anyway.
    after = open_in_child(tmp_path)
    out, err = after.communicate(timeout=120)
    assert after.returncode == 0, out + err
    assert "opened" in out
