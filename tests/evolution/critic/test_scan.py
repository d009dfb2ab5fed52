"""A whole scan on real traces: signatures across scans, live traffic only, namespace scope,
re-runnable evidence, the contrast budget, and a detector that fails (the contrast's own
rows: `test_contrast`)."""

from __future__ import annotations

import random

import pytest

import orchestrator
from evolution.critic import DETECTORS, CriticSettings, RetryDetector, Window, scan
from evolution.proposals.model import Finding
from reflection.warehouse import Warehouse
from tests.evolution.critic.test_retry import calls
from tests.evolution.critic.test_timeout_cache import repeated_price_calls
from tests.evolution.critic.test_window import event, http_503, warehouse, window_of

__all__ = ["warehouse"]
pytestmark = pytest.mark.timeout(60)


async def test_a_full_scan_and_its_evidence(warehouse: Warehouse):
    warehouse.insert(calls(300, 0.48) + repeated_price_calls())
    window = window_of(warehouse)
    result = await scan(window)

    assert result.errors == []
    kinds = {(f.kind, f.step_id) for f in result.findings}
    # price (~45 ms) under core.transform's 5 s limit: not 5 x the 10 s floor, so it stays
    assert kinds == {("retry", "fetch"), ("cache", "price")}
    assert result.kinds == {"retry", "timeout", "cache", "node_version", "drift"}
    assert result.covered == {("orders", "fetch"), ("orders", "price")}
    assert result.window == (window.start, window.end)
    for finding in result.findings:
        check_finding(finding, warehouse)


def check_finding(finding: Finding, warehouse: Warehouse) -> None:
    assert finding.title and finding.diagnosis and finding.signature
    assert finding.expected is not None and finding.expected.basis
    orchestrator.parse_mutations(finding.mutation)
    assert finding.evidence.figures and finding.evidence.runs
    for query in finding.evidence.queries:  # re-runs as `reflux sql` would: string params
        assert all(isinstance(v, str) for v in query.params.values())
        assert warehouse.query(query.sql, query.params).rows, query.sql
    assert finding.model_dump(mode="json")  # it serialises


async def test_the_signature_stays_while_the_figures_change(warehouse: Warehouse):
    warehouse.insert(calls(200, 0.48))
    [first] = await RetryDetector().scan(window_of(warehouse))
    warehouse.insert(
        [http_503(f"extra-{i}", at=3000 + i) for i in range(100)]
    )  # more failures: new figures
    [second] = await RetryDetector().scan(window_of(warehouse))
    assert first.evidence.figures["calls"] != second.evidence.figures["calls"]
    assert first.expected != second.expected
    assert first.signature == second.signature
    [timeout_like] = [d for k, d in DETECTORS.items() if k == "timeout"]
    assert timeout_like.kind == "timeout"


async def test_shadow_and_experiment_runs_are_left_out(warehouse: Warehouse):
    live = [event(f"live-{i}", at=i) for i in range(100)]
    replays = [http_503(f"shadow-{i}", at=i, labels={"shadow": "true"}) for i in range(100)] + [
        http_503(f"variant-{i}", at=i, labels={"experiment": "prop-1", "arm": "candidate"})
        for i in range(100)
    ]
    warehouse.insert(live + replays)
    result = await scan(window_of(warehouse))
    assert result.findings == [] and result.errors == []
    assert result.covered == {("orders", "fetch")}


async def test_only_the_window_namespace_counts(warehouse: Warehouse):
    warehouse.insert(calls(50, 0.0))  # in namespace shop: all ok
    warehouse.insert([http_503(f"x-{i}", at=i, namespace="other") for i in range(300)])
    assert await RetryDetector().scan(window_of(warehouse)) == []


class Broken:
    kind = "broken"

    async def scan(self, window: Window) -> list[Finding]:
        raise RuntimeError("the broken detector\nfailed")


async def test_a_detector_that_raises_is_reported_and_the_others_still_run(
    warehouse: Warehouse,
):
    warehouse.insert(calls(300, 0.48))
    result = await scan(window_of(warehouse), [Broken(), RetryDetector()])
    assert result.errors == ["broken: RuntimeError: the broken detector failed"]
    assert [f.kind for f in result.findings] == ["retry"]
    assert result.kinds == {"retry"}  # the broken one's proposals are not superseded


async def test_covered_counts_the_live_version_only(warehouse: Warehouse):
    warehouse.insert(calls(300, 0.0, version=2, prefix="old") + calls(10, 0.0, prefix="new"))
    warehouse.insert(repeated_price_calls())
    result = await scan(window_of(warehouse))
    assert result.covered == {("orders", "price")}  # fetch: 10 live attempts, under 20


async def test_contrasts_are_capped_per_scan(warehouse: Warehouse):
    # two findings about failures: fetch's 503s, and price timing out at its 5 s limit
    rng = random.Random(8)
    price = [
        event(f"p{i}", "price", node="core.transform", at=i * 10, latency_ms=lat)
        for i, lat in enumerate(rng.uniform(1000, 4950) for _ in range(270))
    ] + [
        event(f"t{i}", "price", 1, "timeout", node="core.transform", at=i * 9, latency_ms=5000,
              error_class="NodeTimeoutError")
        for i in range(30)
    ]  # fmt: skip
    warehouse.insert(calls(300, 0.48) + price)
    result = await scan(window_of(warehouse, settings=CriticSettings(max_contrasts=1)))
    assert [(f.kind, f.step_id) for f in result.findings] == [
        ("retry", "fetch"), ("timeout", "price")
    ]  # fmt: skip
    first, second = result.findings
    assert first.evidence.contrast and "contrast" not in first.evidence.figures
    assert not second.evidence.contrast
    assert second.evidence.figures["contrast"].startswith("skipped: ")
    result = await scan(window_of(warehouse))
    assert all(f.evidence.contrast for f in result.findings)


async def test_the_bench_scenario_runs_without_a_stack():
    from bench.runner import BenchOptions
    from bench.scenarios import critic as scenario

    assert scenario.STACK is False
    figures = await scenario.run(BenchOptions(quick=True), events=20_000)
    measures = {f.measure: f for f in figures}
    scan_figure = measures["scan of 20,000 events, every detector"]
    assert scan_figure.value > 0 and scan_figure.baseline and scan_figure.goal == 2000
    ratio = measures["scan time / plain aggregate time"]
    assert ratio.value == pytest.approx(scan_figure.value / scan_figure.baseline)
    assert ratio.goal == 3
