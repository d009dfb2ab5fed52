"""cache: steps that cannot write, have no cache, and are called again and again with the
same inputs (the same `inputs_hash`: node version, resolved params, namespace).

Candidates come from the scan's shared profile (`Window.profile`, the live version's
attempts only): steps a cache could serve whose distinct inputs leave room for the minimum
hit rate and saving. Then one aggregate over the rollup (`trace_minutes`) for those steps
only: per workflow and step, the ok calls the node answered (cache hits left out), their
distinct inputs (HyperLogLog, within ~2 %), mean latency, the span from the first to the
last, and example runs.

Repeats, from those figures, taking each input to come back at a steady rate over the span
(what a rollup can say; the per-input times are in the raw traces only): an input recurs
every span × inputs / calls seconds on average. TTL rule: twice that gap, rounded up to the
next of `TTLS` (1 m to 1 h). A cache of that TTL misses each input's first call and its
first call after every expiry: inputs × (1 + ⌊span / TTL⌋) misses, the rest hits.
Expected hit rate: hits / calls. Proposed only at or above `cache_min_hit_rate`, and only
when the expected saving per call, hit rate × (mean ok latency − `cache_hit_ms`), is at
least `cache_min_saving_ms` (5 ms) and at least `cache_min_saving_share` (20 %) of the mean:
a lookup costs about a millisecond, so caching a step that takes none saves nothing.
Expected latency: mean × (1 − hit rate) + hit rate × `cache_hit_ms`. No contrast: it
explains failures, and a cache proposal is not about them.
"""

from __future__ import annotations

import math
from typing import Any

from evolution.critic.window import (
    ROLLUP,
    CriticSettings,
    StepProfile,
    Window,
    cacheable,
    percent,
    readable_duration,
)
from evolution.proposals.model import Evidence, Expected, Finding, signature_of
from reflection import rollup

TTLS = (60, 300, 900, 3600)
"""TTLs (seconds) a cache proposal chooses from."""

REPEATS_SQL = """
SELECT workflow_id, step_id,
       sum(attempts) AS calls,
       uniqHLL12Merge(inputs) AS inputs,
       sum(latency_sum) / sum(attempts) AS mean_ms,
       dateDiff('millisecond', min(first_start), max(last_start)) / 1000 AS span_s,
       arraySlice(groupUniqArrayMerge({examples_kept})(runs), 1, {{examples:UInt32}}) AS runs
FROM {rollup}
WHERE {where} AND status = 'ok' AND NOT cache_hit AND hashed
GROUP BY workflow_id, step_id
ORDER BY workflow_id, step_id
"""


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
        sql = REPEATS_SQL.format(where=steps.where, rollup=ROLLUP, examples_kept=rollup.EXAMPLES)
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
    best = (step.ok - step.inputs) / step.ok  # every repeat a hit: a cache that never expires
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
    inputs = min(int(r["inputs"]), calls)
    span = float(r["span_s"] or 0)
    gap = span * inputs / calls
    ttl = next((t for t in TTLS if t >= 2 * gap), TTLS[-1])
    hits = max(calls - inputs * (1 + math.floor(span / ttl)), 0)
    rate = hits / calls
    mean = float(r["mean_ms"])
    if rate < settings.cache_min_hit_rate or not _saves(settings, rate, mean):
        return None
    expected = mean * (1 - rate) + rate * settings.cache_hit_ms
    text = readable_duration(ttl)
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
            f"in the window with only {inputs} distinct inputs; the same input came back about "
            f"every {gap:.0f}s. A {text} cache would have answered {hits} of them "
            f"({percent(rate)}), saving about {mean - expected:.0f} ms per call on average."
        ),
        mutation=[{"op": "set_policy", "step": step_id, "cache": {"ttl": text}}],
        evidence=Evidence(
            runs=list(r["runs"])[: settings.example_runs],
            figures={
                "calls": calls,
                "distinct_inputs": inputs,
                "repeat_share": round(1 - inputs / calls, 4),
                "mean_repeat_gap_s": round(gap, 3),
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
                f"{hits} of {calls} calls would find their input cached by a {text} cache "
                f"({inputs} distinct inputs over {readable_duration(span)}); "
                f"a hit costs ~{settings.cache_hit_ms:g} ms"
            ),
        ),
        signature=signature_of(
            "cache", workflow.namespace, workflow.workflow_id, step_id, "repeats"
        ),
    )
