"""retry on real traces: per-attempt failure shares from a seeded generator, and the
smallest max_attempts that brings the step under the target."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

import orchestrator
from evolution.critic import CriticSettings, RetryDetector
from reflection.events import TraceEvent
from reflection.warehouse import Warehouse
from tests.evolution.critic.test_window import (
    CATALOG,
    event,
    http_503,
    orders,
    orders_spec,
    warehouse,
    window_of,
)

__all__ = ["warehouse"]
pytestmark = pytest.mark.timeout(60)


def calls(
    n: int, p: float, max_attempts: int = 1, *, seed: int = 1, gap_s: float = 0.0,
    context: dict[str, str] | None = None, fail: str = "503", version: int = 3,
    prefix: str = "run",
) -> list[TraceEvent]:  # fmt: skip
    """`n` calls of fetch whose attempts each fail with probability `p` (up to
    `max_attempts`), the retry starting `gap_s` after the failure ended."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        at = i * 5.0
        for attempt in range(1, max_attempts + 1):
            if rng.random() >= p:
                events.append(
                    event(f"{prefix}-{i}", attempt=attempt, at=at, workflow_version=version)
                )
                break
            if fail == "503":
                events.append(
                    http_503(
                        f"{prefix}-{i}", attempt, at=at, context=context or {},
                        workflow_version=version,
                    )
                )  # fmt: skip
            else:
                events.append(
                    event(
                        f"{prefix}-{i}",
                        attempt=attempt,
                        status="error",
                        at=at,
                        error_class="HttpStatusError",
                        error="404 Not Found",
                        context={"retryable": "false", "status": "404"},
                        workflow_version=version,
                    )  # fmt: skip
                )
            at += 1.0 + gap_s  # the failed attempt took 1 s (event's default latency)
    return events


def smallest_n(p: float, target: float = 0.01, cap: int = 10) -> int:
    return next((n for n in range(1, cap + 1) if p**n <= target), cap)


