"""`reflux bench --quick` end to end: every scenario runs on its own embedded stack and
reports figures beside baselines. (Only that it works: the figures of a quick run on a busy
CI machine mean nothing; full runs are taken by hand, see bench/README.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.runner import SCENARIOS

pytestmark = pytest.mark.timeout(420)


def test_every_scenario_runs_and_reports_against_a_baseline(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    figures = report["figures"]
    assert {f["scenario"] for f in figures} == set(SCENARIOS)
    for figure in figures:  # CPU figures count 10 ms ticks: a quick run may see none
        assert figure["value"] > 0 or figure["measure"].startswith("CPU"), figure
    with_baseline = {f["scenario"] for f in figures if f["baseline"]}
    assert with_baseline == set(SCENARIOS), "every scenario has a figure beside a baseline"
    assert "SCENARIO" in done.stdout and "chain" in done.stdout


def test_an_unknown_scenario_is_refused_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "chian"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "reflux bench: unknown scenario chian (one of " + ", ".join(SCENARIOS) + ")"
    ]
