"""retry: steps whose calls still fail with transient (retryable) errors once their
attempts run out, and the fewest attempts that would bring them under the target.

From the scan's shared profile (`Window.profile`: per workflow, step, attempt number,
status, error class and the node's own `retryable` flag; the live version's attempts only,
judged against the live version's policy), attempt by attempt k:
- n_k attempts numbered k; p_k = the share of them that failed retryably, q_k = the share
  that failed for good;
- a failure is retryable when the node said so (`context.retryable = 'true'`), or said
  nothing and its class is one the platform retries (`RETRYABLE`); never when the step's
  `retry.non_retryable` names the class (it fails at once, whatever max_attempts says);
- calls = n_1; failed calls = Σ_k failures_k − Σ_{k≥2} n_k (each failure that was retried
  made attempt k+1); observed failure rate = failed calls / calls.

Expected failure rate with n attempts, assuming each attempt fails independently of the
ones before *given its number* (p_k as observed at attempt k, the last estimate with at
least `ATTEMPT_SAMPLES` attempts beyond): Σ_{k≤n} (Π_{j<k} p_j)·q_k + Π_{k≤n} p_k. The
proposal is the smallest n ≤ `max_attempts_cap` whose retryable part Π p_k is under the
target (failures for good are not retries' to fix), made only when it exceeds the step's
max_attempts.

Interval: the p90 of observed recovery times (from a failed attempt's end to the retried
success's start, per call, from a second query over the candidate steps only, reading
`trace_retries`, their failures and retries alone: a call whose first attempt was ok has
nothing to recover), and at
least the largest `Retry-After` the node reported, in whole seconds (at least 1 s); with
neither, the current interval stays.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from evolution.critic.contrast import attach
from evolution.critic.window import CALLED, StepContext, StepProfile, Window, percent
from evolution.proposals.model import Evidence, Expected, Finding, Query, signature_of
from reflection import rollup

RETRYABLE = frozenset(
    {"NoRespondersError", "NodeTimeoutError", "HttpConnectError", "WorkerLost", "ObjectStoreError"}
)
"""Error classes retried when the trace carries no `retryable` flag (older events, and
errors raised outside a node: a lost worker, the object store)."""
ATTEMPT_SAMPLES = 10
"""Attempts numbered k needed before p_k is taken as measured; fewer: the last measured
p carries on."""
RECOVERY_QUANTILE = 0.9

RECOVERY_SQL = """
SELECT workflow_id, step_id, count() AS recoveries,
       quantileExact({quantile})(gap_ms) AS recovery_ms
