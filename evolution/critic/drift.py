"""drift: a step whose latency or error rate changed for the worse at one moment of the
window, and what changed with it (Datadog Watchdog's rule: name a state change, a version,
a label, as the cause, or nothing).

Series. Read from the rollup (`reflection.rollup`: each minute's attempts, kept as they
arrive), never `traces`: the raw table is ordered by run, so a window prunes nothing (over
1,000,000 attempts drift's aggregate took ~1 s there; the screen below takes ~10 ms here,
with every step's attributes ~45 ms). A slot is a minute, the rollup's grain: per step and
minute, attempts, failed attempts, and the ok attempts the node answered (a cache hit says
nothing of its latency, and a falling hit rate is not the node slowing) with the sum of
their log latencies (floored at `rollup.LEAST_MS`). Attempts, not calls: the rollup has no
runs to group by, and a failure that retries hide is still a change. Consecutive slots are
then merged into buckets of about equal attempts, `attempts / ATTEMPTS_PER_POINT` of them
kept between `MIN_POINTS` and `MAX_POINTS` (a quiet step and a busy one both give a series
a change point search can use), but never less than a minute: a busy step's hour is 60
points, and a change is placed to its minute. A bucket's latency is the geometric mean of
its ok attempts (the median of a lognormal, and it merges exactly).

Two reads of `SLOTS_SQL`: the series alone of every step in the window (the screen), then,
for the steps with a worse change only, the series again with what causes and examples
need (`ATTRIBUTES`): how the attempts divide over node versions, workflow versions and run
labels (`label=value`, estimated from the attempts each rollup row keeps, and the noise of
a label's share from their effective number), failing runs and the slowest ok run of each
minute. Those maps and run ids cost four times the series, and most scans find no drift.

Change points. ruptures' PELT with the l2 cost (a change in the mean), run as
`KernelCPD(kernel="linear")`: the same optimum as `Pelt(model="l2", jump=1)`, computed in
C (0.7 ms against 1.3 s for 500 points). Latency is searched on the log scale (a 2× change
is the same step at any speed), errors on the bucket rates; each series is scaled by its
noise, robustly (the median absolute difference of neighbouring buckets, which a step
change barely moves), and for rates at least the binomial spread of the pooled rate.
Penalty `PENALTY × log n` per change point on the scaled series: BIC's 2 log n cried wolf
on 4-9 % of seeded Gaussian series of 20-500 points, and a scan reads every step; at
4 log n it was at most 0.3 % (300 series each). A 2× latency over 400 attempts (20 buckets
of 20) is about 6 noise units a bucket, +20 points of errors about 2.5: a gain in cost
(10·10/20 · 2.5² ≈ 31) well above the penalty (4 log 20 ≈ 12). Segments are at least
`MIN_SEGMENT` buckets long. A change is a finding only when it is worse by at least
`LATENCY_RISE` or `ERROR_RISE`: improvements are not.

Causes. Every attribute of the attempts (each `node@version`, each workflow version, each
`label=value` of a label with few values) has its share of each bucket's attempts searched
the same way; an attribute whose share moves by at least `SHARE_SHIFT` within
`TOLERANCE` buckets of the metric's change lines up with it and is named, node versions
first, then workflow versions, then labels. Rolling a node version back is
`node_version`'s proposal (it judges the arms); drift files a `finding`, no mutation, so
one cause never makes two proposals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import ruptures as rpt

from evolution.critic.contrast import attach
from evolution.critic.window import CALLED, FAILED, FRESH, ROLLUP, Window, percent
from evolution.proposals.model import Evidence, Expected, Finding, Query, signature_of
from reflection import rollup

ATTEMPTS_PER_POINT = 20
MIN_POINTS = 20
MAX_POINTS = 500
MIN_ATTEMPTS = 100
"""A step with fewer attempts in the window has no series to search."""
MIN_SEGMENT = 4
"""Buckets a segment spans at least: a blip of one or two buckets is not a change."""
PENALTY = 4.0
"""Per change point, times log(points), on the noise-scaled series."""
LATENCY_NOISE_FLOOR = 0.02
"""Least noise assumed on log latency (2 %): identical buckets would otherwise make any
difference infinitely significant."""
SHARE_NOISE_FLOOR = 0.02
LATENCY_RISE = 0.25
"""A latency change is a finding when the typical latency after is at least 25 % above."""
ERROR_RISE = 0.05
"""An error rate change is a finding when it rises by at least five points."""
SHARE_SHIFT = 0.2
"""An attribute lines up with a change when its share of attempts moves this much."""
TOLERANCE = 2
"""... within this many buckets of it."""
PROMOTED = 0.9
"""A new version with at least this share of attempts after the change replaced the old one
(a promotion); less is a rollout's split."""
LABEL_VALUES = 10
"""Labels with more distinct values among a step's kept attempts in the window (a request
id) are not causes: each step's labels are judged on their own, so one workflow's busy
`tenant` never hides another's `region`."""
FAMILIES = (("refs", "node"), ("versions", "workflow version"), ("labels", "label"))
"""Attribute families in the order a cause is named."""
COLUMNS = {"refs": "refs", "versions": "versions", "labels": "label_counts"}
"""The column of each family in `ATTRIBUTES`."""

