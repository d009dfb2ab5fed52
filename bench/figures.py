"""What a scenario measures: figures, each beside a baseline measured in the same run, and the
table and JSON they are reported in."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Figure:
    scenario: str
    measure: str
    value: float
    unit: str
    """"ms", "MB", "/s" …"""
    p95: float | None = None
    baseline: float | None = None
    baseline_p95: float | None = None
    baseline_name: str = ""
    better: Literal["lower", "higher"] = "lower"
    goal: float | None = None
    """The value to reach (at most for "lower", at least for "higher")."""
    goal_ratio: float | None = None
    """The advantage over the baseline to reach (e.g. 5: five times faster)."""

    @property
    def advantage(self) -> float | None:
        """How many times better than the baseline (below 1: worse)."""
        if not self.baseline or not self.value:
            return None
        ratio = self.baseline / self.value
        return ratio if self.better == "lower" else 1 / ratio

    @property
    def met(self) -> bool | None:
        """Whether every goal holds; None when the figure has none."""
        checks = []
        if self.goal is not None:
            lower = self.value <= self.goal
            checks.append(lower if self.better == "lower" else self.value >= self.goal)
        if self.goal_ratio is not None:
            checks.append(self.advantage is not None and self.advantage >= self.goal_ratio)
        return all(checks) if checks else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "advantage": _round(self.advantage), "met": self.met}


def p50(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return seconds * 1000


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3 if abs(value) < 10 else 1)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}/s"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}"


def _advantage(figure: Figure) -> str:
    ratio = figure.advantage
    if ratio is None:
        return "-"
    words = {"ms": ("faster", "slower"), "MB": ("smaller", "larger")}
    good, bad = words.get(figure.unit, ("better", "worse"))
    return f"{ratio:.1f}x {good}" if ratio >= 1 else f"{1 / ratio:.1f}x {bad}"


def _goal(figure: Figure) -> str:
    parts = []
    if figure.goal is not None:
        sign = "<=" if figure.better == "lower" else ">="
        parts.append(f"{sign} {_number(figure.goal, figure.unit)}")
    if figure.goal_ratio is not None:
        parts.append(f">= {figure.goal_ratio:g}x")
    if not parts:
        return ""
    return f"{', '.join(parts)}: {'met' if figure.met else 'MISSED'}"


def table(figures: Sequence[Figure]) -> str:
    """The report: one row per figure, medians with p95 where there are samples."""
    rows = [("SCENARIO", "MEASURE", "REFLUX (p95)", "BASELINE (p95)", "VS BASELINE", "GOAL")]
    for f in figures:
        ours = _number(f.value, f.unit) + (f" ({_number(f.p95, f.unit)})" if f.p95 else "")
        base = "-"
        if f.baseline is not None:
            base = _number(f.baseline, f.unit)
            base += f" ({_number(f.baseline_p95, f.unit)})" if f.baseline_p95 else ""
            base += f" {f.baseline_name}"
        rows.append((f.scenario, f.measure, ours, base, _advantage(f), _goal(f)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
