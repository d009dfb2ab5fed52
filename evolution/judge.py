"""The judge: does a candidate beat a fresh baseline run at the same time, metric by metric?

Why it is built this way (EVOLUTION.md, "Validation and the judge"):
- Kayenta's shape: each metric gets a verdict `better | same | worse` from a rank test with a
  Hodges-Lehmann effect and a tolerance band, so a tiny but significant change with huge arms
  is `same`, not `worse`. Rates (error rates) use Fisher's exact test instead: with 30-50 runs
  an arm, a normal approximation of a rate is poor, and Boschloo's test, though a little more
  powerful (96.5 -> 98.3 % power for 0.5 -> 0.1 at 40 an arm), costs ~10 ms a table
  against ~0.07 ms.
- Argo's third outcome: `inconclusive` leaves the call to a person (too few samples, or the
  targeted metric did not improve while nothing got worse).
- False alarms: every metric is tested for harm, so "worse" calls are controlled family-wise
  with Holm's step-down procedure (`harm_alpha` over all metrics, not per metric).
- Early stop on harm only: `interim` spends `interim_alpha` over the planned looks (a Pocock-
  or O'Brien-Fleming-shaped spending function, each look's share used as a Bonferroni level,
  which is valid whatever the correlation between looks). By the union bound an A/A comparison
  checked at every look and judged at the end fails at most `interim_alpha + harm_alpha` of
  the time, 5 % by default; it never stops early for success.

Tests are one-sided: "is it worse?" and "is it better?" are separate questions. `p_value` in
the JSON is the usual two-sided p-value (twice the smaller one-sided one).

The defaults are the ones `reflux bench judge` measures (bench/README.md, 2,000 trials a
case): at the default 40 runs an arm, A/A comparisons over five metrics fail 1.7 % of the
time (1.8 % with five interim looks as well) and pass a targeted metric 0.7 %; an error rate
0.5 -> 0.1 passes 93.7 % of the time, a latency 30 % lower (lognormal sigma 0.4) 92.5 %."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from infra import ConfigError

Verdict = Literal["better", "same", "worse"]
Result = Literal["pass", "fail", "inconclusive"]

DEFAULT_SAMPLES = 40
"""Runs an arm that validation takes by default (`REFLUX_EVOLUTION_SAMPLES`): the smallest
multiple of ten at which both power goals hold in `reflux bench judge`."""
LATENCY_SPREAD = 0.4
"""Lognormal sigma of run latency assumed when sizing arms: p95 about twice the median."""
HL_MAX_PER_ARM = 1000
"""Hodges-Lehmann takes the median of all pairwise differences; above this many samples an
arm it uses an evenly spaced subsample of the sorted values (1e6 pairs at most)."""
HL_BRACKET = 4
"""The median difference is found by bisection on its value (`_pairwise_median`) until the
bracket holds at most this many differences per sample, which are then sorted."""
HL_DIRECT_PAIRS = 50_000
"""Up to this many pairs the differences are simply all taken (faster than a search)."""
HL_TIED_TRIES = 8
"""Differences that repeat among the guesses (tied values) tried as the k-th itself."""
HL_GUESS_PAIRS = 1000
"""Random pairs whose differences bracket the median's first guess (seeded: the same arms
give the same search); a bracket they get wrong is widened to every difference."""
EXACT_MAX_PER_ARM = 10
"""Mann-Whitney's p-value is exact (scipy) when both arms are this small and untied; above,
the normal approximation with tie and continuity corrections (fast at any size)."""
_MANN_WHITNEY_ARE = 3 / math.pi
"""Asymptotic efficiency of Mann-Whitney against the t-test on normal data, for sizing."""


@dataclass(frozen=True, eq=False)
class Series:
    """One metric's samples in both arms.

    `kind="rate"`: one sample a run (or step call), non-zero for a failure.
    `kind="continuous"`: values; `scale="ratio"` judges the relative change (latency, tokens:
    positive quantities, compared on log scale), `scale="shift"` the difference relative to
    the baseline's median size (scores that may be zero or negative). A ratio series with a
    value <= 0 falls back to shift. NaN and infinite values are dropped."""

    name: str
    kind: Literal["rate", "continuous"]
    baseline: Sequence[float] | np.ndarray
    candidate: Sequence[float] | np.ndarray
    lower_is_better: bool = True
    critical: bool = False
    """Critical metrics are judged worse without a tolerance band: any significant harm."""
    scale: Literal["ratio", "shift"] = "ratio"
    floor: float = 0.0
    """A change of the medians smaller than this, in the metric's own unit, is no change
    (2 ms more on a 5 ms call is 40 %, and nobody's problem)."""


class JudgeConfig(BaseModel):
    """How sure the judge must be. Defaults justified in bench/README.md ("judge")."""

    model_config = ConfigDict(frozen=True)

    alpha: float = Field(0.01, gt=0, lt=0.5)
    """One-sided level for `better` (Kayenta's 98 % two-sided confidence)."""
    harm_alpha: float = Field(0.04, gt=0, lt=0.5)
    """Family-wise level for `worse` over all metrics of the final judgement (Holm)."""
    interim_alpha: float = Field(0.01, gt=0, lt=0.5)
    """Family-wise level for stopping on harm, spent over all interim looks."""
    tolerance: float = Field(0.10, ge=0)
    """Relative change of a continuous metric that counts as no change (0.10: +-10 %)."""
    rate_tolerance: float = Field(0.01, ge=0)
    """Change of a rate, in absolute terms, that counts as no change (0.01: one point)."""
    min_samples: int = Field(30, ge=1)
    """Fewer samples in an arm make a judgement inconclusive (unless something is worse)."""
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
    """Shape of interim alpha spending. O'Brien-Fleming keeps most of it for later looks and
    stopped more harmful canaries than Pocock, which spends it on early looks with too few
    samples to use it (error rate 0.1 -> 0.4 over five looks of 8 runs an arm, 1,000
    simulated canaries: 42 % stopped against 26 %; run latency +50 %: 89 % against 78 %)."""


class Samples(BaseModel):
    baseline: int
    candidate: int


class MetricResult(BaseModel):
    """One metric's verdict; `baseline`/`candidate` are the arm's rate or median. `effect`:
    for rates the candidate's rate minus the baseline's, for continuous metrics the relative
    change (Hodges-Lehmann; -0.3 is 30 % lower). None where an arm is empty."""

    name: str
    baseline: float | None
    candidate: float | None
    p_value: float
    effect: float | None
    verdict: Verdict
    samples: Samples


class Judgement(BaseModel):
    """The judge's answer, stored under `validation` in the proposal JSON. `samples`: the
    most any metric had in each arm (the run-level series: one sample a run)."""

    result: Result
    metrics: list[MetricResult]
    reason: str
    samples: Samples


class Harm(BaseModel):
    """An interim look's call to stop: the metrics that are worse beyond the look's bound."""

    look: int
    looks: int
    threshold: float
    """The nominal one-sided level this look spent (before Holm over the metrics)."""
    metrics: list[MetricResult]
    reason: str


@dataclass(frozen=True, eq=False)
class _Compared:
    series: Series
    samples: Samples
    baseline: float | None
    candidate: float | None
    effect: float | None
    p_up: float
    """One-sided p-value for "the candidate is higher"."""
    p_down: float

    @property
    def p_worse(self) -> float:
        return self.p_up if self.series.lower_is_better else self.p_down

    @property
    def p_better(self) -> float:
        return self.p_down if self.series.lower_is_better else self.p_up

    def harm(self) -> float:
        """The effect in the bad direction (positive: worse); 0 when unknown."""
        if self.effect is None:
            return 0.0
        return self.effect if self.series.lower_is_better else -self.effect

    def tested(self) -> bool:
        return self.samples.baseline > 0 and self.samples.candidate > 0


def judge(
    series: Sequence[Series], target: str | None = None, config: JudgeConfig | None = None
) -> Judgement:
    """Compare the arms metric by metric: `fail` if anything is worse, else `inconclusive`
    when an arm has fewer than `min_samples` or the `target` metric is not better, else
    `pass`."""
    config = config or JudgeConfig()
    compared = _compare_all(series)
    worse = _harmful(compared, config.harm_alpha, config)
    results = [_result(c, c in worse, config) for c in compared]
    arms = Samples(
        baseline=max((c.samples.baseline for c in compared), default=0),
        candidate=max((c.samples.candidate for c in compared), default=0),
    )
    by_name = {r.name: r for r in results}

    def verdict(result: Result, reason: str) -> Judgement:
        return Judgement(result=result, metrics=results, reason=reason, samples=arms)

    if worse:
        ordered = sorted(worse, key=lambda c: not c.series.critical)
        first = by_name[ordered[0].series.name]
        others = ", ".join(c.series.name for c in ordered[1:])
        tail = f"; also worse: {others}" if others else ""
        return verdict("fail", f"{_describe(first)} is worse in the candidate{tail}.")
    if not compared:
        return verdict("inconclusive", "Nothing was measured.")
    if min(arms.baseline, arms.candidate) < config.min_samples:
        return verdict("inconclusive", _too_few(arms, config))
    if target is None:
        return verdict("pass", f"Nothing is worse in {len(results)} metrics.")
    if target not in by_name:
        return verdict("inconclusive", f"The targeted metric {target} was not measured.")
    aimed = by_name[target]
    if min(aimed.samples.baseline, aimed.samples.candidate) < config.min_samples:
        return verdict("inconclusive", _too_few(aimed.samples, config, target))
    if aimed.verdict == "better":
        return verdict("pass", f"{_describe(aimed)} is better and nothing is worse.")
    return verdict(
        "inconclusive", f"Nothing is worse, but the targeted {_describe(aimed)} is not better."
    )


def interim(
    series: Sequence[Series], look: int, looks: int, config: JudgeConfig | None = None
) -> Harm | None:
    """Check while samples arrive (look `look` of `looks` planned, equally spaced): a `Harm`
    when a metric is worse beyond this look's share of `interim_alpha`, else None. Never
    says stop for success: that waits for the final `judge`."""
    config = config or JudgeConfig()
    if looks < 1 or not 1 <= look <= looks:
        raise ConfigError(f"interim look {look} of {looks}: looks count from 1 to the planned")
    spend = _SPENDING[config.spending]
    level = spend(look / looks, config.interim_alpha) - spend(
        (look - 1) / looks, config.interim_alpha
    )
    compared = _compare_all(series)
    worse = _harmful(compared, level, config)
    if not worse:
        return None
    harmed = [_result(c, True, config) for c in compared if c in worse]
    named = "; ".join(_describe(m) for m in harmed)
    reason = f"Stop at look {look} of {looks}: {named} is worse in the candidate."
    return Harm(look=look, looks=looks, threshold=level, metrics=harmed, reason=reason)


def required_samples(
    kind: Literal["rate", "continuous"],
    baseline: float,
    expected: float,
    *,
    spread: float = LATENCY_SPREAD,
    power: float = 0.9,
    config: JudgeConfig | None = None,
) -> int:
    """Runs an arm for the target to be called `better` with probability `power` when it
    truly moves from `baseline` to `expected` (rates: failure fractions; continuous: medians,
    with lognormal `spread`). Normal approximations (Fleiss' continuity correction for
    Fisher's test, Mann-Whitney's efficiency for ranks); never below `min_samples`."""
    config = config or JudgeConfig()
    if not 0 < power < 1:
        raise ConfigError(f"power {power}: must be between 0 and 1")
    z_alpha = _z(1 - config.alpha)
    z_power = _z(power)
    if kind == "rate":
        delta = abs(baseline - expected)
        if not (0 <= baseline <= 1 and 0 <= expected <= 1) or delta <= config.rate_tolerance:
            raise ConfigError(
                f"rates {baseline} -> {expected}: need rates in [0, 1] that differ by more "
                f"than the tolerance {config.rate_tolerance}"
            )
        mean = (baseline + expected) / 2
        raw = (
            z_alpha * math.sqrt(2 * mean * (1 - mean))
            + z_power * math.sqrt(baseline * (1 - baseline) + expected * (1 - expected))
        ) ** 2 / delta**2
        needed = raw / 4 * (1 + math.sqrt(1 + 4 / (raw * delta))) ** 2
    else:
        if baseline <= 0 or expected <= 0 or spread <= 0:
            raise ConfigError("continuous sizing needs positive medians and spread")
        if abs(expected / baseline - 1) <= config.tolerance:
            raise ConfigError(
                f"{baseline} -> {expected} is within the tolerance {config.tolerance:.0%}: "
                "it can never be called better"
            )
        size = abs(math.log(expected / baseline)) / spread
        needed = 2 * (z_alpha + z_power) ** 2 / size**2 / _MANN_WHITNEY_ARE
    return max(math.ceil(needed), config.min_samples)


# --- per metric ---------------------------------------------------------------------------


def _compare_all(series: Sequence[Series]) -> list[_Compared]:
    names = [s.name for s in series]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"judge: metric {', '.join(duplicated)} given more than once")
    return [_compare(s) for s in series]


