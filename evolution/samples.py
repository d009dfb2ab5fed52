"""The samples a judgement compares: per run of each arm, whether it failed, and per step
whether it failed and how long its successful calls took (from the traces).

Arms are lists of ledger runs chosen by id (a validation's own runs, or a watch's live runs
before and after), never by label, so a run somebody labels `arm=candidate` by hand cannot
join an experiment. Run duration is not judged: a retry that rescues a call makes the run
longer and better, so latency means the node calls' own time (`latency_ms` of ok attempts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evolution.judge import Series
from infra import Settings

STEP_SAMPLES = """
SELECT run_id, step_id, max(failed) AS failed, avgIf(latency, ok) AS latency
FROM (
    SELECT run_id, step_id, item,
           argMax(status, attempt) IN ('error', 'timeout') AS failed,
           argMax(status, attempt) = 'ok' AS ok,
           argMax(latency_ms, attempt) AS latency
    FROM traces
    WHERE run_id IN {runs:Array(String)} AND status NOT IN ('skipped', 'cancelled')
    GROUP BY run_id, step_id, item
)
GROUP BY run_id, step_id
"""
"""Per run and step: failed (any item's last attempt failed), and the mean latency of the
calls that succeeded."""
FAILED = ("failed",)
JUDGED_STATUSES = ("completed", "failed")
"""Runs that ended either way; a cancelled run says nothing about the change."""


async def arm_series(
    settings: Settings, arms: Mapping[str, Sequence[Any]], target_step: str | None = None
) -> list[Series]:
    """The series of both arms (`arms`: baseline and candidate lists of `RunRecord`s):
    the run error rate (critical), and per step seen in both arms its error rate
    (critical) and its ok latency. `target_step` first among the steps."""
    from reflection import query

    judged = {
        arm: [r for r in records if r.status in JUDGED_STATUSES] for arm, records in arms.items()
    }
    baseline, candidate = judged["baseline"], judged["candidate"]
    series = [
        Series(
            name="error_rate",
            kind="rate",
            baseline=[float(r.status in FAILED) for r in baseline],
            candidate=[float(r.status in FAILED) for r in candidate],
            critical=True,
        )
    ]
    ids = [r.id for r in baseline + candidate]
    if not ids:
        return series
    rows = (await query(settings, STEP_SAMPLES, {"runs": ids})).records()
    arm_of = {r.id: "baseline" for r in baseline} | {r.id: "candidate" for r in candidate}
    steps: dict[str, dict[str, dict[str, list[float]]]] = {}
    for row in rows:
        per = steps.setdefault(row["step_id"], {})
        arm = per.setdefault(arm_of[row["run_id"]], {"failed": [], "latency": []})
        arm["failed"].append(float(bool(row["failed"])))
        if row["latency"] is not None and row["latency"] == row["latency"]:  # not NaN
            arm["latency"].append(float(row["latency"]))
    order = sorted(steps, key=lambda step: (step != target_step, step))
    for step in order:
        per = steps[step]
        if len(per) < 2:  # a step only one arm ran (added or removed): nothing to compare
            continue
        series.append(
            Series(
                name=f"step.{step}.error_rate",
                kind="rate",
                baseline=per["baseline"]["failed"],
                candidate=per["candidate"]["failed"],
                critical=True,
            )
        )
        series.append(
            Series(
                name=f"step.{step}.latency_ms",
                kind="continuous",
                baseline=per["baseline"]["latency"],
                candidate=per["candidate"]["latency"],
                floor=settings.evolution.latency_floor_ms,
            )
        )
    return series


def target_metric(metric: str | None, step: str | None) -> str | None:
    """The series a proposal expects to improve: `error_rate` of its step, say."""
    if metric is None:
        return None
    return f"step.{step}.{metric}" if step else metric