SLOTS_SQL = """
SELECT workflow_id, step_id, minute,
       sum(attempts) AS n,
       sumIf(attempts, status IN {failed}) AS failed,
       sumIf(attempts, {fresh}) AS ok,
       sumIf(log_latency_sum, {fresh}) AS log_ms,
       min(first_start) AS first_at{attributes}
FROM {source}
WHERE {where} AND status IN {called}
GROUP BY workflow_id, step_id, minute
ORDER BY workflow_id, step_id, minute
"""
"""Each step's minutes: the series alone (the screen of every step), or with `ATTRIBUTES`
for the steps it found a change in."""
ATTRIBUTES = """,
       sumMap([concat(node, '@', node_version)], [attempts]) AS refs,
       sumMap([if(workflow_version = -1, '', toString(workflow_version))], [attempts])
           AS versions,
       sumMap(arrayMap(p -> substring(p, length('label.') + 1),
                       arrayFilter(p -> startsWith(p, 'label.'), pairs)),
              arrayFilter((w, p) -> startsWith(p, 'label.'), weights, pairs)) AS label_counts,
       sum({spread}) AS spread,
       arraySlice(groupUniqArrayMergeIf({examples_kept})(runs, status IN {failed}),
                  1, {{examples:UInt32}}) AS failing_runs,
       argMaxMergeIf(slowest, {fresh}) AS slowest_run,
       maxIf(latency_max, {fresh}) AS slowest_ms"""
"""Attempts by node version and workflow version (exact: key columns), by label value
(estimated from the attempts each row keeps, `rollup.ATTRIBUTES`: each for
`attempts / kept` of its row's), what those estimates are worth (`rollup.KEPT_SPREAD`), and
examples."""
KEPT = """(SELECT *, {kept} AS kept, arrayFlatten(kept) AS pairs, {weights} AS weights
 FROM {rollup} WHERE {where})"""
CHOSEN = "has(splitByChar(',', {steps:String}), concat(workflow_id, '/', step_id))"
"""The steps (`workflow/step`) the screen found a change in."""


@dataclass
class Bucket:
    attempts: int
    failed: int
    ok: int
    """Ok attempts the node answered (no cache hits): the latency's sample."""
    log_ms: float
    """The sum of the log latencies (ms) of those ok attempts."""
    first_at: datetime
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    """Attempts by attribute value, per family (`refs`, `versions`, `labels`); labels are
    estimated from the attempts its rows keep."""
    spread: float = 0.0
    """Σ attempts² / kept over its rows (`rollup.KEPT_SPREAD`): its label shares, read from
    the kept attempts, are worth as many independent attempts as `attempts² / spread`."""
    failing: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    """The slowest ok attempt's latency and run id."""

    def add(self, other: Bucket) -> None:
        """Take in the next slot's attempts."""
        self.attempts += other.attempts
        self.failed += other.failed
        self.ok += other.ok
        self.log_ms += other.log_ms
        self.spread += other.spread
        for family, values in other.shares.items():
            mine = self.shares.setdefault(family, {})
            for value, n in values.items():
                mine[value] = mine.get(value, 0) + n
        self.failing += [r for r in other.failing if r not in self.failing]
        self.slowest = max(self.slowest, other.slowest)


