"""timeout: a step's limit against the latencies it actually needs, both ways.

From one aggregate over the window per workflow and step: attempts, timeouts
(`status = 'timeout'`), and the ok latencies' p50, p99, p99.9 and max (cache hits left
out: they say nothing of the node).

- Too tight: timeouts are at least `timeout_share` of the attempts (and `timeout_min` of
  them) while the ok p99 is above `timeout_near` × the limit, i.e. the successful calls'
  tail runs into it. Proposed: p99.9 × `timeout_headroom`, rounded up ("12s"). Expected
  timeout share with it: an exponential tail through two points of the attempts' survival
  curve, S(ok p99) and S(limit) = the timeout share, carried on to the new limit (what a
  limit cuts off cannot be observed; this is the simplest tail that fits both).
- Too loose: no timeout in the window, at least `min_attempts` ok attempts, and the limit
  above `timeout_loose` × the slowest ok attempt. Proposed: that max × `timeout_tight`,
  rounded up, at least 1 s: a hung call then fails (and is retried) that much sooner.
"""

from __future__ import annotations

import math
from typing import Any

from evolution.critic.contrast import contrast
from evolution.critic.window import CALLED, FAILED, Window, percent, readable_duration
from evolution.proposals.model import Evidence, Expected, Finding, Query, signature_of
from infra import parse_duration

LATENCY_SQL = """
SELECT workflow_id, step_id,
       count() AS attempts,
       countIf(status = 'timeout') AS timeouts,
       countIf(status IN {failed}) AS failures,
       countIf(status = 'ok' AND NOT cache_hit) AS ok,
       quantilesExactIf(0.5, 0.99, 0.999)(latency_ms, status = 'ok' AND NOT cache_hit) AS ok_q,
       maxIf(latency_ms, status = 'ok' AND NOT cache_hit) AS ok_max_ms,
       quantileExactIf(0.5)(latency_ms, status = 'timeout') AS timeout_p50_ms,
       groupUniqArrayIf({{examples:UInt32}})(run_id, status = 'timeout') AS runs,
       argMaxIf(run_id, latency_ms, status = 'ok' AND NOT cache_hit) AS slowest_run
FROM traces
WHERE {where} AND status IN {called}
GROUP BY workflow_id, step_id
ORDER BY workflow_id, step_id
"""


class TimeoutDetector:
    kind = "timeout"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        live = window.live()
        sql = LATENCY_SQL.format(where=live.where, failed=FAILED, called=CALLED)
        params = {**live.params, "examples": window.settings.example_runs}
        records, query = await window.run(sql, params)
        findings = []
        for r in records:
            step = window.step(r["workflow_id"], r["step_id"])
            if step is None or int(r["attempts"]) < window.settings.min_attempts:
                continue
            finding = _tight(window, r, step.timeout) or _loose(window, r, step.timeout)
            if finding is None:
                continue
            finding.evidence.queries.insert(0, query)
            rows, contrast_query = await contrast(window, r["workflow_id"], r["step_id"])
            finding.evidence.contrast = rows
            finding.evidence.queries.append(contrast_query)
            findings.append(finding)
        return findings


def _figures(r: dict[str, Any], limit: float) -> dict[str, Any]:
    p50, p99, p999 = (float(v) for v in r["ok_q"])
    return {
        "attempts": int(r["attempts"]),
        "timeouts": int(r["timeouts"]),
        "failures": int(r["failures"]),
        "ok": int(r["ok"]),
        "ok_p50_ms": p50,
        "ok_p99_ms": p99,
        "ok_p999_ms": p999,
        "ok_max_ms": float(r["ok_max_ms"]),
        "timeout_p50_ms": float(r["timeout_p50_ms"]) if int(r["timeouts"]) else None,
        "limit_s": limit,
    }