async def test_proposes_the_smallest_max_attempts_for_the_target(warehouse: Warehouse):
    events = calls(400, 0.48)
    warehouse.insert(events)
    observed = sum(e.status == "error" for e in events) / 400
    [finding] = await RetryDetector().scan(window_of(warehouse))

    n = smallest_n(observed)
    assert n == 7  # 0.48 ** 7 = 0.6 %
    assert finding.mutation == [{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": n}}]
    assert finding.expected is not None
    assert finding.expected.metric == "error_rate"
    assert finding.expected.current == pytest.approx(observed, abs=1e-4)
    assert finding.expected.expected == pytest.approx(observed**n, rel=1e-3)
    assert finding.title.startswith(f"Retry fetch up to {n} times: ")
    assert "503" in finding.title
    assert finding.evidence.figures["calls"] == 400
    assert len(finding.evidence.runs) == 5
    assert set(finding.evidence.runs) <= {e.run_id for e in events if e.status == "error"}
    assert (finding.workflow_version, finding.namespace, finding.node) == (
        3, "shop", "http.request@1.1.0"
    )  # fmt: skip
    # the mutation is one orchestrator accepts, and applies to the workflow
    parsed = orchestrator.parse_mutations(finding.mutation)
    changed = orchestrator.apply_mutations(orders_spec(), parsed, CATALOG)
    assert changed.steps[0].retry.max_attempts == n


async def test_attempt_by_attempt_estimates_and_the_recovery_interval(warehouse: Warehouse):
    # Two attempts today, the retry 4.2 s after the failure; p = 0.5 at each.
    events = calls(400, 0.5, max_attempts=2, gap_s=4.2)
    warehouse.insert(events)
    window = window_of(warehouse, orders(retry="{max_attempts: 2, initial_interval: 1s}"))
    [finding] = await RetryDetector().scan(window)

    first = [e for e in events if e.attempt == 1]
    second = [e for e in events if e.attempt == 2]
    p1 = sum(e.status == "error" for e in first) / len(first)
    p2 = sum(e.status == "error" for e in second) / len(second)
    failed = sum(e.status == "error" for e in second)
    figures = finding.evidence.figures
    assert figures["failed_calls"] == failed
    assert figures["retryable_failure_share_by_attempt"] == {
        "1": round(p1, 4), "2": round(p2, 4)
    }  # fmt: skip
    n = next(k for k in range(1, 11) if p1 * p2 ** (k - 1) <= 0.01)
    retry = finding.mutation[0]["retry"]
    assert retry["max_attempts"] == n
    assert retry["initial_interval"] == "5s"  # 4.2 s observed, rounded up
    assert finding.expected is not None
    assert finding.expected.current == pytest.approx(failed / 400, abs=1e-4)
    orchestrator.parse_mutations(finding.mutation)


async def test_retry_after_is_honoured(warehouse: Warehouse):
    warehouse.insert(calls(200, 0.4, context={"retry_after": "3"}))
    [finding] = await RetryDetector().scan(window_of(warehouse))
    assert finding.mutation[0]["retry"]["initial_interval"] == "3s"
    assert finding.evidence.figures["retry_after_s"] == 3.0
    assert "Retry-After" in finding.diagnosis
    orchestrator.parse_mutations(finding.mutation)


async def test_never_more_than_the_cap(warehouse: Warehouse):
    warehouse.insert(calls(200, 0.9))
    [finding] = await RetryDetector().scan(window_of(warehouse))
    assert finding.mutation[0]["retry"]["max_attempts"] == 10
    assert "above the 1.0 % target" in finding.diagnosis
    capped = CriticSettings(max_attempts_cap=4)
    [finding] = await RetryDetector().scan(window_of(warehouse, settings=capped))
    assert finding.mutation[0]["retry"]["max_attempts"] == 4


async def test_non_retryable_failures_make_no_proposal(warehouse: Warehouse):
    warehouse.insert(calls(300, 0.5, fail="404"))
    assert await RetryDetector().scan(window_of(warehouse)) == []


async def test_classes_the_step_declares_non_retryable_make_no_proposal(warehouse: Warehouse):
    warehouse.insert(calls(300, 0.5))
    context = orders(retry="{max_attempts: 1, non_retryable: [HttpStatusError]}")
    assert await RetryDetector().scan(window_of(warehouse, context)) == []


async def test_too_few_attempts_make_no_proposal(warehouse: Warehouse):
    warehouse.insert(calls(15, 0.5))
    assert await RetryDetector().scan(window_of(warehouse)) == []
    assert math.isclose(CriticSettings().min_attempts, 20)


async def test_enough_attempts_already_make_no_proposal(warehouse: Warehouse):
    warehouse.insert(calls(300, 0.3, max_attempts=5))
    context = orders(retry="{max_attempts: 5}")
    assert await RetryDetector().scan(window_of(warehouse, context)) == []


async def test_only_the_live_versions_attempts_against_its_policy(warehouse: Warehouse):
    # Version 2 did not retry and failed 48 % of the time; version 3, live, retries up to 7
    # times: 0.48 ** 7 = 0.6 %, under the target. Nothing to propose.
    warehouse.insert(calls(400, 0.48, version=2, prefix="old"))
    warehouse.insert(calls(100, 0.48, max_attempts=7, seed=2, version=3, prefix="new"))
    context = orders(retry="{max_attempts: 7}")
    assert await RetryDetector().scan(window_of(warehouse, context)) == []

    # The same live version still fails too often at 2 attempts: the figures are its own.
    live = calls(300, 0.48, max_attempts=2, seed=3, version=3, prefix="two")
    warehouse.insert(live)
    context = orders(retry="{max_attempts: 2}")
    [finding] = await RetryDetector().scan(window_of(warehouse, context))
    assert finding.evidence.figures["calls"] == 100 + 300  # not the 400 of version 2
    assert not {r for r in finding.evidence.runs if r.startswith("old-")}
    assert "2 attempts ran out" in finding.diagnosis


async def test_the_live_version_with_too_few_attempts_makes_no_proposal(warehouse: Warehouse):
    warehouse.insert(calls(400, 0.48, version=2, prefix="old"))
    warehouse.insert(calls(10, 0.48, version=3, prefix="new"))
    assert await RetryDetector().scan(window_of(warehouse)) == []


def test_a_recovery_sample_of_no_calls_is_refused_at_start(monkeypatch: pytest.MonkeyPatch):
    """`REFLUX_CRITIC_RECOVERY_CALLS` divides the recovered calls: 0 is a clear error when the
    settings load, never a division by zero mid-scan."""
    monkeypatch.setenv("REFLUX_CRITIC_RECOVERY_CALLS", "0")
    with pytest.raises(ValidationError, match="recovery_calls"):
        CriticSettings()