@dataclass
class Change:
    """One worse change of one metric of a step."""

    metric: str
    """`latency_ms` (the geometric mean of ok attempts' latencies: a lognormal's median) or
    `error_rate`."""
    at: int
    """The first bucket after the change."""
    before: float
    after: float
    score: float
    """The jump in noise units: how clear the change is."""
    segments: tuple[tuple[int, int], tuple[int, int]]
    """Bucket ranges [start, end) before and after."""
    causes: list[Cause] = field(default_factory=list)


@dataclass(frozen=True)
class Cause:
    family: str
    label: str
    """In words: "node http.request 1.2.0 → 1.3.0 (promotion)"."""
    key: str
    """What it is across scans: "node http.request@1.3.0"."""
    shift: float
    ref: str | None = None
    """`name@version` when the cause is a node version."""


class DriftDetector:
    kind = "drift"

    async def scan(self, window: Window) -> list[Finding]:
        if not window.workflows:
            return []
        live = window.live(all_versions=True)  # a workflow version may be the cause
        least = max(MIN_ATTEMPTS, window.settings.min_attempts)
        records, _ = await window.run(_slots_sql(live.where), live.params)
        changed = [key for key, buckets in _series(window, records, least) if _changes(buckets)]
        if not changed:
            return []
        params = {
            **live.params,
            "steps": ",".join(f"{w}/{s}" for w, s in changed),
            "examples": window.settings.example_runs,
        }
        sql = _slots_sql(f"{live.where} AND {CHOSEN}", attributes=True)
        records, query = await window.run(sql, params)
        findings = []
        for (workflow_id, step_id), buckets in _series(window, records, least):
            changes = _changes(buckets)
            for change in changes:
                change.causes = _causes(buckets, change.at)
            for group in _grouped(changes):
                findings.append(
                    await self._finding(window, workflow_id, step_id, buckets, group, query)
                )
        return findings

    async def _finding(
        self,
        window: Window,
        workflow_id: str,
        step_id: str,
        buckets: list[Bucket],
        changes: list[Change],
        query: Query,
    ) -> Finding:
        workflow = window.workflows[workflow_id]
        step = window.step(workflow_id, step_id)
        assert step is not None
        head = max(changes, key=lambda c: c.score)
        cause = head.causes[0] if head.causes else None
        when = _clock(buckets[head.at].first_at)
        (b0, b1), (a0, a1) = head.segments
        what = _what(head)
        numbers = (
            f"{_value(head.metric, head.before)} over {sum(b.attempts for b in buckets[b0:b1])} "
            f"attempts before, {_value(head.metric, head.after)} over "
            f"{sum(b.attempts for b in buckets[a0:a1])} attempts after"
        )
        others = [c for c in changes if c is not head]
        also = "".join(f" At the same time {_what(c)}." for c in others)
        if cause is not None:
            diagnosis = (
                f"{step_id}'s {what} at {when} ({numbers}). At that moment {cause.label}: "
                f"the likely cause.{also}"
                + (
                    " Whether to roll the version back is node_version's call: it judges "
                    "the versions' attempts against each other."
                    if cause.ref
                    else ""
                )
            )
            title = f"{step_id}'s {what} at {when}; likely cause: {cause.label}"
        else:
            diagnosis = (
                f"{step_id}'s {what} at {when} ({numbers}). No node version, workflow "
                f"version or label of its attempts changed with it: the cause is outside what "
                f"the traces record (a dependency, load, data).{also}"
            )
            title = f"{step_id}'s {what} at {when}"
        runs = _examples(buckets, head, window.settings.example_runs)
        figures = {
            "points": len(buckets),
            "attempts_per_point": round(sum(b.attempts for b in buckets) / len(buckets), 1),
            "changes": [_figure(buckets, c) for c in changes],
            "penalty": f"{PENALTY} * log(points), on the noise-scaled series",
        }
        finding = Finding(
            kind="finding",
            workflow_id=workflow_id,
            workflow_version=workflow.version,
            namespace=workflow.namespace,
            step_id=step_id,
            node=cause.ref if cause and cause.ref else step.node_ref,
            title=title,
            diagnosis=diagnosis,
            evidence=Evidence(
                queries=[query],
                figures=figures,
                runs=runs,
            ),
            expected=Expected(
                metric=head.metric,
                current=_rounded(head.metric, head.after),
                expected=_rounded(head.metric, head.before),
                basis=(
                    f"PELT change point at {when}: {numbers}, {len(buckets)} buckets of "
                    f"about {figures['attempts_per_point']} attempts"
                ),
            ),
            signature=signature_of(
                "drift",
                workflow.namespace,
                workflow_id,
                step_id,
                cause.key if cause else f"unexplained {head.metric}",
            ),
        )
        await attach(window, finding)
        return finding