FROM (
    SELECT workflow_id, step_id,
           dateDiff('millisecond', maxIf(`end`, status != 'ok'), minIf(start, status = 'ok'))
               AS gap_ms
    FROM {retries}
    WHERE {where} AND status IN {called} AND cityHash64(run_id) % {{one_in:UInt64}} = 0
    GROUP BY workflow_id, step_id, run_id, item
    HAVING countIf(status = 'ok') > 0 AND countIf(status != 'ok') > 0
)
WHERE gap_ms >= 0
GROUP BY workflow_id, step_id
"""
"""Over `trace_retries` (`reflection.rollup`: failures and the retries after them, narrow),
the one question of a scan the per-minute rollup cannot answer: a call's attempts side by
side."""


@dataclass
class Attempts:
    """One step's attempts in the window, by attempt number."""

    total: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    retryable: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    final: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    classes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Retryable failures by error class."""
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """HTTP statuses of retryable failures (an HTTP node's `context.status`)."""
    retry_after: float = 0.0
    runs: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.total.get(1, 0)

    @property
    def retried(self) -> int:
        """Attempts after a call's first: at least the calls that were retried."""
        return sum(n for k, n in self.total.items() if k >= 2)

    @property
    def recovered(self) -> int:
        """Ok attempts after a call's first: the calls a retry recovered."""
        return sum(
            n - self.retryable.get(k, 0) - self.final.get(k, 0)
            for k, n in self.total.items()
            if k >= 2
        )

    @property
    def failed_calls(self) -> int:
        failures = sum(self.retryable.values()) + sum(self.final.values())
        return max(failures - self.retried, 0)

    def rates(self, n: int) -> tuple[list[float], list[float]]:
        """(p_k, q_k) for k = 1..n: as observed where measured, the last measured beyond."""
        p: list[float] = []
        q: list[float] = []
        last = (0.0, 0.0)
        for k in range(1, n + 1):
            count = self.total.get(k, 0)
            if count >= ATTEMPT_SAMPLES or (k == 1 and count):
                last = (self.retryable.get(k, 0) / count, self.final.get(k, 0) / count)
            p.append(last[0])
            q.append(last[1])
        return p, q

    def expected(self, n: int) -> tuple[float, float]:
        """(expected failure rate, its retryable part) with n attempts."""
        p, q = self.rates(n)
        reach, total = 1.0, 0.0
        for pk, qk in zip(p, q, strict=True):
            total += reach * qk
            reach *= pk
        return total + reach, reach


class RetryDetector:
    kind = "retry"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        profile = await window.profile()
        steps = _collect(window, profile.steps)
        candidates = {key: a for key, a in steps.items() if self._worth(window, key, a)}
        if not candidates:
            return []
        recovery, recovery_query, one_in = await self._recovery(window, candidates)
        findings = []
        for (workflow_id, step_id), attempts in sorted(candidates.items()):
            recovered = recovery.get((workflow_id, step_id))
            queries = [profile.query, *([recovery_query] if recovered else [])]
            finding = await self._finding(
                window, workflow_id, step_id, attempts, recovered, queries, one_in
            )
            if finding is not None:
                await attach(window, finding)
                findings.append(finding)
        return findings

    def _worth(self, window: Window, key: tuple[str, str], attempts: Attempts) -> bool:
        settings = window.settings
        if sum(attempts.total.values()) < settings.min_attempts or not attempts.calls:
            return False
        observed = attempts.failed_calls / attempts.calls
        return observed > settings.target_failure_rate and sum(attempts.retryable.values()) > 0

    async def _recovery(
        self, window: Window, candidates: dict[tuple[str, str], Attempts]
    ) -> tuple[dict[tuple[str, str], tuple[int, float]], Query, int]:
        """(recovered calls read, p90 recovery ms) of each candidate step that has one, the
        query, and `one_in`: one run in so many was read."""
        steps = window.of_steps(candidates)
        recovered = min((a.recovered for a in candidates.values() if a.recovered), default=0)
        one_in = max(recovered // window.settings.recovery_calls, 1)
        sql = RECOVERY_SQL.format(
            where=steps.where, called=CALLED, quantile=RECOVERY_QUANTILE, retries=rollup.RETRIES
        )
        records, query = await window.run(sql, steps.params | {"one_in": one_in})
        found = {
            (r["workflow_id"], r["step_id"]): (int(r["recoveries"]), float(r["recovery_ms"]))
            for r in records
        }
        return found, query, one_in

    async def _finding(
        self,
        window: Window,
        workflow_id: str,
        step_id: str,
        attempts: Attempts,
        recovery: tuple[int, float] | None,
        queries: list[Query],
        one_in: int,
    ) -> Finding | None:
        settings = window.settings
        step = window.step(workflow_id, step_id)
        assert step is not None
        current_n = step.retry.max_attempts
        proposed = next(
            (
                n
                for n in range(1, settings.max_attempts_cap + 1)
                if attempts.expected(n)[1] <= settings.target_failure_rate
            ),
            settings.max_attempts_cap,
        )
        if proposed <= current_n:
            return None
        observed = attempts.failed_calls / attempts.calls
        expected, _ = attempts.expected(proposed)
        interval = _interval(step, attempts, recovery)
        patch: dict[str, Any] = {"max_attempts": proposed}
        if interval is not None:
            patch["initial_interval"] = f"{interval}s"
        p, _ = attempts.rates(max(attempts.total))
        what = _what(attempts)
        workflow = window.workflows[workflow_id]
        first_p = p[0]
        figures = {
            "calls": attempts.calls,
            "attempts": sum(attempts.total.values()),
            "failed_calls": attempts.failed_calls,
            "observed_failure_rate": round(observed, 4),
            "retryable_failure_share_by_attempt": {
                str(k): round(attempts.retryable.get(k, 0) / n, 4)
                for k, n in sorted(attempts.total.items())
            },
            "attempts_by_number": {str(k): n for k, n in sorted(attempts.total.items())},
            "retryable_errors": dict(attempts.classes),
            "http_statuses": dict(attempts.statuses),
            "current_max_attempts": current_n,
            "proposed_max_attempts": proposed,
            "expected_failure_rate": round(expected, 6),
            "retry_after_s": attempts.retry_after,
            "recoveries": recovery[0] if recovery else 0,
            "recoveries_of_runs_one_in": one_in,
            "recovery_p90_ms": recovery[1] if recovery else None,
            "current_initial_interval_s": step.retry.initial_interval,
        }
        reached = attempts.expected(proposed)[1] <= settings.target_failure_rate
        interval_text = ""
        if interval is not None:
            why = (
                "the node's Retry-After"
                if attempts.retry_after >= interval
                else "the recovery seen"
            )
            interval_text = f" Waiting {interval}s before the first retry covers {why}."
        diagnosis = (
            f"{percent(observed)} of {step_id}'s {attempts.calls} calls in the window failed, "
            f"with {what} once its {current_n} attempt{'s' if current_n != 1 else ''} ran out. "
            f"An attempt fails retryably {percent(first_p)} of the time"
            + (f" at the first try ({attempts.total[1]} attempts)" if len(p) > 1 else "")
            + f"; assuming attempts fail independently, {proposed} attempts bring the failure "
            f"rate to {percent(expected)}"
            + ("" if reached else f", still above the {percent(settings.target_failure_rate)} "
               f"target at the cap of {settings.max_attempts_cap}")
            + "."
            + interval_text
        )  # fmt: skip
        return Finding(
            kind="retry",
            workflow_id=workflow_id,
            workflow_version=workflow.version,
            namespace=workflow.namespace,
            step_id=step_id,
            node=step.node_ref,
            title=(
                f"Retry {step_id} up to {proposed} times: {percent(observed)} of its calls "
                f"fail with {what}"
            ),
            diagnosis=diagnosis,
            mutation=[{"op": "set_policy", "step": step_id, "retry": patch}],
            evidence=Evidence(
                queries=queries,
                figures=figures,
                runs=attempts.runs[: settings.example_runs],
            ),
            expected=Expected(
                metric="error_rate",
                current=round(observed, 4),
                expected=round(expected, 6),
                basis=(
                    f"p = {first_p:.2f} per attempt over {sum(attempts.total.values())} "
                    f"attempts ({attempts.calls} calls), attempt by attempt, independent"
                ),
            ),
            signature=signature_of(
                "retry", workflow.namespace, workflow_id, step_id, "retryable failures exhausted"
            ),
        )


def _collect(
    window: Window, profiles: dict[tuple[str, str], StepProfile]
) -> dict[tuple[str, str], Attempts]:
    steps: dict[tuple[str, str], Attempts] = {}
    for key, profile in profiles.items():
        step = window.step(*key)
        assert step is not None  # the profile holds the live versions' steps only
        attempts = steps.setdefault(key, Attempts())
        for g in profile.groups:
            attempts.total[g.attempt] += g.count
            if g.status == "ok":
                continue
            if _retryable(step, g.error_class, g.retryable):
                attempts.retryable[g.attempt] += g.count
                attempts.classes[g.error_class or g.status] += g.count
                if g.http_status:
                    attempts.statuses[g.http_status] += g.count
                attempts.retry_after = max(attempts.retry_after, g.retry_after_s)
            else:
                attempts.final[g.attempt] += g.count
            attempts.runs += [run for run in g.runs if run not in attempts.runs]
    return steps


def _retryable(step: StepContext, error_class: str, flag: str) -> bool:
    if error_class in step.retry.non_retryable:
        return False
    if flag:
        return flag == "true"
    return error_class in RETRYABLE


def _interval(
    step: StepContext, attempts: Attempts, recovery: tuple[int, float] | None
) -> int | None:
    """Whole seconds the first retry should wait, when more than it does now."""
    needed = max(attempts.retry_after, recovery[1] / 1000 if recovery else 0.0)
    if needed <= 0:
        return None
    seconds = max(math.ceil(needed - 1e-9), 1)
    return seconds if seconds > step.retry.initial_interval else None


def _what(attempts: Attempts) -> str:
    """The main retryable failure in words: "a transient 503", "NodeTimeoutError"."""
    if attempts.statuses:
        return f"a transient {max(attempts.statuses, key=lambda s: attempts.statuses[s])}"
    if not attempts.classes:
        return "transient errors"
    top = max(attempts.classes, key=lambda c: attempts.classes[c])
    return f"a transient {top}"
