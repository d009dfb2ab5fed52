"""timeout (both directions) and cache on real traces."""

from __future__ import annotations

import math
import random

import pytest

import orchestrator
from evolution.critic import (
    CacheDetector,
    CriticSettings,
    TimeoutDetector,
    context_of,
    readable_duration,
)
from reflection.warehouse import Warehouse
from tests.evolution.critic.test_window import (
    CATALOG,
    event,
    orders,
    orders_spec,
    warehouse,
    window_of,
)

__all__ = ["warehouse"]
pytestmark = pytest.mark.timeout(60)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


async def test_a_limit_the_ok_tail_runs_into_is_raised(warehouse: Warehouse):
    rng = random.Random(3)
    ok = [rng.uniform(2000, 9800) for _ in range(270)]
    events = [event(f"ok-{i}", latency_ms=v, at=i * 10) for i, v in enumerate(ok)]
    events += [
        event(f"slow-{i}", status="timeout", latency_ms=10_000, at=i * 7,
              error_class="NodeTimeoutError", context={"retryable": "true"})
        for i in range(30)
    ]  # fmt: skip
    warehouse.insert(events)
    [finding] = await TimeoutDetector().scan(window_of(warehouse))

    text = readable_duration(max(exact(ok, 0.999), exact(ok, 0.99)) * 1.5 / 1000)
    assert text == "15s"
    assert finding.mutation == [{"op": "set_policy", "step": "fetch", "timeout": text}]
    figures = finding.evidence.figures
    assert (figures["timeouts"], figures["attempts"]) == (30, 300)
    assert figures["ok_p99_ms"] == pytest.approx(exact(ok, 0.99), abs=1e-3)
    assert finding.expected is not None
    assert finding.expected.current == pytest.approx(0.1)
    assert 0 <= finding.expected.expected < 0.1
    assert set(finding.evidence.runs) <= {f"slow-{i}" for i in range(30)}
    assert "10 %" in finding.title
    changed = orchestrator.apply_mutations(
        orders_spec(), orchestrator.parse_mutations(finding.mutation), CATALOG
    )
    assert changed.steps[0].timeout == 15.0


async def test_a_limit_far_above_anything_needed_is_tightened(warehouse: Warehouse):
    rng = random.Random(4)
    ok = [rng.uniform(20, 400) for _ in range(100)]
    warehouse.insert([event(f"r{i}", latency_ms=v, at=i) for i, v in enumerate(ok)])
    [finding] = await TimeoutDetector().scan(window_of(warehouse, orders(timeout="300s")))
    # 10 x the slowest call is 4 s: never under the 10 s floor
    assert finding.mutation == [{"op": "set_policy", "step": "fetch", "timeout": "10s"}]
    assert finding.expected is not None
    assert (finding.expected.current, finding.expected.expected) == (300.0, 10.0)
    assert finding.evidence.figures["ok_max_ms"] == pytest.approx(max(ok), abs=1e-3)
    assert finding.evidence.runs == [f"r{ok.index(max(ok))}"]  # the slowest call
    orchestrator.parse_mutations(finding.mutation)
    # a limit under 5 x that proposal stays: 30 s < 5 x 10 s
    assert await TimeoutDetector().scan(window_of(warehouse, orders(timeout="30s"))) == []


async def test_a_tighter_limit_is_ten_times_the_slowest_call_rounded_up(warehouse: Warehouse):
    ok = [1000.0 + i * 21 for i in range(100)]  # the slowest 3.079 s: 10 x is 30.79 s -> 31s
    warehouse.insert([event(f"r{i}", latency_ms=v, at=i) for i, v in enumerate(ok)])
    [finding] = await TimeoutDetector().scan(window_of(warehouse, orders(timeout="1h")))
    assert finding.mutation == [{"op": "set_policy", "step": "fetch", "timeout": "31s"}]
    assert "10× the slowest call" in finding.diagnosis
    assert orchestrator.parse_mutations(finding.mutation)
    assert await TimeoutDetector().scan(window_of(warehouse, orders(timeout="2m"))) == []


async def test_only_the_live_versions_latencies_count(warehouse: Warehouse):
    # version 2 timed out a third of the time at its limit; the live version 3 never does
    old = [
        event(f"old-{i}", status="timeout" if i % 3 == 0 else "ok", latency_ms=9500 + i,
              at=i, workflow_version=2, error_class="NodeTimeoutError")
        for i in range(300)
    ]  # fmt: skip
    new = [event(f"new-{i}", latency_ms=500 + i, at=i) for i in range(100)]
    warehouse.insert(old + new)
    assert await TimeoutDetector().scan(window_of(warehouse)) == []
    [finding] = await TimeoutDetector().scan(
        window_of(warehouse, context_of(orders_spec(), CATALOG, 2))
    )
    assert finding.mutation[0]["timeout"] == "15s"  # the old version, judged as live
    assert finding.evidence.figures["attempts"] == 300


async def test_a_fitting_limit_makes_no_proposal(warehouse: Warehouse):
    warehouse.insert([event(f"r{i}", latency_ms=500 + i * 10, at=i) for i in range(100)])
    assert await TimeoutDetector().scan(window_of(warehouse)) == []