def _tight(window: Window, r: dict[str, Any], limit: float) -> Finding | None:
    settings = window.settings
    figures = _figures(r, limit)
    attempts, timeouts = figures["attempts"], figures["timeouts"]
    share = timeouts / attempts
    limit_ms = limit * 1000
    p99 = figures["ok_p99_ms"]
    if timeouts < settings.timeout_min or share < settings.timeout_share or not figures["ok"]:
        return None
    if p99 <= settings.timeout_near * limit_ms:
        return None
    text = readable_duration(max(figures["ok_p999_ms"], p99) * settings.timeout_headroom / 1000)
    proposed = parse_duration(text)
    if proposed <= limit:
        return None
    expected_share = _tail(figures, limit_ms, proposed * 1000)
    error_rate = figures["failures"] / attempts
    expected = max(error_rate - share + expected_share, 0.0)
    figures |= {"timeout_share": round(share, 4), "proposed_limit_s": proposed,
                "expected_timeout_share": round(expected_share, 6)}  # fmt: skip
    step_id = r["step_id"]
    return _finding(
        window,
        r,
        "longer",
        title=(
            f"Give {step_id} {text} instead of {limit:g}s: "
            f"{percent(share)} of its attempts time out"
        ),
        diagnosis=(
            f"{timeouts} of {step_id}'s {attempts} attempts in the window ({percent(share)}) "
            f"hit its {limit:g}s limit, while its successful calls' p99 is "
            f"{p99 / 1000:.2f}s ({p99 / limit_ms * 100:.0f} % of the limit): the limit cuts "
            f"into the latencies the step needs. A {text} limit covers the observed p99.9 "
            f"({figures['ok_p999_ms'] / 1000:.2f}s) with {settings.timeout_headroom:g}× headroom."
        ),
        mutation={"op": "set_policy", "step": step_id, "timeout": text},
        expected=Expected(
            metric="error_rate",
            current=round(error_rate, 4),
            expected=round(expected, 6),
            basis=(
                f"{timeouts} timeouts in {attempts} attempts; exponential tail through the ok "
                f"p99 ({p99:.0f} ms) and the {limit:g}s limit"
            ),
        ),
        figures=figures,
    )


def _loose(window: Window, r: dict[str, Any], limit: float) -> Finding | None:
    settings = window.settings
    figures = _figures(r, limit)
    slowest = figures["ok_max_ms"]
    if figures["timeouts"] or figures["ok"] < settings.min_attempts or slowest <= 0:
        return None
    if limit * 1000 <= settings.timeout_loose * slowest:
        return None
    text = readable_duration(slowest * settings.timeout_tight / 1000, at_least=1.0)
    proposed = parse_duration(text)
    if proposed >= limit:
        return None
    figures["proposed_limit_s"] = proposed
    r = {**r, "runs": [r["slowest_run"]]}  # the example: the slowest call
    step_id = r["step_id"]
    return _finding(
        window,
        r,
        "shorter",
        title=(
            f"Limit {step_id} to {text} instead of {limit:g}s: its slowest "
            f"call took {slowest / 1000:.2f}s"
        ),
        diagnosis=(
            f"None of {step_id}'s {figures['attempts']} attempts in the window timed out, and "
            f"the slowest successful one took {slowest:.0f} ms, "
            f"{limit * 1000 / slowest:.0f}× below its {limit:g}s limit. A call that hangs "
            f"waits the whole limit before it fails or is retried; {text} is "
            f"{settings.timeout_tight:g}× the slowest call seen."
        ),
        mutation={"op": "set_policy", "step": step_id, "timeout": text},
        expected=Expected(
            metric="max_wait_s",
            current=limit,
            expected=proposed,
            basis=f"slowest of {figures['ok']} ok attempts: {slowest:.0f} ms, no timeouts",
        ),
        figures=figures,
    )


def _tail(figures: dict[str, Any], limit_ms: float, new_ms: float) -> float:
    """The share of attempts expected past `new_ms`: S(x) = S(limit)·exp(−(x−limit)/θ),
    θ fitted so S(ok p99) matches too."""
    attempts = figures["attempts"]
    at_limit = figures["timeouts"] / attempts
    p99 = figures["ok_p99_ms"]
    at_p99 = 0.01 * figures["ok"] / attempts + at_limit
    if p99 >= limit_ms or at_p99 <= at_limit:
        return at_limit  # no slope to fit: assume nothing improves
    theta = (limit_ms - p99) / math.log(at_p99 / at_limit)
    return at_limit * math.exp(-(new_ms - limit_ms) / theta)


def _finding(
    window: Window,
    r: dict[str, Any],
    direction: str,
    *,
    title: str,
    diagnosis: str,
    mutation: dict[str, Any],
    expected: Expected,
    figures: dict[str, Any],
) -> Finding:
    workflow = window.workflows[r["workflow_id"]]
    step = workflow.steps[r["step_id"]]
    queries: list[Query] = []
    return Finding(
        kind="timeout",
        workflow_id=workflow.workflow_id,
        workflow_version=workflow.version,
        namespace=workflow.namespace,
        step_id=step.step_id,
        node=step.node_ref,
        title=title,
        diagnosis=diagnosis,
        mutation=[mutation],
        evidence=Evidence(
            queries=queries,
            figures=figures,
            runs=list(r["runs"])[: window.settings.example_runs],
        ),
        expected=expected,
        signature=signature_of(
            "timeout", workflow.namespace, workflow.workflow_id, step.step_id, direction
        ),
    )
