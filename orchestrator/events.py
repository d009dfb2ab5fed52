"""A run's life as a stream of events, for `GET /runs/{id}/events` (Server-Sent Events)
and `reflux run --follow`.

    step.started  step.retried  step.completed | step.failed | step.skipped | step.cancelled
    run.finished (last; with the run's status)

Events come from the workflow's step table (the `progress` query), read every half
second: each step's events are in their order (started, then a `step.retried` for each
attempt after the first, reported when the step ends, then how it ended), and
`run.finished` comes last. Steps that start and end between two reads are reported in
the order of their times.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from temporalio.client import Client

from infra import NotFoundError
from orchestrator.plan import StepResult

__all__ = ["RunEvent", "follow", "step_events"]

_ENDED = ("completed", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class RunEvent:
    type: str
    run_id: str
    step: str | None = None
    at: float | None = None
    """Workflow time, epoch seconds."""
    attempt: int | None = None
    status: str | None = None
    error: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str | None, int | None]:
        return self.type, self.step, self.attempt

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def step_events(run_id: str, steps: dict[str, StepResult]) -> list[RunEvent]:
    """Every event the step table shows has happened, in order: by time; at one time
    (workflow time stands still while the workflow decides), steps that end before the
    steps their ending starts, and a step that starts and ends at once in that order."""
    ranked: list[tuple[tuple[float, int, int, int], RunEvent]] = []
    for index, (step_id, step) in enumerate(steps.items()):
        start = step.started_at
        if start is None:
            continue
        ranked.append(((start, 1, index, 0), RunEvent("step.started", run_id, step_id, start)))
        if step.status not in _ENDED:
            continue
        end = step.finished_at if step.finished_at is not None else start
        phase = 0 if end > start else 2
        for n in range(2, step.attempts + 1):
            event = RunEvent("step.retried", run_id, step_id, end, attempt=n)
            ranked.append(((end, phase, index, n), event))
        error = step.error.model_dump(by_alias=True) if step.error else None
        ended = RunEvent(f"step.{step.status}", run_id, step_id, end, step.attempts or None)
        ranked.append(((end, phase, index, step.attempts + 1), replace(ended, error=error)))
    ranked.sort(key=lambda pair: pair[0])
    return [event for _, event in ranked]


async def follow(client: Client, run_id: str, every: float = 0.5) -> AsyncIterator[RunEvent]:
    """The run's events until it ends (at once, for a run that has ended)."""
    from orchestrator.runs import live_state

    sent: set[tuple[str, str | None, int | None]] = set()
    while True:
        state = await live_state(client, run_id)
        if state is None:
            raise NotFoundError(f"Temporal has no run '{run_id}'")
        for event in step_events(run_id, state.steps):
            if event.key not in sent:
                sent.add(event.key)
                yield event
        if state.status != "running":
            error = state.error.model_dump(by_alias=True) if state.error else None
            yield RunEvent("run.finished", run_id, status=state.status, error=error)
            return
        await asyncio.sleep(every)
