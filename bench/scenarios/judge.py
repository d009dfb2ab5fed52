"""The evolution judge on simulated validations: how often it fails a candidate that is no
different (A/A), with and without interim looks, and how often it passes one that truly is
better (power), at the default sample size, beside the naive rule "the candidate's mean is
better => pass, worse => fail" on the targeted metric (error rate when none is targeted).

No stack: seeded synthetic samples (numpy Generator, fixed seeds), the same every run. Each
trial has five metrics, so the judge tests several at once as it does in validation: run
error rate 0.1 (critical), run latency lognormal (median 200 ms, sigma 0.4), a step's error
rate 0.05, its latency (median 80 ms, sigma 0.5) and a node score (normal 0.7 +- 0.1,
higher is better)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from bench.figures import Figure, ms
from bench.runner import BenchOptions
from evolution import DEFAULT_SAMPLES, Series, interim
from evolution import judge as judging

NAME = "judge"
STACK = False
"""Pure simulation: `reflux bench judge` starts no stack."""

TRIALS = 2000
QUICK_TRIALS = 300
LOOKS = 5
"""Interim looks a canary takes, equally spaced, the last at the full sample size."""
SEED = 20261202
LARGE_ARM = 100_000
"""Samples an arm for the timing figure."""
NAIVE = "naive: mean better => pass"
POWER_GOAL = 90.0
FALSE_GOAL = 5.0


def _arms(
    rng: np.random.Generator,
    n: int,
    *,
    error: tuple[float, float] = (0.1, 0.1),
    latency: float = 1.0,
    sigma: float = 0.4,
) -> list[Series]:
    """One simulated validation: n runs an arm; `error` the run error rate of each arm,
    `latency` the candidate's latency as a multiple of the baseline's."""

    def lognormal(median: float, spread: float, factor: float = 1.0) -> np.ndarray:
        return median * factor * rng.lognormal(0.0, spread, n)

    return [
        Series(
            "error_rate", "rate", rng.random(n) < error[0], rng.random(n) < error[1],
            critical=True,
        ),
        Series("latency_ms", "continuous", lognormal(200, sigma), lognormal(200, sigma, latency)),
        Series("step.fetch.error_rate", "rate", rng.random(n) < 0.05, rng.random(n) < 0.05),
        Series("step.fetch.latency_ms", "continuous", lognormal(80, 0.5), lognormal(80, 0.5)),
        Series(
            "metrics.score", "continuous", rng.normal(0.7, 0.1, n), rng.normal(0.7, 0.1, n),
            lower_is_better=False, scale="shift",
        ),
    ]  # fmt: skip


def _naive(series: list[Series], target: str | None = None) -> str:
    """The rule people reach for: compare the targeted metric's means, nothing else."""
    metric = next(s for s in series if s.name == (target or "error_rate"))
    base, cand = float(np.mean(metric.baseline)), float(np.mean(metric.candidate))
    worse = cand > base if metric.lower_is_better else cand < base
    return "fail" if worse else "pass"


def _prefix(series: list[Series], n: int) -> list[Series]:
    return [
        Series(s.name, s.kind, s.baseline[:n], s.candidate[:n], s.lower_is_better, s.critical,
               s.scale)
        for s in series
    ]  # fmt: skip