def _slots_sql(where: str, attributes: bool = False) -> str:
    """`SLOTS_SQL` over the attempts `where` selects: the series alone, or with the
    attributes."""
    extra = source = ""
    if attributes:
        extra = ATTRIBUTES.format(
            failed=FAILED, fresh=FRESH, examples_kept=rollup.EXAMPLES, spread=rollup.KEPT_SPREAD
        )
        source = KEPT.format(
            rollup=ROLLUP, where=where, kept=rollup.KEPT, weights=rollup.KEPT_WEIGHTS
        )
    return SLOTS_SQL.format(
        attributes=extra, source=source or ROLLUP, where=where, failed=FAILED, called=CALLED,
        fresh=FRESH,
    )  # fmt: skip


def _series(
    window: Window, records: list[dict[str, Any]], least: int
) -> list[tuple[tuple[str, str], list[Bucket]]]:
    """Each live step with at least `least` attempts, its minutes merged into buckets."""
    steps: dict[tuple[str, str], list[Bucket]] = {}
    for r in records:
        if window.step(r["workflow_id"], r["step_id"]) is not None:
            steps.setdefault((r["workflow_id"], r["step_id"]), []).append(_slot(r))
    return [
        (key, merge(slots))
        for key, slots in sorted(steps.items())
        if sum(slot.attempts for slot in slots) >= least
    ]


def _slot(r: dict[str, Any]) -> Bucket:
    """One minute of a step, with its attributes when the query has them."""
    slot = Bucket(
        attempts=int(r["n"]),
        failed=int(r["failed"]),
        ok=int(r["ok"]),
        log_ms=float(r["log_ms"]),
        first_at=datetime.fromisoformat(r["first_at"]),
    )
    if "refs" in r:
        slot.shares = {
            name: {a: float(n) for a, n in zip(*r[column], strict=True)}
            for name, column in COLUMNS.items()
        }
        slot.spread = float(r["spread"])
        slot.failing = list(r["failing_runs"])
        slot.slowest = (float(r["slowest_ms"]), r["slowest_run"])
    return slot


def merge(slots: list[Bucket]) -> list[Bucket]:
    """Consecutive slots merged into buckets of about equal attempts: `ATTEMPTS_PER_POINT`, more
    when that would make over `MAX_POINTS`, fewer when under `MIN_POINTS`."""
    total = sum(slot.attempts for slot in slots)
    target = min(max(ATTEMPTS_PER_POINT, total / MAX_POINTS), total / MIN_POINTS)
    buckets: list[Bucket] = []
    filled = 0.0
    for slot in slots:
        if buckets and filled < target * len(buckets):
            buckets[-1].add(slot)
        else:
            buckets.append(slot)
        filled += slot.attempts
    return buckets


