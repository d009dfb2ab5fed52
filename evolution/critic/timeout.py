"""timeout: a step's limit against the latencies it actually needs, both ways.

From the scan's shared profile (`Window.profile`, the live version's attempts only, against
its limit), per workflow and step: attempts, timeouts (`status = 'timeout'`), and the ok
latencies' p50, p99, p99.9 and max (cache hits left out: they say nothing of the node).
No query of its own; a longer limit gets the contrast of the attempts that timed out, a
shorter one none (there is no failure to explain).

- Too tight: timeouts are at least `timeout_share` of the attempts (and `timeout_min` of
  them) while the ok p99 is above `timeout_near` × the limit, i.e. the successful calls'
  tail runs into it. Proposed: p99.9 × `timeout_headroom`, rounded up ("12s"). Expected
  timeout share with it: an exponential tail through two points of the attempts' survival
  curve, S(ok p99) and S(limit) = the timeout share, carried on to the new limit (what a
  limit cuts off cannot be observed; this is the simplest tail that fits both).
- Too loose: no timeout in the window and at least `min_attempts` ok attempts. Proposed:
  the slowest ok attempt × `timeout_tight` (10), rounded up to a readable duration and
  never below `timeout_floor_s` (10 s), made only when the current limit is at least
  `timeout_loose` (5) × that proposal: a hung call then fails (and is retried) much
  sooner, while a limit near what calls need, or a few seconds saved, is not worth a
  change that turns a slow day into failures. So a 300 s limit over calls of at most
  30 ms becomes 10 s; a 30 s limit over the same calls stays (30 < 5 × 10 s).
"""

from __future__ import annotations

import math
from typing import Any

from evolution.critic.contrast import attach
from evolution.critic.window import StepProfile, Window, percent, readable_duration
from evolution.proposals.model import Evidence, Expected, Finding, Query, signature_of
from infra import parse_duration


class TimeoutDetector:
    kind = "timeout"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        profile = await window.profile()
        findings = []
        for key, step in sorted(profile.steps.items()):
            context = window.step(*key)
            assert context is not None
            if step.attempts < window.settings.min_attempts:
                continue
            finding = _tight(window, step, context.timeout) or _loose(window, step, context.timeout)
            if finding is None:
                continue
            finding.evidence.queries.insert(0, profile.query)
            if step.timeouts:  # a longer limit: what the timed-out attempts share
                await attach(window, finding)
            findings.append(finding)
        return findings


def _figures(step: StepProfile, limit: float) -> dict[str, Any]:
    return {
        "attempts": step.attempts,
        "timeouts": step.timeouts,
        "failures": step.failures,
        "ok": step.ok,
        "ok_p50_ms": step.ok_p50_ms,
        "ok_p99_ms": step.ok_p99_ms,
        "ok_p999_ms": step.ok_p999_ms,
        "ok_max_ms": step.ok_max_ms,
        "timeout_mean_ms": step.timeout_mean_ms,
        "limit_s": limit,
    }


def _tight(window: Window, step: StepProfile, limit: float) -> Finding | None:
    settings = window.settings
    figures = _figures(step, limit)
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
    step_id = step.step_id
    return _finding(
        window,
        step,
        step.runs("timeout"),
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


def _loose(window: Window, step: StepProfile, limit: float) -> Finding | None:
    settings = window.settings
    figures = _figures(step, limit)
    slowest = figures["ok_max_ms"]
    if figures["timeouts"] or figures["ok"] < settings.min_attempts or slowest <= 0:
        return None
    text = readable_duration(
        slowest * settings.timeout_tight / 1000, at_least=settings.timeout_floor_s
    )
    proposed = parse_duration(text)
    if limit < settings.timeout_loose * proposed:
        return None
    figures["proposed_limit_s"] = proposed
    step_id = step.step_id
    return _finding(
        window,
        step,
        [step.slowest_run],  # the example: the slowest call
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
            f"{settings.timeout_tight:g}× the slowest call seen (never under "
            f"{settings.timeout_floor_s:g}s), and the current limit is "
            f"{limit / proposed:.0f}× that."
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
    profile: StepProfile,
    runs: list[str],
    direction: str,
    *,
    title: str,
    diagnosis: str,
    mutation: dict[str, Any],
    expected: Expected,
    figures: dict[str, Any],
) -> Finding:
    workflow = window.workflows[profile.workflow_id]
    step = workflow.steps[profile.step_id]
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
            runs=[run for run in runs if run][: window.settings.example_runs],
        ),
        expected=expected,
        signature=signature_of(
            "timeout", workflow.namespace, workflow.workflow_id, step.step_id, direction
        ),
    )
