"""cache: steps that cannot write, have no cache, and are called again and again with the
same inputs (the same `inputs_hash`: node version, resolved params, namespace).

Everything comes from the scan's shared profile (`Window.profile`, the live version's
attempts only, from the per-minute rollup): per step a cache could serve, the ok calls the
node answered with an inputs hash (cache hits left out), their distinct inputs
(HyperLogLog, within ~2 %), the mean ok latency, the span from the first to the last, and
example runs. No query of its own.

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


class CacheDetector:
    kind = "cache"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        profile = await window.profile()
        findings = []
        for step in profile.steps.values():
            finding = _finding(window, step)
            if finding is not None:
                finding.evidence.queries = [profile.query]
                findings.append(finding)  # no contrast: repeats are not failures to explain
        return findings


def _saves(settings: CriticSettings, rate: float, mean_ms: float) -> bool:
    """Whether answering `rate` of the calls from the cache saves enough per call."""
    saving = rate * (mean_ms - settings.cache_hit_ms)
    return (
        saving >= settings.cache_min_saving_ms
        and saving >= settings.cache_min_saving_share * mean_ms
    )


def _finding(window: Window, profile: StepProfile) -> Finding | None:
    settings = window.settings
    step = window.step(profile.workflow_id, profile.step_id)
    calls = profile.repeats
    if step is None or not cacheable(step) or calls < settings.min_attempts:
        return None
    inputs = min(profile.inputs, calls)
    span = profile.repeats_span_s
    gap = span * inputs / calls
    ttl = next((t for t in TTLS if t >= 2 * gap), TTLS[-1])
    hits = max(calls - inputs * (1 + math.floor(span / ttl)), 0)
    rate = hits / calls
    mean = profile.ok_mean_ms
    if rate < settings.cache_min_hit_rate or not _saves(settings, rate, mean):
        return None
    expected = mean * (1 - rate) + rate * settings.cache_hit_ms
    text = readable_duration(ttl)
    workflow = window.workflows[profile.workflow_id]
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
            runs=profile.runs("ok")[: settings.example_runs],
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
