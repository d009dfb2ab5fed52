"""cache: steps that cannot write, have no cache, and are called again and again with the
same inputs (the same `inputs_hash`: node version, resolved params, namespace).

Candidates come from the scan's shared profile (`Window.profile`, the live version's
attempts only): steps a cache could serve whose distinct inputs leave room for the minimum
hit rate and saving. Then one aggregate over those steps only: per workflow, step and
inputs hash, the ok calls (cache hits left out), their latency and the mean time between
repeats of that input; then per step the calls, distinct inputs and, for each TTL of
`TTLS`, the repeats whose input came back within it on average (those a cache of that TTL
would have answered).

TTL rule: twice the median time between repeats, rounded up to the next of `TTLS` (1 m to
1 h). Expected hit rate: repeats within that TTL / calls (window-wide, an input's first
call always misses). Proposed only at or above `cache_min_hit_rate`, and only when the
expected saving per call, hit rate × (mean ok latency − `cache_hit_ms`), is at least
`cache_min_saving_ms` (5 ms) and at least `cache_min_saving_share` (20 %) of the mean: a
lookup costs about a millisecond, so caching a step that takes none saves nothing.
Expected latency: mean × (1 − hit rate) + hit rate × `cache_hit_ms`. No contrast: it
explains failures, and a cache proposal is not about them.
"""

from __future__ import annotations

from typing import Any

from evolution.critic.window import (
    CriticSettings,
    StepProfile,
    Window,
    cacheable,
    percent,
    readable_duration,
)
from evolution.proposals.model import Evidence, Expected, Finding, signature_of

TTLS = (60, 300, 900, 3600)
"""TTLs (seconds) a cache proposal chooses from."""

REPEATS_SQL = """
SELECT workflow_id, step_id,
       sum(n) AS calls,
       count() AS inputs,
       sum(latency_sum) / sum(n) AS mean_ms,
       quantileExactIf(0.5)(gap_s, n > 1) AS median_gap_s,
       groupUniqArrayIf({{examples:UInt32}})(run, n > 1) AS runs,
       {within}
FROM (
    SELECT workflow_id, step_id, inputs_hash,
           count() AS n,
           any(run_id) AS run,
           sum(latency_ms) AS latency_sum,
           if(n > 1, dateDiff('millisecond', min(start), max(start)) / 1000 / (n - 1), 0)
               AS gap_s
    FROM traces
    WHERE {where} AND status = 'ok' AND NOT cache_hit AND inputs_hash != ''
    GROUP BY workflow_id, step_id, inputs_hash
)
GROUP BY workflow_id, step_id
ORDER BY workflow_id, step_id
"""
WITHIN = ",\n       ".join(
    f"sumIf(n - 1, n > 1 AND gap_s <= {ttl}) AS repeats_{ttl}" for ttl in TTLS
)


REPEAT_SLACK = 1.05
"""The profile's distinct inputs are `uniq`'s estimate (within a few percent): a step is a
candidate when it could pass with this many fewer; the exact figures decide."""


class CacheDetector:
    kind = "cache"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        profile = await window.profile()
        candidates = [key for key, step in profile.steps.items() if _candidate(window, step)]
        if not candidates:
            return []
        steps = window.of_steps(candidates)
        sql = REPEATS_SQL.format(where=steps.where, within=WITHIN)
        params = {**steps.params, "examples": window.settings.example_runs}
        records, query = await window.run(sql, params)
        findings = []
        for r in records:
            finding = _finding(window, r)
            if finding is None:
                continue
            finding.evidence.queries = [profile.query, query]
            findings.append(finding)  # no contrast: repeats are not failures to explain
        return findings


def _candidate(window: Window, step: StepProfile) -> bool:
    """What the profile alone rules out: steps a cache cannot serve, too few calls, too few
    repeats even if every one were a hit, or too little to save."""
    settings = window.settings
    context = window.step(step.workflow_id, step.step_id)
    if context is None or not cacheable(context) or step.ok < settings.min_attempts:
        return False
    best = 1 - step.inputs / REPEAT_SLACK / step.ok
    return best >= settings.cache_min_hit_rate and _saves(settings, best, step.ok_mean_ms)


def _saves(settings: CriticSettings, rate: float, mean_ms: float) -> bool:
    """Whether answering `rate` of the calls from the cache saves enough per call."""
    saving = rate * (mean_ms - settings.cache_hit_ms)
    return (
        saving >= settings.cache_min_saving_ms
        and saving >= settings.cache_min_saving_share * mean_ms
    )


def _finding(window: Window, r: dict[str, Any]) -> Finding | None:
    settings = window.settings
    step = window.step(r["workflow_id"], r["step_id"])
    calls = int(r["calls"])
    if step is None or not cacheable(step):
        return None
    if calls < settings.min_attempts:
        return None
    gap = float(r["median_gap_s"] or 0)
    ttl = next((t for t in TTLS if t >= 2 * gap), TTLS[-1])
    hits = int(r[f"repeats_{ttl}"])
    rate = hits / calls
    mean = float(r["mean_ms"])
    if rate < settings.cache_min_hit_rate or not _saves(settings, rate, mean):
        return None
    expected = mean * (1 - rate) + rate * settings.cache_hit_ms
    text = readable_duration(ttl)
    inputs = int(r["inputs"])
    workflow = window.workflows[r["workflow_id"]]
    step_id = step.step_id
    return Finding(
        kind="cache",
        workflow_id=workflow.workflow_id,
        workflow_version=workflow.version,
        namespace=workflow.namespace,
        step_id=step_id,
        node=step.node_ref,
        title=f"Cache {step_id} for {text}: {percent(rate)} of its calls repeat an earlier one",
        diagnosis=(
            f"{step_id} ({step.node_ref}, effects {step.effects}) made {calls} successful calls "
            f"in the window with only {inputs} distinct inputs; the same input came back every "
            f"{gap:.0f}s (median). A {text} cache would have answered {hits} of them "
            f"({percent(rate)}), saving about {mean - expected:.0f} ms per call on average."
        ),
        mutation=[{"op": "set_policy", "step": step_id, "cache": {"ttl": text}}],
        evidence=Evidence(
            runs=list(r["runs"])[: settings.example_runs],
            figures={
                "calls": calls,
                "distinct_inputs": inputs,
                "repeat_share": round(1 - inputs / calls, 4),
                "median_repeat_gap_s": round(gap, 3),
                "ttl_s": ttl,
                "hits_within_ttl": hits,
                "expected_hit_rate": round(rate, 4),
                "mean_latency_ms": round(mean, 3),
            },
        ),
        expected=Expected(
            metric="latency_ms",
            current=round(mean, 3),
            expected=round(expected, 3),
            basis=(
                f"{hits} of {calls} calls repeat an input within {text} "
                f"({inputs} distinct inputs); a hit costs ~{settings.cache_hit_ms:g} ms"
            ),
        ),
        signature=signature_of(
            "cache", workflow.namespace, workflow.workflow_id, step_id, "repeats"
        ),
    )