def _compare(series: Series) -> _Compared:
    base = _finite(series.baseline)
    cand = _finite(series.candidate)
    samples = Samples(baseline=len(base), candidate=len(cand))
    if series.kind == "rate":
        return _compare_rates(series, samples, base != 0, cand != 0)
    if series.kind != "continuous":
        raise ConfigError(f"metric {series.name}: kind {series.kind!r} is not rate|continuous")
    summary = (_median(base), _median(cand))
    if not len(base) or not len(cand):
        return _Compared(series, samples, *summary, None, 1.0, 1.0)
    if base.min() == base.max() == cand.min() == cand.max():  # all tied: ranks say nothing
        return _Compared(series, samples, *summary, 0.0, 1.0, 1.0)
    p_up, p_down = _mann_whitney(cand, base)
    return _Compared(series, samples, *summary, _relative_shift(series, base, cand), p_up, p_down)


def _compare_rates(
    series: Series, samples: Samples, base: np.ndarray, cand: np.ndarray
) -> _Compared:
    if not len(base) or not len(cand):
        rates = (_rate(base), _rate(cand))
        return _Compared(series, samples, *rates, None, 1.0, 1.0)
    failed_b, failed_c = int(base.sum()), int(cand.sum())
    table = [[failed_c, len(cand) - failed_c], [failed_b, len(base) - failed_b]]
    p_up = float(stats.fisher_exact(table, alternative="greater").pvalue)
    p_down = float(stats.fisher_exact(table, alternative="less").pvalue)
    rate_b, rate_c = failed_b / len(base), failed_c / len(cand)
    return _Compared(series, samples, rate_b, rate_c, rate_c - rate_b, p_up, p_down)