def repeated_price_calls(
    step: str = "price", node: str = "core.transform", *, latency_ms: float = 40.0,
    inputs: int = 20, calls: int = 200, every_s: float = 9.0,
) -> list:  # fmt: skip
    # by default 200 calls, 20 distinct inputs, each input back every 180 s, 40-46 ms a call
    return [
        event(f"r{i}", step, node=node, version="1.1.0", at=i * every_s,
              latency_ms=latency_ms + (i % 7) * latency_ms / 40, inputs_hash=f"h{i % inputs}")
        for i in range(calls)
    ]  # fmt: skip


async def test_repeated_inputs_of_a_read_only_step_get_a_cache(warehouse: Warehouse):
    events = repeated_price_calls()
    warehouse.insert(events)
    [finding] = await CacheDetector().scan(window_of(warehouse))
    assert finding.step_id == "price"
    assert finding.mutation == [{"op": "set_policy", "step": "price", "cache": {"ttl": "15m"}}]
    figures = finding.evidence.figures
    assert (figures["calls"], figures["distinct_inputs"]) == (200, 20)
    assert figures["mean_repeat_gap_s"] == pytest.approx(180.0, rel=0.01)
    # each input: 10 calls 180 s apart; a 15 m cache misses the first and the one after
    # its entry expired (at 900 s): 8 hits of 10
    assert figures["expected_hit_rate"] == pytest.approx(0.8)
    mean = sum(e.latency_ms for e in events) / 200
    assert finding.expected is not None
    assert finding.expected.current == pytest.approx(mean, abs=1e-3)
    assert finding.expected.expected == pytest.approx(mean * 0.2 + 0.8 * 1.0, abs=1e-3)
    assert finding.evidence.runs
    changed = orchestrator.apply_mutations(
        orders_spec(), orchestrator.parse_mutations(finding.mutation), CATALOG
    )
    assert changed.steps[1].cache is not None and changed.steps[1].cache.ttl == 900


async def test_no_cache_for_a_step_that_may_write_or_is_cached(warehouse: Warehouse):
    warehouse.insert(repeated_price_calls("fetch", "http.request"))  # http.request may POST
    assert await CacheDetector().scan(window_of(warehouse)) == []
    warehouse.insert(repeated_price_calls())
    cached = orders(price_cache="{ttl: 5m}")
    assert await CacheDetector().scan(window_of(warehouse, cached)) == []


async def test_no_cache_when_inputs_rarely_repeat(warehouse: Warehouse):
    warehouse.insert(
        [
            event(f"r{i}", "price", node="core.transform", at=i, inputs_hash=f"h{i % 90}")
            for i in range(100)
        ]
    )  # fmt: skip  (10 % repeats)
    assert await CacheDetector().scan(window_of(warehouse)) == []


async def test_no_cache_for_a_step_too_quick_to_save_anything(warehouse: Warehouse):
    # 90 % of calls repeat, but a call takes ~0.2 ms: a lookup (~1 ms) saves nothing
    warehouse.insert(repeated_price_calls(latency_ms=0.2))
    assert await CacheDetector().scan(window_of(warehouse)) == []


async def test_a_cache_must_save_5_ms_a_call(warehouse: Warehouse):
    # 80 % hits of ~3.2 ms calls save ~1.8 ms a call: under 5 ms
    warehouse.insert(repeated_price_calls(latency_ms=3.0))
    assert await CacheDetector().scan(window_of(warehouse)) == []
    lenient = CriticSettings(cache_min_saving_ms=1.5)
    [finding] = await CacheDetector().scan(window_of(warehouse, settings=lenient))
    assert finding.step_id == "price"


async def test_a_cache_must_save_a_fifth_of_the_latency(warehouse: Warehouse):
    # 100 calls of 80 inputs, 1 s apart: 20 % hits of ~33 ms calls save ~6.4 ms a call,
    # above 5 ms but only 19 % of the mean
    events = repeated_price_calls(latency_ms=30.0, inputs=80, calls=100, every_s=1.0)
    warehouse.insert(events)
    assert await CacheDetector().scan(window_of(warehouse)) == []
    lenient = CriticSettings(cache_min_saving_share=0.1)
    [finding] = await CacheDetector().scan(window_of(warehouse, settings=lenient))
    mean = sum(e.latency_ms for e in events) / len(events)
    saving = 0.2 * (mean - 1.0)
    assert finding.evidence.figures["expected_hit_rate"] == pytest.approx(0.2)
    assert 5 <= saving < 0.2 * mean
    orchestrator.parse_mutations(finding.mutation)


async def test_only_the_live_versions_repeats_count(warehouse: Warehouse):
    old = [
        event(f"old-{i}", "price", node="core.transform", at=i * 9.0, latency_ms=40.0,
              inputs_hash=f"h{i % 20}", workflow_version=2)
        for i in range(200)
    ]  # fmt: skip
    new = [
        event(f"new-{i}", "price", node="core.transform", at=i, latency_ms=40.0,
              inputs_hash=f"n{i}")
        for i in range(100)
    ]  # fmt: skip
    warehouse.insert(old + new)
    assert await CacheDetector().scan(window_of(warehouse)) == []