def _stopped(series: list[Series], n: int) -> tuple[bool, bool]:
    """Interim looks over arms filling up to n: (the judge stopped on harm, the naive rule
    applied at every look did)."""
    judge_stops = naive_stops = False
    for look in range(1, LOOKS + 1):
        part = _prefix(series, n * look // LOOKS)
        judge_stops = judge_stops or interim(part, look, LOOKS) is not None
        naive_stops = naive_stops or _naive(part) == "fail"
        if judge_stops and naive_stops:
            break
    return judge_stops, naive_stops


Trial = Callable[[np.random.Generator], tuple[bool, bool]]
"""One simulated validation: (the judge did what is counted, the naive rule did)."""


def _share(trials: int, case: int, trial: Trial) -> tuple[float, float]:
    """Percent of trials where (the judge, the naive rule) did what is counted."""
    rng = np.random.default_rng([SEED, case])
    ours = theirs = 0
    for _ in range(trials):
        a, b = trial(rng)
        ours += a
        theirs += b
    return 100 * ours / trials, 100 * theirs / trials


def simulate(quick: bool) -> list[Figure]:
    """Every figure of the scenario (a few seconds quick, about half a minute in full)."""
    trials = QUICK_TRIALS if quick else TRIALS
    n = DEFAULT_SAMPLES
    figures: list[Figure] = []

    def figure(
        measure: str,
        shares: Sequence[float],
        *,
        better: Literal["lower", "higher"] = "lower",
        goal: float | None = None,
    ) -> None:
        ours, theirs = (float(share) for share in shares)
        figures.append(
            Figure(
                NAME, f"{measure}, {n} runs an arm", ours, "%", baseline=theirs,
                baseline_name=NAIVE, better=better, goal=goal,
            )
        )  # fmt: skip

    def aa(rng: np.random.Generator) -> tuple[tuple[bool, bool], ...]:
        """One A/A validation: (judge, naive) for each of the three figures below."""
        series = _arms(rng, n)
        final = judging.judge(series).result == "fail"
        stops, naive_stops = _stopped(series, n)
        return (
            (final, _naive(series) == "fail"),
            (stops or final, naive_stops),
            (
                judging.judge(series, "latency_ms").result == "pass",
                _naive(series, "latency_ms") == "pass",
            ),
        )

    rng = np.random.default_rng([SEED, 0])
    aa_share = 100 * sum(np.array(aa(rng), dtype=float) for _ in range(trials)) / trials
    figure("A/A false failures, 5 metrics", aa_share[0], goal=FALSE_GOAL)
    figure(f"A/A false alarms, {LOOKS} interim looks + final", aa_share[1], goal=FALSE_GOAL)
    figure("A/A false passes, latency targeted", aa_share[2], goal=FALSE_GOAL)

    def passes(target: str, **change: Any) -> Trial:
        def trial(rng: np.random.Generator) -> tuple[bool, bool]:
            series = _arms(rng, n, **change)
            return judging.judge(series, target).result == "pass", _naive(series, target) == "pass"

        return trial

    figure(
        "power: error rate 0.5 -> 0.1", _share(trials, 1, passes("error_rate", error=(0.5, 0.1))),
        better="higher", goal=POWER_GOAL,
    )  # fmt: skip
    figure(
        "power: latency 30 % lower, sigma 0.4",
        _share(trials, 2, passes("latency_ms", latency=0.7)), better="higher", goal=POWER_GOAL,
    )  # fmt: skip
    figure(
        "power: latency 30 % lower, sigma 0.5",
        _share(trials, 3, passes("latency_ms", latency=0.7, sigma=0.5)), better="higher",
    )  # fmt: skip

    def harm_beside_gain(rng: np.random.Generator) -> tuple[bool, bool]:
        series = _arms(rng, n, error=(0.5, 0.1), latency=1.5)
        judged = judging.judge(series, "error_rate").result == "fail"
        return judged, _naive(series, "error_rate") == "fail"

    figure(
        "harm caught: error rate 0.5 -> 0.1 but latency +50 %",
        _share(trials, 4, harm_beside_gain), better="higher", goal=POWER_GOAL,
    )  # fmt: skip

    def canary_harm(rng: np.random.Generator) -> tuple[bool, bool]:
        return _stopped(_arms(rng, n, error=(0.1, 0.4)), n)

    figure(
        f"stopped early on harm: error rate 0.1 -> 0.4, {LOOKS} looks",
        _share(trials, 5, canary_harm), better="higher",
    )  # fmt: skip
    figures.append(_timing())
    return figures


def _timing() -> Figure:
    """The judge on huge arms (normal approximation, Hodges-Lehmann on a subsample)."""
    series = _arms(np.random.default_rng([SEED, 6]), LARGE_ARM)
    judging.judge(_prefix(series, 100))  # warm up
    started = time.perf_counter()
    judging.judge(series)
    took = ms(time.perf_counter() - started)
    return Figure(NAME, f"judge 5 metrics of {LARGE_ARM:,} samples an arm", took, "ms", goal=500)


async def run(bench: BenchOptions) -> list[Figure]:
    return await asyncio.to_thread(simulate, bench.quick)
