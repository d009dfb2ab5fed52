"""cache: steps that cannot write, have no cache, and are called again and again with the
same inputs (the same `inputs_hash`: node version, resolved params, namespace).

One aggregate over the window: per workflow, step and inputs hash, the ok calls (cache
hits left out), their latency and the mean time between repeats of that input; then per
step the calls, distinct inputs and, for each TTL of `TTLS`, the repeats whose input came
back within it on average (those a cache of that TTL would have answered).

TTL rule: twice the median time between repeats, rounded up to the next of `TTLS` (1 m to
1 h). Expected hit rate: repeats within that TTL / calls (window-wide, an input's first
call always misses). Proposed only at or above `cache_min_hit_rate`. Expected latency:
mean × (1 − hit rate) + hit rate × `cache_hit_ms`.
"""

from __future__ import annotations

from typing import Any

from evolution.critic.contrast import contrast
from evolution.critic.window import Window, percent, readable_duration
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


class CacheDetector:
    kind = "cache"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        live = window.live()
        sql = REPEATS_SQL.format(where=live.where, within=WITHIN)
        params = {**live.params, "examples": window.settings.example_runs}
        records, query = await window.run(sql, params)
        findings = []
        for r in records:
            finding = _finding(window, r)
            if finding is None:
                continue
            rows, contrast_query = await contrast(window, r["workflow_id"], r["step_id"])
            finding.evidence.queries = [query, contrast_query]
            finding.evidence.contrast = rows
            findings.append(finding)
        return findings


def _finding(window: Window, r: dict[str, Any]) -> Finding | None:
    settings = window.settings
    step = window.step(r["workflow_id"], r["step_id"])
    calls = int(r["calls"])
    if step is None or step.writes or step.cache_ttl is not None or step.uses_secrets:
        return None
    if calls < settings.min_attempts:
        return None
    gap = float(r["median_gap_s"] or 0)
    ttl = next((t for t in TTLS if t >= 2 * gap), TTLS[-1])
    hits = int(r[f"repeats_{ttl}"])
    rate = hits / calls
    if rate < settings.cache_min_hit_rate:
        return None
    mean = float(r["mean_ms"])
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