def change_points(signal: np.ndarray, noise: float) -> list[int]:
    """Where the mean of `signal` changes (each the index of a segment's first point), by
    PELT on the l2 cost at `PENALTY × log n` in units of `noise`."""
    n = len(signal)
    if n < 2 * MIN_SEGMENT or noise <= 0 or np.ptp(signal) == 0:
        return []
    scaled = ((signal - signal.mean()) / noise).reshape(-1, 1)
    algo = rpt.KernelCPD(kernel="linear", min_size=MIN_SEGMENT).fit(scaled)
    return [int(b) for b in algo.predict(pen=PENALTY * math.log(n))[:-1]]


def robust_noise(signal: np.ndarray) -> float:
    """The spread of one point's noise from neighbouring differences (MAD, scaled to a
    standard deviation): a few step changes hardly move it."""
    if len(signal) < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(signal))) / math.sqrt(2))


def _changes(buckets: list[Bucket]) -> list[Change]:
    """The worse changes of a step's latency and error rate."""
    found = []
    with_ok = [i for i, b in enumerate(buckets) if b.ok]
    if len(with_ok) >= 2 * MIN_SEGMENT:
        log_sums = np.array([buckets[i].log_ms for i in with_ok])
        oks = np.array([buckets[i].ok for i in with_ok], dtype=float)
        logs = log_sums / oks
        noise = max(robust_noise(logs), LATENCY_NOISE_FLOOR)
        found += _worse(
            "latency_ms",
            logs,
            noise,
            with_ok,
            lambda seg: float(np.exp(log_sums[seg[0] : seg[1]].sum() / oks[seg[0] : seg[1]].sum())),
            lambda before, after: after >= before * (1 + LATENCY_RISE),
        )
    attempts = np.array([b.attempts for b in buckets], dtype=float)
    failed = np.array([b.failed for b in buckets], dtype=float)
    pooled = failed.sum() / attempts.sum()
    if 0 < pooled < 1:
        rates = failed / attempts
        binomial = math.sqrt(pooled * (1 - pooled) / attempts.mean())
        found += _worse(
            "error_rate",
            rates,
            max(robust_noise(rates), binomial),
            list(range(len(buckets))),
            lambda seg: float(failed[seg[0] : seg[1]].sum() / attempts[seg[0] : seg[1]].sum()),
            lambda before, after: after - before >= ERROR_RISE,
        )
    return found


def _worse(
    metric: str, signal: np.ndarray, noise: float, index: list[int], level: Any, worse: Any
) -> list[Change]:
    """The change points of `signal` (points at buckets `index`) where `level` of the
    segment after is `worse` than of the one before."""
    points = change_points(signal, noise)
    edges = [0, *points, len(signal)]
    out = []
    for k, point in enumerate(points):
        before_seg, after_seg = (edges[k], point), (point, edges[k + 2])
        before, after = level(before_seg), level(after_seg)
        if not worse(before, after):
            continue
        jump = signal[after_seg[0] : after_seg[1]].mean() - signal[before_seg[0] : point].mean()
        out.append(
            Change(
                metric=metric,
                at=index[point],
                before=before,
                after=after,
                score=float(abs(jump) / noise),
                segments=(
                    (index[before_seg[0]], index[point]),
                    (index[point], index[after_seg[1] - 1] + 1),
                ),
            )
        )
    return out


def _causes(buckets: list[Bucket], at: int) -> list[Cause]:
    """The attribute changes that line up with a change at bucket `at`, the likeliest first."""
    attempts = np.array([b.attempts for b in buckets], dtype=float)
    effective = [b.attempts**2 / b.spread if b.spread else 0.0 for b in buckets]
    labelled = max(float(np.mean(effective)), 1.0)  # a label share's sample, per bucket
    causes = []
    for family, word in FAMILIES:
        values = sorted({v for b in buckets for v in b.shares[family]})
        if family == "labels":
            values = _few_valued(values)
        read = labelled if family == "labels" else float(attempts.mean())
        moved: list[tuple[str, float, float, float]] = []  # value, shift, before, after
        for value in values:
            share = np.array([b.shares[family].get(value, 0) for b in buckets]) / attempts
            mean = float(share.mean())
            noise = max(math.sqrt(mean * (1 - mean) / read), SHARE_NOISE_FLOOR)
            points = change_points(share, noise)
            edges = [0, *points, len(share)]
            for k, point in enumerate(points):
                if abs(point - at) > TOLERANCE:
                    continue
                before = float(share[edges[k] : point].mean())
                after = float(share[point : edges[k + 2]].mean())
                if abs(after - before) >= SHARE_SHIFT:
                    moved.append((value, after - before, before, after))
                    break
        if moved:
            causes.append(_cause(family, word, moved))
    return causes