def _mann_whitney(cand: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """One-sided p-values (candidate higher, candidate lower) from one ranking."""
    n_c, n_b = len(cand), len(base)
    both = np.concatenate([cand, base])
    if max(n_c, n_b) <= EXACT_MAX_PER_ARM and len(np.unique(both)) == len(both):
        up = stats.mannwhitneyu(cand, base, alternative="greater", method="exact").pvalue
        down = stats.mannwhitneyu(cand, base, alternative="less", method="exact").pvalue
        return float(up), float(down)
    ranks = stats.rankdata(both)
    u = float(ranks[:n_c].sum()) - n_c * (n_c + 1) / 2
    n = n_c + n_b
    _, counts = np.unique(both, return_counts=True)
    ties = float((counts**3 - counts).sum())
    sd = math.sqrt(n_c * n_b / 12 * ((n + 1) - ties / (n * (n - 1))))
    mean = n_c * n_b / 2
    up = _upper_tail((u - mean - 0.5) / sd)
    down = _upper_tail((mean - u - 0.5) / sd)
    return min(up, 1.0), min(down, 1.0)


def _relative_shift(series: Series, base: np.ndarray, cand: np.ndarray) -> float:
    """Hodges-Lehmann: the median of all candidate-minus-baseline differences, on log scale
    (a ratio) for positive quantities, else relative to the baseline's median size."""
    ratio = series.scale == "ratio" and base.min() > 0 and cand.min() > 0
    b, c = (np.log(base), np.log(cand)) if ratio else (base, cand)
    shift = _pairwise_median(_thin(c), _thin(b))
    if ratio:
        return math.expm1(shift)
    size = abs(float(np.median(base)))
    return shift / size if size else shift


def _harmful(compared: list[_Compared], level: float, config: JudgeConfig) -> list[_Compared]:
    """Holm's step-down over the metrics with data: those rejected as "not worse" at family
    level `level` whose effect is beyond the tolerance in the bad direction."""
    tested = sorted((c for c in compared if c.tested()), key=lambda c: c.p_worse)
    rejected = []
    for i, c in enumerate(tested):
        if c.p_worse > level / (len(tested) - i):
            break
        rejected.append(c)
    return [c for c in rejected if c.harm() > _harm_tolerance(c, config) and _beyond_floor(c, 1)]


def _result(compared: _Compared, worse: bool, config: JudgeConfig) -> MetricResult:
    better = (
        not worse
        and compared.tested()
        and compared.p_better <= config.alpha
        and -compared.harm() > _tolerance(compared.series, config)
        and _beyond_floor(compared, -1)
    )
    return MetricResult(
        name=compared.series.name,
        baseline=compared.baseline,
        candidate=compared.candidate,
        p_value=min(1.0, 2 * min(compared.p_up, compared.p_down)),
        effect=compared.effect,
        verdict="worse" if worse else "better" if better else "same",
        samples=compared.samples,
    )


def _beyond_floor(compared: _Compared, direction: int) -> bool:
    """Whether the medians moved more than the series' floor, in `direction` (1: worse,
    -1: better)."""
    floor = compared.series.floor
    if floor <= 0 or compared.baseline is None or compared.candidate is None:
        return True
    moved = compared.candidate - compared.baseline
    worse = moved if compared.series.lower_is_better else -moved
    return worse * direction > floor


def _tolerance(series: Series, config: JudgeConfig) -> float:
    return config.rate_tolerance if series.kind == "rate" else config.tolerance


def _harm_tolerance(compared: _Compared, config: JudgeConfig) -> float:
    return 0.0 if compared.series.critical else _tolerance(compared.series, config)


# --- small pieces -------------------------------------------------------------------------


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _pairwise_median(c: np.ndarray, b: np.ndarray) -> float:
    """The median of every difference c_i - b_j, as `np.median(np.subtract.outer(c, b))`
    gives it, without the m × n array when it is large (1e6 pairs: ~0.5 ms, not 10–25)."""
    total = len(c) * len(b)
    if total <= HL_DIRECT_PAIRS:
        return float(np.median(np.subtract.outer(c, b)))
    c, b = np.sort(c), np.sort(b)
    low, high = (total - 1) // 2, total // 2  # the middle order statistics (one when odd)
    first = _kth_difference(c, b, low)
    return first if high == low else (first + _kth_difference(c, b, high)) / 2


def _kth_difference(c: np.ndarray, b: np.ndarray, k: int) -> float:
    """The k-th smallest (from 0) of every c_i - b_j, `c` and `b` sorted: bisection on the
    value, counting the differences at or below it with one `searchsorted`, until at most
    `HL_BRACKET` per sample lie in the bracket (or no float is left between its ends);
    those are then listed and sorted. below ≤ k < at_or_below(hi) holds from the first
    bracket (`_first_bracket`) on, so the list holds the k-th."""

    def at_or_below(d: float) -> int:
        return int(total - np.searchsorted(b, c - d, side="left").sum())

    total = len(c) * len(b)
    lo, hi, below = _first_bracket(c, b, k, at_or_below)
    if lo == hi:
        return lo
    while at_or_below(hi) - below > HL_BRACKET * (len(c) + len(b)):
        mid = (lo + hi) / 2
        if not lo < mid < hi:  # no float between: list what is left (ties)
            break
        counted = at_or_below(mid)
        if counted > k:
            hi = mid
        else:
            lo, below = mid, counted
    first = np.searchsorted(b, c - hi, side="left")
    widths = np.searchsorted(b, c - lo, side="left") - first
    rows = np.repeat(np.arange(len(c)), widths)
    starts = np.cumsum(widths) - widths
    cols = np.arange(rows.size) - np.repeat(starts - first, widths)
    return float(np.sort(c[rows] - b[cols])[k - below])


def _first_bracket(
    c: np.ndarray, b: np.ndarray, k: int, at_or_below: Callable[[float], int]
) -> tuple[float, float, int]:
    """(lo, hi, differences at or below lo) with the k-th difference in (lo, hi]: the
    quantiles around k of `HL_GUESS_PAIRS` random differences when their counts confirm
    it, else a little outside the extremes (so rounding in `c - d` never cuts a pair off);
    lo == hi when a difference the guesses repeat is the k-th itself."""
    total = len(c) * len(b)
    rng = np.random.default_rng(0)
    guesses = np.sort(
        c[rng.integers(0, len(c), HL_GUESS_PAIRS)] - b[rng.integers(0, len(b), HL_GUESS_PAIRS)]
    )
    share, spread = k / total, 4 * math.sqrt(0.25 / HL_GUESS_PAIRS)
    values, counts = np.unique(guesses, return_counts=True)
    for i in np.argsort(-counts, kind="stable")[:HL_TIED_TRIES]:
        if counts[i] < 2:
            break  # the rest are single: no tie among the guesses
        value = float(values[i])  # a difference many pairs share, which halving cannot split
        below = total - int(np.searchsorted(b, c - value, side="right").sum())
        if below <= k < at_or_below(value):
            return value, value, k
    lo = float(guesses[max(int((share - spread) * HL_GUESS_PAIRS), 0)])
    hi = float(guesses[min(int((share + spread) * HL_GUESS_PAIRS), HL_GUESS_PAIRS - 1)])
    below = at_or_below(lo)
    if below <= k < at_or_below(hi) and lo < hi:
        return lo, hi, below
    least, most = float(c[0] - b[-1]), float(c[-1] - b[0])
    margin = (most - least) * 1e-9 + 4 * float(np.spacing(max(abs(least), abs(most))))
    while at_or_below(least - margin) > 0 or at_or_below(most + margin) < total:
        margin *= 16  # rounding still cut a pair off
    return least - margin, most + margin, 0


def _thin(values: np.ndarray) -> np.ndarray:
    if len(values) <= HL_MAX_PER_ARM:
        return values
    ordered = np.sort(values)
    return ordered[np.linspace(0, len(ordered) - 1, HL_MAX_PER_ARM).round().astype(int)]


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _rate(failed: np.ndarray) -> float | None:
    return float(failed.mean()) if len(failed) else None


def _upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _z(quantile: float) -> float:
    return float(stats.norm.ppf(quantile))


def _pocock(t: float, alpha: float) -> float:
    return alpha * math.log(1 + (math.e - 1) * t)


def _obrien_fleming(t: float, alpha: float) -> float:
    if t <= 0:
        return 0.0
    return 2 * _upper_tail(_z(1 - alpha / 2) / math.sqrt(t))


_SPENDING = {"pocock": _pocock, "obrien_fleming": _obrien_fleming}
"""Lan-DeMets spending functions: the share of alpha spent by information fraction t."""


def _describe(metric: MetricResult) -> str:
    if metric.baseline is None or metric.candidate is None:
        return metric.name
    return (
        f"{metric.name} ({_number(metric.baseline)} -> {_number(metric.candidate)}, "
        f"p = {metric.p_value:.2g})"
    )


def _number(value: float) -> str:
    return f"{value:.3g}"


def _too_few(arms: Samples, config: JudgeConfig, metric: str | None = None) -> str:
    of = f" of {metric}" if metric else ""
    return (
        f"Too few samples{of} to judge: {arms.baseline} baseline and {arms.candidate} "
        f"candidate, {config.min_samples} needed in each arm."
    )
