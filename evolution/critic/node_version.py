"""node_version: a step that does worse on one node version than on the version before it,
and the rollback that undoes the change.

A step's attempts in the window may run on more than one version of its node: a node
rollout sends a share of runs to a new version, a promotion switches every run
mid-window. One aggregate over the rollup (`reflection.rollup`, `window.ROLLUP`: the live
attempts by the minute) gives each (workflow, step, node, version) its attempts, failed
attempts and a sample of its ok latencies, the median's too (`VERSIONS_SQL`).
It reads a few thousand rows where `traces` holds every attempt, ordered by run so that a
window prunes nothing: over the 1,000,000 events of `bench.scenarios.critic`, ~50 ms where
rebuilding each call from `traces` took ~600 ms. The rollup keeps attempts, not calls, so
the judging is per attempt: a call that failed and then recovered on a retry counts one
failed and one ok attempt (the node's error rate, before the retries hide it). Versions
present with at least `min_attempts` attempts are ordered by semver and each is judged
against the one before it (`evolution.judge`: error rate by Fisher's exact test,
critical; ok latency by Mann-Whitney U with its tolerance band). Only `fail`, the newer
version worse, is a finding. The Critic asks the judge for more certainty than a
validation does (`CRITIC_JUDGE`): it looks at every step of every workflow at once.

The rollback, from the registry's `Catalog` when the detector has one: a rollout of the
worse version is stopped (`rollout … percent 0`); otherwise (a promotion, or no catalog to
tell) the step is pinned to the version before (`replace_node … name@previous`), which
undoes either. When the catalog says the previous version is deprecated there is nothing
to pin to: a `finding` without a mutation; when it says nothing sends runs to the worse
version any more (its rollout was stopped since), there is nothing to roll back and no
finding.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from evolution.critic.contrast import attach
from evolution.critic.window import CALLED, FAILED, FRESH, ROLLUP, Window, percent
from evolution.judge import JudgeConfig, Judgement, Series, judge
from evolution.proposals.model import Evidence, Expected, Finding, Query, signature_of
from reflection import rollup

CRITIC_JUDGE = JudgeConfig(harm_alpha=0.01)
"""The judge as the Critic uses it: "worse" at a family-wise 1 % per compared pair (a
validation's 4 %), since a scan compares every step that ran on two versions."""
LATENCY_SAMPLES = 2000
"""Ok latencies an arm hands the judge at most: Mann-Whitney on 2,000 a side detects a
10 % shift, and Hodges-Lehmann thins to 1,000 anyway."""
SAMPLE_SEED = 1
"""Seeds the shuffle of each stretch's reservoir: the same rollup gives the same sample."""
SAMPLE_STRETCHES = 64
"""The stretches of the window the judge's sample is drawn from, each from its own
reservoir of `rollup.SAMPLE` pairs: 4,096 at most, room above `LATENCY_SAMPLES` for a window
whose traffic varies."""

VERSIONS_SQL = """
WITH intDiv(dateDiff('minute', toStartOfMinute({{start:DateTime64(3, 'UTC')}}), minute),
            {{stretch:UInt32}}) AS stretch,
     groupArraySampleMergeIfResample({sample}, {sample_seed}, 0, {stretches}, 1)(
         sample, {fresh}, stretch) AS reservoirs,
     sumIfResample(0, {stretches}, 1)(attempts, {fresh}, stretch) AS ok_by_stretch,
     greatest(arrayMax(arrayMap((r, n) -> n / greatest(length(r), 1), reservoirs, ok_by_stretch)),
              sumIf(attempts, {fresh}) / {{samples:UInt32}}, 1) AS per_pair,
     arrayFlatten(arrayMap(
         (r, n, upto) -> arraySlice(
             arrayShuffle(r, {{seed:UInt64}}), 1,
             toUInt64(round(upto / per_pair) - round((upto - n) / per_pair))),
         reservoirs, ok_by_stretch, arrayCumSum(ok_by_stretch))) AS ok_sample
SELECT workflow_id, step_id, node, node_version,
       sum(attempts) AS attempted,
       sumIf(attempts, status IN {failed}) AS failed,
       arrayMap(p -> p.1, ok_sample) AS latencies,
       arraySlice(arrayDistinct(arrayMap(p -> p.2, arrayReverseSort(p -> p.1, ok_sample))),
                  1, {{examples:UInt32}}) AS slowest_runs,
       arraySlice(groupUniqArrayMergeIf({examples_kept})(runs, status IN {failed}),
                  1, {{examples:UInt32}}) AS failing_runs,
       min(first_start) AS first_at, max(last_start) AS last_at
FROM {rollup}
WHERE {where} AND status IN {called}
GROUP BY workflow_id, step_id, node, node_version
ORDER BY workflow_id, step_id, node, node_version
"""
"""Each (workflow, step, node, version)'s attempts that reached the node, and the judge's
sample of its ok latencies (attempts the node answered: `FRESH`). A rollup row keeps a
reservoir of `rollup.SAMPLE` (latency, run) pairs and a merge of rows keeps that many again,
so the window is cut into `SAMPLE_STRETCHES` stretches of `stretch` minutes, each merged
into a reservoir of its own (`-Resample`). A stretch then gives pairs in proportion to its
ok attempts, each pair standing for `per_pair` of them: as many as a pair of the most
thinned reservoir stands for, or more when the sample would exceed `LATENCY_SAMPLES`
(rounded on the running sum, so the counts add up). Every ok attempt weighs the same
however the traffic varied over the window; which pairs of a reservoir are kept is a
seeded shuffle (`SAMPLE_SEED`). `slowest_runs`: the sample's slowest runs, slowest first."""


@dataclass(frozen=True)
class Arm:
    """One node version's attempts of one step in the window."""

    node: str
    version: str
    attempts: int
    failed: int
    median_ms: float | None
    """Of `latencies`."""
    latencies: list[float]
    """The judge's sample of its ok latencies (`VERSIONS_SQL`)."""
    slowest: list[str]
    """Run ids of its slowest ok attempts in the sample, slowest first."""
    failing: list[str]
    first_at: str
    last_at: str

    @property
    def rate(self) -> float:
        return self.failed / self.attempts if self.attempts else 0.0

    @property
    def ref(self) -> str:
        return f"{self.node}@{self.version}"

    def figures(self) -> dict[str, Any]:
        """The evidence's figures of the arm (the names findings have always had: `calls`
        and `first_call`/`last_call` are of its attempts)."""
        return {
            "calls": self.attempts,
            "failed": self.failed,
            "error_rate": round(self.rate, 4),
            "median_ok_ms": None if self.median_ms is None else round(self.median_ms, 3),
            "first_call": self.first_at,
            "last_call": self.last_at,
        }


class NodeVersionDetector:
    kind = "node_version"

    def __init__(self, catalog: Any | None = None) -> None:
        """`catalog`: the registry's `Catalog` (versions' statuses and rollouts) to choose
        the rollback by; without one every rollback is a pin of the step."""
        self.catalog = catalog

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        live = window.live()
        sql = VERSIONS_SQL.format(
            where=live.where,
            failed=FAILED,
            called=CALLED,
            fresh=FRESH,
            rollup=ROLLUP,
            sample=rollup.SAMPLE,
            sample_seed=rollup.SAMPLE_SEED,
            examples_kept=rollup.EXAMPLES,
            stretches=SAMPLE_STRETCHES,
        )
        params = {
            **live.params,
            "stretch": _stretch_minutes(window),
            "samples": LATENCY_SAMPLES,
            "seed": SAMPLE_SEED,
            "examples": window.settings.example_runs,
        }
        records, query = await window.run(sql, params)
        findings = []
        for (workflow_id, step_id), arms in sorted(_collect(window, records).items()):
            for baseline, candidate in zip(arms, arms[1:], strict=False):
                judgement = judge(_series(baseline, candidate), config=CRITIC_JUDGE)
                if judgement.result != "fail" or self._undone(
                    window, workflow_id, step_id, candidate
                ):
                    continue
                findings.append(
                    await self._finding(
                        window, workflow_id, step_id, baseline, candidate, judgement, query
                    )
                )
        return findings

    async def _finding(
        self,
        window: Window,
        workflow_id: str,
        step_id: str,
        baseline: Arm,
        candidate: Arm,
        judgement: Judgement,
        query: Query,
    ) -> Finding:
        workflow = window.workflows[workflow_id]
        worse = [m for m in judgement.metrics if m.verdict == "worse"]
        metric = next((m for m in worse if m.name == "error_rate"), worse[0])
        mutation, how = self._rollback(step_id, baseline, candidate)
        node = candidate.node
        if metric.name == "error_rate":
            what = (
                f"{percent(candidate.rate)} of its {candidate.attempts} attempts on "
                f"{candidate.version} failed against {percent(baseline.rate)} of "
                f"{baseline.attempts} on "
                f"{baseline.version}"
            )
            title_what = f"fails {percent(candidate.rate)} against {percent(baseline.rate)}"
            current, expected = round(candidate.rate, 4), round(baseline.rate, 4)
            runs = candidate.failing
        else:
            ratio = (candidate.median_ms or 0) / (baseline.median_ms or 1)
            what = (
                f"its ok attempts on {candidate.version} take {_ms(candidate.median_ms)} at "
                f"the median against {_ms(baseline.median_ms)} on {baseline.version} "
                f"({ratio:.2f}×, {candidate.attempts} and {baseline.attempts} attempts)"
            )
            title_what = f"is {ratio:.1f}× slower"
            current = round(candidate.median_ms or 0.0, 3)
            expected = round(baseline.median_ms or 0.0, 3)
            runs = candidate.slowest
        diagnosis = (
            f"Step {step_id} ran on two versions of {node} in the window, and {what}. "
            f"The judge calls {candidate.version} worse: {judgement.reason} " + how
        )
        finding = Finding(
            kind="node_version" if mutation else "finding",
            workflow_id=workflow_id,
            workflow_version=workflow.version,
            namespace=workflow.namespace,
            step_id=step_id,
            node=candidate.ref,
            title=(
                f"Roll {step_id} back to {node}@{baseline.version}: on {candidate.version} it "
                f"{title_what}"
            ),
            diagnosis=diagnosis,
            mutation=mutation,
            evidence=Evidence(
                queries=[query],
                figures={
                    "node": node,
                    "baseline": {"version": baseline.version, **baseline.figures()},
                    "candidate": {"version": candidate.version, **candidate.figures()},
                    "judge": judgement.model_dump(mode="json"),
                },
                runs=runs[: window.settings.example_runs],
            ),
            expected=Expected(
                metric=metric.name,
                current=current,
                expected=expected,
                basis=(
                    f"judge: p={metric.p_value:.2g}, n={baseline.attempts}/{candidate.attempts} "
                    f"attempts ({baseline.version}/{candidate.version})"
                ),
            ),
            signature=signature_of(
                "node_version", workflow.namespace, workflow_id, step_id, node, candidate.version
            ),
        )
        await attach(window, finding)
        return finding

    def _undone(self, window: Window, workflow_id: str, step_id: str, candidate: Arm) -> bool:
        """Whether the registry no longer sends the step's runs to the worse version (its
        rollout stopped since, and neither production nor the step's exact pin): then
        there is nothing left to roll back. Without a catalog nobody can tell: False."""
        if self.catalog is None:
            return False
        rollout = self.catalog.rollouts.get(candidate.node)
        if rollout is not None and rollout.version == candidate.version and rollout.percent:
            return False
        info = self.catalog.info(candidate.node, candidate.version)
        step = window.step(workflow_id, step_id)
        pinned = step is not None and step.version == candidate.version
        return not pinned and (info is None or info.status != "production")

    def _rollback(
        self, step_id: str, baseline: Arm, candidate: Arm
    ) -> tuple[list[dict[str, Any]], str]:
        """The mutation that undoes the change, and a sentence saying why it is that one."""
        node, worse, previous = candidate.node, candidate.version, baseline.version
        if self.catalog is not None:
            rollout = self.catalog.rollouts.get(node)
            if rollout is not None and rollout.version == worse and rollout.percent > 0:
                return (
                    [{"op": "rollout", "node": node, "version": worse, "percent": 0}],
                    f"A rollout sends {rollout.percent} % of runs to {worse}: stopping it "
                    f"sends them back to {previous}.",
                )
            before = self.catalog.info(node, previous)
            if before is not None and before.status == "deprecated":
                return [], f"{node}@{previous} is deprecated, so there is no pin to go back to."
            status = self.catalog.info(node, worse)
            why = f"{worse} is {status.status}" if status is not None else f"{worse} is live"
        else:
            why = f"{worse} is what the step runs now"
        return (
            [{"op": "replace_node", "step": step_id, "node": f"{node}@{previous}"}],
            f"{why}: pinning {step_id} to {node}@{previous} takes it back.",
        )


def _collect(window: Window, records: list[dict[str, Any]]) -> dict[tuple[str, str], list[Arm]]:
    """Each step's versions with enough attempts, oldest first (one node's only: a step moved
    to another node by a new workflow version is not a version change)."""
    steps: dict[tuple[str, str], list[Arm]] = {}
    for r in records:
        step = window.step(r["workflow_id"], r["step_id"])
        if step is None or r["node"] != step.node:
            continue
        if int(r["attempted"]) < window.settings.min_attempts:
            continue
        latencies = list(r["latencies"])
        arm = Arm(
            node=r["node"],
            version=r["node_version"],
            attempts=int(r["attempted"]),
            failed=int(r["failed"]),
            median_ms=float(np.median(latencies)) if latencies else None,
            latencies=latencies,
            slowest=list(r["slowest_runs"]),
            failing=sorted(r["failing_runs"]),
            first_at=str(r["first_at"]),
            last_at=str(r["last_at"]),
        )
        steps.setdefault((r["workflow_id"], r["step_id"]), []).append(arm)
    for arms in steps.values():
        arms.sort(key=lambda a: _semver(a.version))
    return {key: arms for key, arms in steps.items() if len(arms) >= 2}


def _stretch_minutes(window: Window) -> int:
    """Minutes a stretch of the window spans: its minutes (from the one `start` falls in,
    as the rollup filter counts them) in `SAMPLE_STRETCHES` stretches at most."""
    first = window.start.replace(second=0, microsecond=0)
    minutes = math.ceil((window.end - first) / timedelta(minutes=1))
    return max(1, math.ceil(minutes / SAMPLE_STRETCHES))


def _series(baseline: Arm, candidate: Arm) -> list[Series]:
    def failures(arm: Arm) -> np.ndarray:
        return np.repeat([1.0, 0.0], [arm.failed, arm.attempts - arm.failed])

    return [
        Series("error_rate", "rate", failures(baseline), failures(candidate), critical=True),
        Series("latency_ms", "continuous", baseline.latencies, candidate.latencies),
    ]


_NUMBERS = re.compile(r"\d+")


def _semver(version: str) -> tuple[tuple[int, ...], str]:
    """Order of versions: by their numbers (1.10.0 after 1.9.0), then as text."""
    return tuple(int(n) for n in _NUMBERS.findall(version)), version


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