def _few_valued(pairs: list[str]) -> list[str]:
    """The `key=value` pairs of the label keys with at most `LABEL_VALUES` values among
    them (a request id is no cause)."""
    values: dict[str, int] = {}
    for pair in pairs:
        key = pair.split("=", 1)[0]
        values[key] = values.get(key, 0) + 1
    return [p for p in pairs if values[p.split("=", 1)[0]] <= LABEL_VALUES]


def _cause(family: str, word: str, moved: list[tuple[str, float, float, float]]) -> Cause:
    up = max(moved, key=lambda m: m[1])
    down = min(moved, key=lambda m: m[1])
    if family == "refs" and up[1] > 0:
        new_name, _, new_version = up[0].partition("@")
        how = "promotion" if up[3] >= PROMOTED else f"rollout: {percent(up[3])} of attempts"
        if down[1] < 0:
            old_name, _, old_version = down[0].partition("@")
            move = (
                f"{new_name} {old_version} → {new_version}"
                if old_name == new_name
                else f"{down[0]} → {up[0]}"
            )
        else:
            move = f"{up[0]} appeared"
        return Cause(family, f"node {move} ({how})", f"node {up[0]}", up[1], up[0])
    if family == "versions" and up[1] > 0:
        move = f"{down[0]} → {up[0]}" if down[1] < 0 else f"{up[0]} appeared"
        return Cause(family, f"workflow version {move}", f"workflow version {up[0]}", up[1])
    top = max(moved, key=lambda m: abs(m[1]))
    verb = "appeared" if top[1] > 0 else "went away"
    share = f" (on {percent(top[3])} of attempts)" if top[1] > 0 else ""
    return Cause(family, f"{word} {top[0]} {verb}{share}", f"{word} {top[0]} {verb}", top[1])


def _grouped(changes: list[Change]) -> list[list[Change]]:
    """One finding per cause (a latency and an error change with one cause are one
    problem); unexplained changes one finding per metric."""
    groups: dict[str, list[Change]] = {}
    for change in changes:
        key = change.causes[0].key if change.causes else f"unexplained {change.metric}"
        groups.setdefault(key, []).append(change)
    return list(groups.values())


def _examples(buckets: list[Bucket], change: Change, limit: int) -> list[str]:
    """Runs from right after the change: failing ones for errors, the slowest for latency."""
    start, end = change.segments[1]
    runs: list[str] = []
    for bucket in buckets[start:end]:
        picked = bucket.failing if change.metric == "error_rate" else [bucket.slowest[1]]
        runs += [r for r in picked if r and r not in runs]
        if len(runs) >= limit:
            break
    return runs[:limit]


def _figure(buckets: list[Bucket], change: Change) -> dict[str, Any]:
    (b0, b1), (a0, a1) = change.segments
    return {
        "metric": change.metric,
        "change_at": buckets[change.at].first_at.isoformat(),
        "before": _rounded(change.metric, change.before),
        "after": _rounded(change.metric, change.after),
        "attempts_before": sum(b.attempts for b in buckets[b0:b1]),
        "attempts_after": sum(b.attempts for b in buckets[a0:a1]),
        "score": round(change.score, 1),
        "cause": change.causes[0].label if change.causes else None,
        "causes": [c.label for c in change.causes],
    }


def _what(change: Change) -> str:
    if change.metric == "latency_ms":
        return f"latency rose {change.after / change.before:.1f}×"
    return f"error rate rose from {percent(change.before)} to {percent(change.after)}"


def _value(metric: str, value: float) -> str:
    if metric == "error_rate":
        return percent(value)
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _rounded(metric: str, value: float) -> float:
    return round(value, 4) if metric == "error_rate" else round(value, 3)


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
