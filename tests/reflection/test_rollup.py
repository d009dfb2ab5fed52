"""`trace_minutes` on real inserts into the embedded engine: the view rolls every attempt up
by the minute with what the Critic splits by, the migration rolls up what was stored before
it exactly once (also when it runs again after an interruption), and the rollup reads the
same figures as the raw table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.settings import ClickHouseSettings, Settings
from reflection import rollup
from reflection.events import TraceEvent
from reflection.warehouse import MIGRATIONS, Warehouse, open_warehouse

T0 = datetime(2026, 3, 4, 5, 6, 0, tzinfo=UTC)


def attempt(run: str, at_s: float = 0.0, **fields: object) -> TraceEvent:
    start = T0 + timedelta(seconds=at_s)
    latency = float(fields.pop("latency_ms", 10.0))  # type: ignore[arg-type]
    values: dict[str, object] = {
        "run_id": run, "step_id": "fetch", "node": "http.request", "node_version": "1.0.0",
        "status": "ok", "start": start, "end": start + timedelta(milliseconds=latency),
        "latency_ms": latency, "workflow_id": "orders", "workflow_version": 3,
        "namespace": "shop", "inputs_hash": f"in-{run}",
    }  # fmt: skip
    return TraceEvent(**(values | fields))


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[Warehouse]:
    with open_warehouse(Settings(home=tmp_path, clickhouse=ClickHouseSettings(url=None))) as w:
        yield w


def one(warehouse: Warehouse, sql: str) -> list:
    [row] = warehouse.query(sql).rows
    return row


def test_the_view_rolls_attempts_up_by_minute_and_what_the_critic_splits_by(empty: Warehouse):
    empty.migrate()
    empty.insert(
        [
            attempt("r1", 1, latency_ms=20.0, metrics={"bytes": 1500.0}),
            attempt("r2", 2, latency_ms=40.0, labels={"team": "a"}),
            attempt("r3", 3, status="error", error_class="HttpStatusError",
                    context={"status": "503", "retryable": "true", "retry_after": "2"}),
            attempt("r4", 70, item=12),  # the next minute, a for_each item
            attempt("s1", 4, labels={"shadow": "true"}),
            attempt("x1", 5, labels={"experiment": "prop-1"}),
        ]
    )  # fmt: skip
    rows = empty.query(
        f"SELECT toString(minute), live, item_band, status, error_class, retryable,"
        f" http_status, sum(attempts), sum(latency_sum), max(retry_after_s)"
        f" FROM {rollup.TABLE} GROUP BY ALL ORDER BY ALL"
    ).rows
    assert rows == [
        ["2026-03-04 05:06:00", False, "none", "ok", "", "", "", 2, 20.0, 0.0],
        ["2026-03-04 05:06:00", True, "none", "error", "HttpStatusError", "true", "503", 1,
         10.0, 2.0],
        ["2026-03-04 05:06:00", True, "none", "ok", "", "", "", 2, 60.0, 0.0],
        ["2026-03-04 05:07:00", True, "10-99", "ok", "", "", "", 1, 10.0, 0.0],
    ]  # fmt: skip
    [kept] = one(  # each live attempt's attributes: no more than a row keeps
        empty,
        f"SELECT arraySort(arrayMap(a -> arraySort(a),"
        f" groupArrayArray(finalizeAggregation(attributes)))) FROM {rollup.TABLE} WHERE live",
    )
    assert kept == [[], ["context.retry_after=2", "context.retryable=true", "context.status=503"],
                    ["label.team=a"], ["metric.bytes=1000-9999"]]  # fmt: skip
    runs, slowest, inputs, median = one(
        empty,
        f"SELECT arraySort(groupUniqArrayMerge({rollup.EXAMPLES})(runs)),"
        f" argMaxMerge(slowest), uniqHLL12Merge(inputs),"
        f" quantilesTDigestMerge(0.5)(latency)[1]"
        f" FROM {rollup.TABLE} WHERE live AND status = 'ok'",
    )
    assert (runs, slowest, inputs, median) == (["r1", "r2", "r4"], "r2", 3, 20.0)


def test_an_attribute_keeps_its_key_and_value_apart_however_long(empty: Warehouse):
    empty.migrate()
    long = "k" * 300
    empty.insert([attempt("r1", 1, context={"a=b": "c=d", long + "1": "x", long + "2": "x"})])
    [kept] = one(empty, f"SELECT arrayFlatten(finalizeAggregation(attributes)) FROM {rollup.TABLE}")
    cut = "k" * rollup.KEY_CHARS
    assert sorted(kept) == ["context.a:b=c=d", f"context.{cut}=x"]  # two keys cut alike: one


def test_a_label_unique_to_each_run_does_not_grow_the_rollup(tmp_path: Path):
    """Each row keeps `ATTRIBUTES` attempts' attributes, however many values a label takes:
    2,000 runs, each with its own request id, store what 2,000 with one id do."""
    stored = []
    for name, label in (("same", lambda i: "r-1"), ("unique", lambda i: f"r-{i:06d}")):
        settings = Settings(home=tmp_path / name, clickhouse=ClickHouseSettings(url=None))
        with open_warehouse(settings) as warehouse:
            warehouse.migrate()
            for at in range(0, 2000, 500):  # four inserts, one minute, one row
                warehouse.insert(
                    [
                        attempt(f"r{i}", i / 50, labels={"request": label(i)})
                        for i in range(at, at + 500)
                    ]
                )
            warehouse._run(warehouse._client.command, f"OPTIMIZE TABLE {rollup.TABLE} FINAL")
            rows, kept = one(
                warehouse,
                f"SELECT count(), max(length(finalizeAggregation(attributes))) FROM {rollup.TABLE}",
            )
            assert (rows, kept) == (1, rollup.ATTRIBUTES)
            [[size]] = warehouse.query(
                "SELECT sum(data_uncompressed_bytes) FROM system.parts"
                f" WHERE active AND database = currentDatabase() AND table = '{rollup.TABLE}'"
            ).rows
            stored.append(size)
    same, unique = stored
    assert unique < same + 2000  # 2,000 distinct pairs counted would be ~40 kB more


def test_the_migration_rolls_up_what_was_stored_before_it_once(empty: Warehouse):
    before = [m for m in MIGRATIONS if m.statements != rollup.STATEMENTS]
    empty.migrate(before)
    empty.insert([attempt(f"r{i}", i) for i in range(50)])
    empty.insert([attempt("r0", 0)])  # a redelivered copy: the raw table folds it
    empty.migrate()
    assert one(empty, f"SELECT sum(attempts) FROM {rollup.TABLE}") == [50]
    for statement in rollup.STATEMENTS:  # run again, as after an interruption
        empty._run(empty._client.command, statement)
    assert one(empty, f"SELECT sum(attempts) FROM {rollup.TABLE}") == [50]
    empty.insert([attempt(f"n{i}", 100 + i) for i in range(5)])  # and the view goes on
    assert one(empty, f"SELECT sum(attempts) FROM {rollup.TABLE}") == [55]


def test_the_rollup_reads_the_raw_figures(empty: Warehouse):
    empty.migrate()
    events = [
        attempt(f"r{i}", i * 7.0, latency_ms=5.0 + i % 13, status="error" if i % 9 == 0 else "ok",
                node_version="1.1.0" if i % 3 else "1.0.0")
        for i in range(900)
    ]  # fmt: skip
    for at in range(0, 900, 300):  # in three inserts
        empty.insert(events[at : at + 300])
    group = "(node_version, status, toStartOfMinute(start))"
    raw = empty.query(
        f"SELECT {group} AS g, count(), round(sum(latency_ms), 6) FROM traces GROUP BY g ORDER BY g"
    ).rows
    rolled = empty.query(
        f"SELECT (node_version, status, minute) AS g, sum(attempts), round(sum(latency_sum), 6)"
        f" FROM {rollup.TABLE} GROUP BY g ORDER BY g"
    ).rows
    assert rolled == raw and len(raw) > 100
