"""How figures compare with their baselines and goals, and how the table shows them."""

from __future__ import annotations

from bench.figures import Figure, p95, table


def test_advantage_and_goals_for_lower_is_better():
    fast = Figure("chain", "per step", 2.0, "ms", baseline=10.0, goal=5.0, goal_ratio=5.0)
    assert fast.advantage == 5.0 and fast.met is True
    slow = Figure("chain", "per step", 4.0, "ms", baseline=10.0, goal=5.0, goal_ratio=5.0)
    assert slow.advantage == 2.5 and slow.met is False  # under 5 ms, but not 5x
    assert Figure("x", "y", 1.0, "ms").met is None  # no goal, nothing to meet


def test_advantage_and_goals_for_higher_is_better():
    rate = Figure("ingest", "events", 48_000, "/s", baseline=16_000, better="higher", goal=50_000)
    assert rate.advantage == 3.0
    assert rate.met is False
    assert rate.as_dict()["met"] is False and rate.as_dict()["advantage"] == 3.0


def test_the_table_shows_values_baselines_ratios_and_goals():
    lines = table(
        [
            Figure("chain", "per step", 3.2, "ms", 3.8, 9.0, 11.0, "plain", goal=5.0),
            Figure("node", "idle RSS", 72.0, "MB", baseline=24.0, baseline_name="bare"),
            Figure("ingest", "events", 40_000, "/s", baseline=80_000, better="higher"),
        ]
    ).splitlines()
    assert lines[0].split() == ["SCENARIO", "MEASURE", "REFLUX", "(p95)", "BASELINE", "(p95)",
                                "VS", "BASELINE", "GOAL"]  # fmt: skip
    assert "3.20 ms (3.80 ms)" in lines[1] and "9.00 ms (11.0 ms) plain" in lines[1]
    assert "2.8x faster" in lines[1] and "<= 5.00 ms: met" in lines[1]
    assert "3.0x larger" in lines[2]
    assert "40,000/s" in lines[3] and "2.0x worse" in lines[3]


def test_p95_of_few_samples_is_one_of_them():
    assert p95([1.0]) == 1.0
    assert p95([float(i) for i in range(1, 101)]) == 95.0
