"""`reflux stats` figures equal those computed by hand from a known set of trace events."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.settings import Settings
from reflection import stats
from reflection.events import TraceEvent
from reflection.warehouse import Warehouse, open_warehouse


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    with open_warehouse(Settings(home=tmp_path)) as opened:
        opened.migrate()
        yield opened


def known_events() -> list[TraceEvent]:
    """Three runs of `shop` and one of `mail`; retries, a cache hit, a timeout, a skip."""
    rng = random.Random(7)
    now = datetime.now(UTC) - timedelta(minutes=5)
    events = []

    def add(run: str, step: str, node: str, version: str, status: str, attempt: int = 1,
            cache: bool = False, error: str | None = None, tokens: int | None = None,
            workflow: str = "shop", offset: float = 0.0) -> None:  # fmt: skip
        start = now + timedelta(seconds=offset)
        latency = round(rng.uniform(5, 500), 3)
        events.append(
            TraceEvent(
                run_id=run,
                step_id=step,
                attempt=attempt,
                node=node,
                node_version=version,
                status=status,
                start=start,
                end=start + timedelta(milliseconds=latency),
                latency_ms=latency,
                cache_hit=cache,
                error_class=error,
                error=f"{error} happened" if error else None,
                cost_tokens=tokens,
                workflow_id=workflow,
                retry_count=attempt - 1,
            )  # fmt: skip
        )

    for r in ("r1", "r2", "r3"):
        add(r, "fetch", "http.request", "1.0.0", "error", 1, error="HttpConnectError")
        add(r, "fetch", "http.request", "1.0.0", "ok", 2, offset=1)
        add(r, "total", "core.transform", "1.0.0", "ok", cache=(r == "r3"), offset=2)
        add(r, "llm", "ai.complete", "2.1.0", "ok", tokens=100 + len(events), offset=3)
    add("r2", "notify", "http.request", "1.1.0", "timeout", 1, error="NodeTimeoutError", offset=4)
    add("r3", "notify", "http.request", "1.1.0", "skipped", offset=4)
    add("m1", "send", "http.request", "1.1.0", "error", 1, error="HttpStatusError", workflow="mail")
    add("old", "send", "http.request", "1.1.0", "ok", workflow="mail", offset=-7200)  # > 1 h ago
    return events


def stored(moment: datetime) -> datetime:
    """As ClickHouse keeps it: DateTime64(3), milliseconds cut, not rounded."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


def test_node_stats_match_a_hand_count(warehouse: Warehouse):
    events = known_events()
    warehouse.insert(events)
    warehouse.insert(events[:5])  # a redelivery must not count twice
    rows = {
        (r["node"], r["node_version"]): r
        for r in warehouse.query(*stats.node_stats(3600)).records()
    }
    recent = [e for e in events if e.run_id != "old" and e.status != "skipped"]
    expected_keys = {(e.node, e.node_version) for e in recent}
    assert set(rows) == expected_keys
    for key in expected_keys:
        mine = [e for e in recent if (e.node, e.node_version) == key]
        row = rows[key]
        latencies = [e.latency_ms for e in mine]
        assert row["count"] == len(mine)
        failed = sum(e.status in ("error", "timeout") for e in mine)
        assert row["error_rate"] == pytest.approx(failed / len(mine))
        assert row["retry_rate"] == pytest.approx(sum(e.attempt > 1 for e in mine) / len(mine))
        assert row["cache_hit_rate"] == pytest.approx(sum(e.cache_hit for e in mine) / len(mine))
        for q, column in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert row[column] == pytest.approx(exact_quantile(latencies, q)), (key, column)
        assert row["cost_tokens"] == sum(e.cost_tokens or 0 for e in mine)
        classes = {e.error_class for e in mine if e.error_class}
        assert set(row["top_errors"]) == classes


def test_workflow_stats_and_failing_steps(warehouse: Warehouse):
    events = known_events()
    warehouse.insert(events)
    flows = {r["workflow_id"]: r for r in warehouse.query(*stats.workflow_stats(3600)).records()}
    assert flows["shop"]["runs"] == 3 and flows["mail"]["runs"] == 1
    durations = []
    for run in ("r1", "r2", "r3"):
        mine = [e for e in events if e.run_id == run]
        span = stored(max(e.end for e in mine)) - stored(min(e.start for e in mine))
        durations.append(span // timedelta(milliseconds=1))
    assert flows["shop"]["p50_ms"] == exact_quantile(durations, 0.5)

    failing = warehouse.query(*stats.failing_steps(3600)).records()
    shop = [
        (r["step_id"], r["failures"], r["attempts"]) for r in failing if r["workflow_id"] == "shop"
    ]
    assert shop == [("fetch", 3, 6), ("notify", 1, 1)]

    only_mail = warehouse.query(*stats.node_stats(3600, workflow="mail")).records()
    assert [(r["node_version"], r["count"]) for r in only_mail] == [("1.1.0", 1)]
    with_old = warehouse.query(*stats.node_stats(3 * 3600, node="http.request")).records()
    assert sum(r["count"] for r in with_old) == 3 * 2 + 1 + 2  # fetch x6, notify timeout, mail x2


def test_run_traces_in_time_order(warehouse: Warehouse):
    warehouse.insert(known_events())
    rows = warehouse.query(*stats.run_traces("r2")).records()
    assert [(r["step_id"], r["attempt"]) for r in rows] == [
        ("fetch", 1), ("fetch", 2), ("total", 1), ("llm", 1), ("notify", 1),
    ]  # fmt: skip
    assert rows[0]["error_class"] == "HttpConnectError"
