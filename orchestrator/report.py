"""How a run looks to a person (a table) and to a program (one JSON object)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orchestrator.plan import RunResult, StepResult

STATUS_MARK = {
    "completed": "ok",
    "failed": "FAILED",
    "skipped": "skipped",
    "cancelled": "cancelled",
    "running": "running",
    "pending": "pending",
}


def run_json(result: RunResult) -> str:
    steps: dict[str, Any] = {
        sid: {
            "status": s.status,
            "attempts": s.attempts,
            "cache_hits": s.cache_hits,
            "output": s.output,
            "error": s.error.model_dump(by_alias=True) if s.error else None,
            "node": f"{s.node}@{s.version}",
            "started_at": s.started_at,
            "finished_at": s.finished_at,
        }
        for sid, s in result.steps.items()
    }
    body: dict[str, Any] = {
        "run_id": result.run_id,
        "status": result.status,
        "outputs": result.outputs,
        "steps": steps,
    }
    if result.error is not None:
        body["error"] = {**result.error.model_dump(by_alias=True), "step": result.failed_step}
    return json.dumps(body, default=str)


def _duration(step: StepResult) -> str:
    d = step.duration
    if d is None:
        return "-"
    return f"{d * 1000:.0f}ms" if d < 1 else f"{d:.2f}s"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run_table(result: RunResult) -> str:
    rows = [("STEP", "STATUS", "ATTEMPTS", "DURATION", "NODE")]
    for sid, s in result.steps.items():
        rows.append(
            (
                sid,
                STATUS_MARK.get(s.status, s.status) + (" (cached)" if s.cache_hits else ""),
                str(s.attempts),
                _duration(s),
                f"{s.node}@{s.version}",
            )
        )
    lines = [table(rows), ""]
    lines.append(f"run {result.run_id}: {result.status}")
    if result.error is not None:
        where = f"step {result.failed_step}: " if result.failed_step else ""
        lines.append(f"error: {where}{result.error.class_}: {result.error.message}")
    for sid, s in result.steps.items():
        if s.error is not None and sid != result.failed_step:
            lines.append(f"  {sid}: {s.error.class_}: {s.error.message}")
    if result.outputs:
        lines.append("outputs:")
        lines.append(json.dumps(result.outputs, indent=2, default=str))
    return "\n".join(lines)


def progress_line(steps: dict[str, StepResult]) -> str:
    done = sum(s.status in ("completed", "failed", "skipped", "cancelled") for s in steps.values())
    running = [sid for sid, s in steps.items() if s.status == "running"]
    shown = ", ".join(running[:4]) + (" …" if len(running) > 4 else "")
    return f"{done}/{len(steps)} steps done" + (f"; running: {shown}" if running else "")
