"""The BubbleUp contrast on real traces, read from the rollup (`trace_minutes`): which
attribute values rank first, their shares, the metric decades, what describes a failure
coming last, and that the query never reads the raw `traces`."""

from __future__ import annotations

import random
import re

import pytest

from evolution.critic import CriticSettings, contrast
from evolution.proposals.model import ContrastRow
from reflection import rollup
from reflection.events import TraceEvent
from reflection.warehouse import Warehouse
from tests.evolution.critic.test_window import event, warehouse, window_of

__all__ = ["warehouse"]
pytestmark = pytest.mark.timeout(60)

EVERY_ROW = CriticSettings(contrast_rows=100)
"""Room for every row the traces below give, so each attribute can be looked up."""
REPLICAS = ("r1", "r2", "r3")


def by_replica(n: int = 600, seed: int = 3) -> list[TraceEvent]:
    """Calls over three replicas, r3 failing 90 % of the time and the others 5 %; a label,
    a byte count in 1–999 and, on failures, an error class and an HTTP status. Five seconds
    apart: a rollup row (a minute of one replica and status) holds at most four attempts,
    fewer than it keeps (`rollup.ATTRIBUTES`), so every share is exact."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        replica = REPLICAS[i % 3]
        common = {
            "at": i * 5.0,
            "replica": replica,
            "labels": {"team": "a" if i % 2 else "b"},
            "metrics": {"bytes": float(rng.randint(1, 999))},
        }
        if rng.random() < (0.9 if replica == "r3" else 0.05):
            events.append(
                event(f"run-{i}", status="error", error_class="HttpStatusError",
                      context={"status": "503"}, **common)
            )  # fmt: skip
        else:
            events.append(event(f"run-{i}", **common))
    return events


def row(rows: list[ContrastRow], attribute: str, value: str) -> ContrastRow:
    [found] = [r for r in rows if (r.attribute, r.value) == (attribute, value)]
    return found


def band(value: float) -> str:
    """The decade the rollup keeps a metric of 1 or more in ("1-9", "10-99", …)."""
    low = 10 ** (len(str(int(value))) - 1)
    return f"{low}-{low * 10 - 1}"


async def test_a_replica_that_fails_far_more_often_ranks_first(warehouse: Warehouse):
    events = by_replica()
    warehouse.insert(events)
    rows, sample, query = await contrast(
        window_of(warehouse, settings=EVERY_ROW), "orders", "fetch"
    )

    failing = [e for e in events if e.status == "error"]
    ok = [e for e in events if e.status == "ok"]

    def shares(matches: object) -> tuple[float, float]:
        return (
            pytest.approx(sum(map(matches, failing)) / len(failing), abs=1e-4),
            pytest.approx(sum(map(matches, ok)) / len(ok), abs=1e-4),
        )

    assert (rows[0].attribute, rows[0].value) == ("replica", "r3")
    assert (rows[0].share_failing, rows[0].share_ok) == shares(lambda e: e.replica == "r3")
    assert rows[0].share_failing > 0.8 and rows[0].share_ok < 0.2
    kept = {"failing_attempts": len(failing), "failing_kept": len(failing),
            "ok_attempts": len(ok), "ok_kept": len(ok)}  # fmt: skip
    assert sample == kept
    team_a = row(rows, "label.team", "a")
    assert (team_a.share_failing, team_a.share_ok) == shares(lambda e: e.labels["team"] == "a")
    for decade in ("1-9", "10-99", "100-999"):  # a metric by decade, not by quartile
        got = row(rows, "metric.bytes", decade)
        assert (got.share_failing, got.share_ok) == shares(
            lambda e, d=decade: band(e.metrics["bytes"]) == d
        )
    assert row(rows, "node_version", "1.1.0").share_failing == 1.0
    assert row(rows, "item", "none").share_ok == 1.0  # a plain step: no for_each index
    # what only failures carry describes the failure: it comes after what explains it
    error_class = row(rows, "error_class", "HttpStatusError")
    assert (error_class.share_failing, error_class.share_ok) == (1.0, 0.0)
    assert row(rows, "context.status", "503").share_failing == 1.0
    describes = [r.attribute == "error_class" or r.attribute.startswith("context.") for r in rows]
    assert describes == sorted(describes) and describes[-1]
    assert not re.search(r"\btraces\b", query.sql)  # the rollup only
    assert warehouse.query(query.sql, query.params).rows == [  # the quoted query: its step's
        ["orders", "fetch", r.attribute, r.value, pytest.approx(r.share_failing, abs=1e-4),
         pytest.approx(r.share_ok, abs=1e-4), *kept.values(), len(failing), len(ok)]
        for r in rows
    ]  # fmt: skip


async def test_metric_decades_that_split_failures_from_ok_rank_first(warehouse: Warehouse):
    big = [
        event(f"big-{i}", status="error", error_class="HttpStatusError", at=i,
              metrics={"bytes": 5000.0 + i})
        for i in range(30)
    ]  # fmt: skip
    small = [event(f"small-{i}", at=i, metrics={"bytes": 50.0}) for i in range(90)]
    warehouse.insert(big + small)
    rows, _, _ = await contrast(window_of(warehouse), "orders", "fetch")
    assert rows[:2] == [  # equally far apart: by value
        ContrastRow(attribute="metric.bytes", value="10-99", share_failing=0.0, share_ok=1.0),
        ContrastRow(attribute="metric.bytes", value="1000-9999", share_failing=1.0, share_ok=0.0),
    ]
    assert len(rows) <= CriticSettings().contrast_rows


async def test_a_value_keeps_its_equals_signs_and_uncalled_attempts_are_left_out(
    warehouse: Warehouse,
):
    calls = [
        event(f"run-{i}", at=i, status="error" if i % 4 == 0 else "ok",
              labels={"query": "a=b" if i % 4 == 0 else "c=d"})
        for i in range(40)
    ] + [event(f"skip-{i}", at=i, status="skipped", replica="r9") for i in range(40)]  # fmt: skip
    warehouse.insert(calls)
    rows, _, _ = await contrast(window_of(warehouse, settings=EVERY_ROW), "orders", "fetch")
    assert row(rows, "label.query", "a=b").share_failing == 1.0
    assert row(rows, "label.query", "c=d").share_ok == 1.0
    assert not [r for r in rows if r.value == "r9"]  # a skip never reached the node
    assert row(rows, "replica", "").share_ok == 1.0


async def test_no_failure_gives_no_rows(warehouse: Warehouse):
    warehouse.insert([event(f"run-{i}", at=i, replica="r1") for i in range(50)])
    rows, _, query = await contrast(window_of(warehouse), "orders", "fetch")
    assert rows == [] and query.sql


async def test_a_busy_step_is_contrasted_from_the_attempts_its_rows_keep(warehouse: Warehouse):
    """6,000 attempts in 30 minutes on one replica: a rollup row (a minute of one status)
    holds up to 200 and keeps `rollup.ATTRIBUTES`, so labels are estimated from a few
    hundred attempts a side. The label that tells failures apart (region: eu fails 40 %,
    us 5 %) still ranks first, its shares near the true ones, above five labels that
    failures do not depend on and that wobble in the sample."""
    rng = random.Random(11)
    events = []
    for i in range(6000):
        region = "eu" if i % 2 else "us"
        labels = {"region": region} | {f"noise{k}": f"v{rng.randrange(4)}" for k in range(5)}
        failed = rng.random() < (0.4 if region == "eu" else 0.05)
        events.append(
            event(f"run-{i}", status="error" if failed else "ok", at=i * 0.3, labels=labels)
        )
    warehouse.insert(events)
    rows, sample, _ = await contrast(window_of(warehouse, settings=EVERY_ROW), "orders", "fetch")

    failing = [e for e in events if e.status == "error"]
    ok = [e for e in events if e.status == "ok"]
    assert sample["failing_attempts"] == len(failing) and sample["ok_attempts"] == len(ok)
    assert sample["failing_kept"] <= 31 * rollup.ATTRIBUTES < len(failing)  # 31 clock minutes
    labels = [r for r in rows if r.attribute.startswith("label.")]
    assert labels[0].attribute == "label.region"
    eu = row(rows, "label.region", "eu")
    true_failing = sum(e.labels["region"] == "eu" for e in failing) / len(failing)
    true_ok = sum(e.labels["region"] == "eu" for e in ok) / len(ok)
    assert eu.share_failing == pytest.approx(true_failing, abs=0.1)
    assert eu.share_ok == pytest.approx(true_ok, abs=0.1)
