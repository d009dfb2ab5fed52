"""The judge on seeded synthetic validations: verdicts, results, false alarms, interim looks,
the JSON it hands to proposals, edge cases; and `reflux bench judge` without a stack.

All data are numpy samples from fixed seeds (nothing outside the project is faked)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pytest
from scipy import stats

from bench.runner import run_bench
from evolution.judge import (
    DEFAULT_SAMPLES,
    Harm,
    JudgeConfig,
    Series,
    _mann_whitney,
    _pairwise_median,
    interim,
    judge,
    required_samples,
)
from infra import ConfigError

pytestmark = pytest.mark.timeout(60)


def rates(name, base, cand, n, rng, *, critical=False):
    return Series(name, "rate", rng.random(n) < base, rng.random(n) < cand, critical=critical)


def latency(name, factor, n, rng, *, sigma=0.4, n_candidate=None):
    base = 200 * rng.lognormal(0, sigma, n)
    cand = 200 * factor * rng.lognormal(0, sigma, n_candidate or n)
    return Series(name, "continuous", base, cand)


def validation(rng, n=40, *, error=(0.1, 0.1), slower=1.0):
    """Five metrics as validation measures them: run and step error rate and latency, a score."""
    return [
        rates("error_rate", *error, n, rng, critical=True),
        latency("latency_ms", slower, n, rng),
        rates("step.fetch.error_rate", 0.05, 0.05, n, rng),
        latency("step.fetch.latency_ms", 1.0, n, rng, sigma=0.5),
        Series(
            "metrics.score", "continuous", rng.normal(0.7, 0.1, n), rng.normal(0.7, 0.1, n),
            lower_is_better=False, scale="shift",
        ),
    ]  # fmt: skip


def verdicts(judgement):
    return {m.name: m.verdict for m in judgement.metrics}


def test_clear_harm_fails_and_names_the_metric():
    judgement = judge(validation(np.random.default_rng(1), 60, error=(0.1, 0.5)), "latency_ms")
    assert judgement.result == "fail"
    assert verdicts(judgement)["error_rate"] == "worse"
    assert judgement.reason.startswith("error_rate (0.")
    assert "is worse in the candidate" in judgement.reason


def test_a_clear_improvement_of_the_target_passes():
    rng = np.random.default_rng(2)
    judgement = judge(validation(rng, slower=0.5), target="latency_ms")
    assert judgement.result == "pass", judgement.reason
    latency_ms = next(m for m in judgement.metrics if m.name == "latency_ms")
    assert latency_ms.verdict == "better"
    assert -0.65 < latency_ms.effect < -0.35  # Hodges-Lehmann on log scale: about -50 %
    assert judgement.reason == f"{_described(latency_ms)} is better and nothing is worse."


def _described(metric):
    numbers = f"{metric.baseline:.3g} -> {metric.candidate:.3g}, p = {metric.p_value:.2g}"
    return f"{metric.name} ({numbers})"


def test_a_a_comparisons_rarely_fail_though_five_metrics_are_tested():
    rng = np.random.default_rng(3)
    results = [judge(validation(rng)).result for _ in range(200)]
    assert results.count("fail") <= 12  # family-wise 4 %: about 2-3 expected, 8 per metric naive
    assert set(results) <= {"pass", "fail"}


def test_too_few_samples_are_inconclusive_even_when_the_target_improves():
    rng = np.random.default_rng(4)
    judgement = judge(validation(rng, 12, slower=0.4), target="latency_ms")
    assert judgement.result == "inconclusive"
    assert judgement.reason == (
        "Too few samples to judge: 12 baseline and 12 candidate, 30 needed in each arm."
    )
    assert verdicts(judgement)["latency_ms"] == "better"  # the metric itself is still shown


def test_a_target_that_does_not_move_is_inconclusive_not_pass():
    judgement = judge(validation(np.random.default_rng(5)), target="latency_ms")
    assert judgement.result == "inconclusive"
    assert judgement.reason.startswith("Nothing is worse, but the targeted latency_ms (")
    missing = judge(validation(np.random.default_rng(5)), target="metrics.cost")
    assert missing.result == "inconclusive"
    assert missing.reason == "The targeted metric metrics.cost was not measured."


def test_a_small_significant_change_inside_the_tolerance_band_is_the_same():
    rng = np.random.default_rng(6)
    slower = latency("latency_ms", 1.02, 100_000, rng)
    judgement = judge([slower])
    metric = judgement.metrics[0]
    assert metric.p_value < 1e-6  # significant: with 100k an arm 2 % shows
    assert 0.01 < metric.effect < 0.03
    assert metric.verdict == "same" and judgement.result == "pass"
    assert judge([slower], config=JudgeConfig(tolerance=0.01)).result == "fail"


def test_a_critical_rate_is_worse_without_a_tolerance_band():
    rng = np.random.default_rng(7)
    base, cand = rng.random(200_000) < 0.10, rng.random(200_000) < 0.105
    critical = judge([Series("error_rate", "rate", base, cand, critical=True)])
    assert critical.result == "fail"
    assert critical.metrics[0].verdict == "worse" and critical.metrics[0].effect < 0.01
    plain = judge([Series("step.fetch.error_rate", "rate", base, cand)])
    assert plain.metrics[0].verdict == "same" and plain.result == "pass"  # within one point


def test_higher_is_better_metrics_are_judged_the_other_way():
    rng = np.random.default_rng(8)
    base, dropped = rng.normal(0.7, 0.1, 60), rng.normal(0.5, 0.1, 60)
    score = Series("metrics.score", "continuous", base, dropped, lower_is_better=False)
    assert judge([score]).result == "fail" and judge([score]).metrics[0].verdict == "worse"
    risen = Series("metrics.score", "continuous", dropped, base, lower_is_better=False)
    assert judge([risen], target="metrics.score").result == "pass"
    cost = Series("metrics.cost", "continuous", base, dropped)  # lower is better by default
    assert judge([cost], target="metrics.cost").result == "pass"


def test_interim_stops_on_harm_but_never_on_success():
    rng = np.random.default_rng(9)
    harmful = validation(rng, 30, error=(0.1, 0.7))
    harm = interim(harmful, look=3, looks=5)
    assert isinstance(harm, Harm)
    assert [m.name for m in harm.metrics] == ["error_rate"]
    assert harm.reason.startswith("Stop at look 3 of 5: error_rate (")
    great = validation(rng, 40, error=(0.5, 0.0), slower=0.3)
    assert all(interim(_first(great, 8 * k), k, 5) is None for k in range(1, 6))
    assert judge(great, "error_rate").result == "pass"  # it is better: only judge says so


def _first(series, n):
    return [
        Series(s.name, s.kind, s.baseline[:n], s.candidate[:n], s.lower_is_better, s.critical,
               s.scale)
        for s in series
    ]  # fmt: skip


def test_interim_looks_spend_their_alpha_and_rarely_stop_a_a():
    config = JudgeConfig()
    levels = []
    for look in range(1, 6):
        tiny_harm = [Series("error_rate", "rate", [0.0] * 40, [1.0] * 40, critical=True)]
        levels.append(interim(tiny_harm, look, 5, config).threshold)
    assert levels == sorted(levels) and levels[0] < 1e-5  # O'Brien-Fleming: late looks spend
    assert sum(levels) == pytest.approx(config.interim_alpha)
    rng = np.random.default_rng(10)
    stops = 0
    for _ in range(100):
        arms = validation(rng)
        stops += any(interim(_first(arms, 8 * k), k, 5) is not None for k in range(1, 6))
    assert stops <= 1  # interim_alpha 1 % over all looks (0.01 at every look: 3 here)
    with pytest.raises(ConfigError, match="look 6 of 5"):
        interim(arms, 6, 5)


def test_the_judgement_is_the_json_of_the_proposal_contract():
    judgement = judge(validation(np.random.default_rng(11), 60, error=(0.5, 0.1)), "error_rate")
    data = json.loads(json.dumps(judgement.model_dump(mode="json")))
    assert set(data) == {"result", "metrics", "reason", "samples"}
    assert data["samples"] == {"baseline": 60, "candidate": 60}
    assert data["result"] == "pass"
    first = data["metrics"][0]
    assert set(first) == {
        "name", "baseline", "candidate", "p_value", "effect", "verdict", "samples"
    }  # fmt: skip
    assert first["name"] == "error_rate" and first["verdict"] == "better"
    assert first["baseline"] > first["candidate"] and 0 < first["p_value"] < 0.01
    assert first["samples"] == {"baseline": 60, "candidate": 60}


def test_edge_cases_empty_tied_failure_free_and_non_finite():
    empty = judge([Series("latency_ms", "continuous", [], [1.0, 2.0])]).metrics[0]
    assert (empty.verdict, empty.p_value, empty.effect, empty.baseline) == ("same", 1.0, None, None)
    assert judge([Series("latency_ms", "continuous", [], [])]).result == "inconclusive"
    assert judge([]).reason == "Nothing was measured."
    tied = judge([Series("latency_ms", "continuous", [5.0] * 40, [5.0] * 40)])
    assert tied.metrics[0].verdict == "same" and tied.metrics[0].p_value == 1.0
    assert tied.metrics[0].effect == 0.0 and tied.result == "pass"
    clean = judge([Series("error_rate", "rate", [0.0] * 40, [0.0] * 40, critical=True)])
    assert clean.metrics[0].verdict == "same" and clean.result == "pass"
    dirty = [1.0, np.nan, np.inf, -np.inf, 2.0]
    dropped = judge([Series("latency_ms", "continuous", dirty, dirty)]).metrics[0]
    assert dropped.samples.model_dump() == {"baseline": 2, "candidate": 2}
    zeros = Series("latency_ms", "continuous", [0.0, 1.0, 2.0] * 20, [0.0, 1.1, 2.2] * 20)
    assert judge([zeros]).metrics[0].effect is not None  # a zero: shift instead of ratio
    with pytest.raises(ConfigError, match="latency_ms given more than once"):
        judge([zeros, zeros])


def test_huge_arms_stay_fast():
    arms = validation(np.random.default_rng(12), 100_000)
    started = time.perf_counter()
    judgement = judge(arms)
    assert time.perf_counter() - started < 3.0  # ~0.15 s here
    assert judgement.samples.model_dump() == {"baseline": 100_000, "candidate": 100_000}


def test_the_rank_test_is_scipy_s_mann_whitney_in_both_directions():
    rng = np.random.default_rng(13)
    base, cand = rng.integers(0, 20, 50).astype(float), rng.integers(2, 22, 60).astype(float)
    up, down = _mann_whitney(cand, base)
    for alternative, ours in (("greater", up), ("less", down)):
        theirs = stats.mannwhitneyu(cand, base, alternative=alternative, method="asymptotic")
        assert ours == pytest.approx(theirs.pvalue, rel=1e-9)
    small_b, small_c = rng.normal(0, 1, 6), rng.normal(1, 1, 7)  # exact below 10 an arm
    exact = stats.mannwhitneyu(small_c, small_b, alternative="greater", method="exact")
    assert _mann_whitney(small_c, small_b)[0] == pytest.approx(exact.pvalue)


def test_the_shift_is_the_median_of_every_pairwise_difference():
    rng = np.random.default_rng(14)
    for trial in range(3000):
        m, n = rng.integers(1, 6 if trial % 3 else 700, 2)  # one to five: rounding; 700: search
        scale = 10.0 ** rng.integers(-5, 6)
        arms = (
            (rng.normal(0, 1, m) * scale, rng.normal(0.3, 1, n) * scale),
            (rng.integers(0, 5, m) + 1000.0, rng.integers(0, 5, n) + 1000.0),  # ties
            (np.full(m, 5.0), np.full(n, 5.0)),
            (rng.normal(1e6, 1e-3, m), rng.normal(1e6, 1e-3, n)),  # differences near an ulp
            (rng.uniform(0, 1e-300, m), rng.uniform(0, 1e-300, n)),
            (np.log(5 + rng.integers(0, 40, m)), np.log(5 + rng.integers(0, 40, n))),  # masses
        )[trial % 6]
        expected = float(np.median(np.subtract.outer(*arms)))
        assert _pairwise_median(*arms) == pytest.approx(expected, rel=1e-12, abs=0)
    assert judge([Series("latency", "continuous", [0.5], [3.0])]).result == "inconclusive"


def test_required_samples_sizes_the_default_arm():
    assert required_samples("rate", 0.5, 0.1) <= DEFAULT_SAMPLES
    assert required_samples("continuous", 200, 140) <= DEFAULT_SAMPLES  # sigma 0.4
    assert required_samples("continuous", 200, 140, spread=0.5) > DEFAULT_SAMPLES
    assert required_samples("rate", 0.5, 0.45) > 1000
    with pytest.raises(ConfigError, match="within the tolerance"):
        required_samples("continuous", 200, 190)


async def test_bench_judge_runs_without_a_stack(tmp_path, capsys):
    out = tmp_path / "figures.json"
    args = argparse.Namespace(scenarios=["judge"], quick=True, json=str(out), keep=False)
    assert await run_bench(args) == 0
    assert "embedded stack" not in capsys.readouterr().err
    figures = json.loads(out.read_text())["figures"]
    measures = {f["measure"].split(",")[0]: f for f in figures}
    assert {"A/A false failures", "A/A false alarms", "power: error rate 0.5 -> 0.1"} <= set(
        measures
    )
    assert all(f["scenario"] == "judge" and f["value"] >= 0 for f in figures)
    assert measures["A/A false failures"]["baseline"] > 20  # the naive rule: ~40 %
    assert measures["power: error rate 0.5 -> 0.1"]["goal"] == 90.0


def test_a_change_under_the_floor_is_the_same_whatever_its_ratio():
    rng = np.random.default_rng(11)
    base = rng.lognormal(np.log(5.0), 0.2, 200)  # 5 ms calls …
    cand = base * 1.6  # … 60 % slower: 3 ms, under a 10 ms floor
    tiny = Series("step.fetch.latency_ms", "continuous", base, cand, floor=10.0)
    judged = judge([tiny])
    assert judged.result == "pass" and judged.metrics[0].verdict == "same"
    plain = Series("step.fetch.latency_ms", "continuous", base, cand)
    assert judge([plain]).result == "fail"  # without the floor it is worse
    slow = Series("step.fetch.latency_ms", "continuous", base * 10, cand * 10, floor=10.0)
    assert judge([slow]).result == "fail"  # 30 ms more on 50 ms is beyond it
