"""The run ledger's reconciler: close every ledger row still `running` whose Temporal
execution has ended, with Temporal's verdict.

Why it is needed: a run's end reaches the ledger from the run's own last activity, so a run
terminated from outside (`temporal workflow terminate`, a client's terminate, a reset) never
records it, and neither does one whose end came while PostgreSQL was down for longer than
that activity retries. A run recorded in the ledger whose workflow never started (the
starting process died in between) is closed too, as failed.

Every worker runs `reconcile_forever`; each pass pages through the running rows older than a
grace period (a run whose start is still in flight is left alone), asks Temporal's
visibility store about a page at once (`WorkflowId IN (...)`), and ends each row with the
same guarded UPDATE as the run's own end (`WHERE status = 'running'`), so several workers
at once, or a run's late own end, close a row once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from registry import runs as ledger

__all__ = ["Closed", "reconcile_forever", "reconcile_once"]

log = logging.getLogger("reflux.reconcile")

GRACE = timedelta(seconds=30)
"""Rows younger than this are not looked at: their workflow start may be in flight."""
MISSING_AFTER = timedelta(minutes=10)
"""A row whose execution Temporal does not have is failed only once this old: a cron
launch records its run, then starts it from a workflow task that a worker outage delays."""
BATCH = 100
"""Rows asked about in one visibility query."""

_PLAIN_ID = re.compile(r"[A-Za-z0-9._:@/-]+")
"""Ids that can go into a visibility query as they are; others are described one by one."""

NEVER_STARTED = "never started in Temporal: it has no execution of this run"

_OPEN = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)


@dataclass(frozen=True)
class Closed:
    """A ledger row this pass closed."""

    run_id: str
    status: str
    error: dict[str, Any] | None


async def reconcile_once(
    client: Client,
    pool: asyncpg.Pool,
    *,
    grace: timedelta = GRACE,
    missing_after: timedelta = MISSING_AFTER,
    batch: int = BATCH,
) -> list[Closed]:
    """One pass over every ledger row still `running` and older than `grace`: the rows it
    closed (another worker's pass, or the run itself, may close some first)."""
    closed: list[Closed] = []
    after = ""
    while True:
        page = await ledger.running_since(pool, grace, after, batch)
        if not page:
            return closed
        after = page[-1][0]
        started = dict(page)
        executions = await _executions(client, started)
        for run_id, runs in executions.items():
            verdict = await _verdict(client, run_id, runs, started[run_id], missing_after)
            if verdict is None:
                continue
            status, error = verdict
            if await ledger.record_end(pool, run_id, status, error):
                log.info(
                    "closed run %s in the ledger as %s%s",
                    run_id, status, f": {error['message']}" if error else "",
                )  # fmt: skip
                closed.append(Closed(run_id, status, error))
        if len(page) < batch:
            return closed


async def reconcile_forever(
    client: Client,
    pool: asyncpg.Pool,
    every: timedelta,
    stop: asyncio.Event,
    **options: Any,
) -> None:
    """`reconcile_once` now and then every `every` (± 10 %, so workers drift apart) until
    `stop` is set. A pass that fails (PostgreSQL or Temporal away) is logged and retried at
    the next; `every` of zero turns the reconciler off."""
    if every <= timedelta(0):
        return
    while not stop.is_set():
        try:
            await reconcile_once(client, pool, **options)
        except Exception as exc:  # the services may be away: try again next time
            log.warning("reconciling the run ledger failed: %s", str(exc).splitlines()[0])
        pause = every.total_seconds() * random.uniform(0.9, 1.1)
        try:
            await asyncio.wait_for(stop.wait(), pause)
        except TimeoutError:
            pass


async def _executions(
    client: Client, started: dict[str, datetime]
) -> dict[str, list[WorkflowExecution] | None]:
    """Each run id's executions in Temporal ([] when it has none), None for an id that did
    not fit the visibility query (to be described)."""
    found: dict[str, list[WorkflowExecution] | None] = {}
    plain = [run_id for run_id in started if _PLAIN_ID.fullmatch(run_id)]
    for run_id in started:
        found[run_id] = [] if run_id in plain else None
    if plain:
        query = "WorkflowId IN (" + ", ".join(f"'{run_id}'" for run_id in plain) + ")"
        async for execution in client.list_workflows(query):
            runs = found.get(execution.id)
            if runs is not None:
                runs.append(execution)
    return found


async def _verdict(
    client: Client,
    run_id: str,
    runs: list[WorkflowExecution] | None,
    started_at: datetime,
    missing_after: timedelta,
) -> tuple[str, dict[str, Any] | None] | None:
    """How the ledger should end a run (status, error), or None while it goes on."""
    if runs:
        if any(run.status in _OPEN for run in runs):
            return None  # still running (or continued as new: its successor runs)
        latest = max(runs, key=lambda run: run.start_time)
        return await _ended(client, latest.id, latest.run_id, latest.status)
    # Visibility has nothing (it may lag behind a start), or the id did not fit the query:
    # ask for the execution itself.
    try:
        described = await client.get_workflow_handle(run_id).describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        if datetime.now(UTC) - started_at < missing_after:
            return None
        return "failed", {"class": "RunError", "message": NEVER_STARTED}
    if described.status is None or described.status in _OPEN:
        return None
    return await _ended(client, run_id, described.run_id, described.status)


async def _ended(
    client: Client, workflow_id: str, run_id: str | None, status: WorkflowExecutionStatus | None
) -> tuple[str, dict[str, Any] | None] | None:
    """The ledger's end for a closed execution, in the ledger's words."""
    if status == WorkflowExecutionStatus.COMPLETED:
        return "completed", None
    if status == WorkflowExecutionStatus.CANCELED:
        return "cancelled", None
    if status == WorkflowExecutionStatus.TERMINATED:
        reason = await _close_detail(client, workflow_id, run_id) or "no reason given"
        message = f"terminated in Temporal: {reason}"
        return "failed", {"class": "TerminatedError", "message": message}
    if status == WorkflowExecutionStatus.TIMED_OUT:
        return "failed", {"class": "RunError", "message": "timed out in Temporal"}
    if status == WorkflowExecutionStatus.FAILED:
        return "failed", await _failure(client, workflow_id, run_id)
    return None


async def _close_event(client: Client, workflow_id: str, run_id: str | None) -> Any:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    close = WorkflowHistoryEventFilterType.CLOSE_EVENT
    async for event in handle.fetch_history_events(event_filter_type=close):
        return event
    return None


async def _close_detail(client: Client, workflow_id: str, run_id: str | None) -> str:
    event = await _close_event(client, workflow_id, run_id)
    if event is None or event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        return ""
    return str(event.workflow_execution_terminated_event_attributes.reason)


async def _failure(client: Client, workflow_id: str, run_id: str | None) -> dict[str, Any]:
    """The run's error as the workflow recorded it (its failed step's), else Temporal's."""
    event = await _close_event(client, workflow_id, run_id)
    if event is None or event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        return {"class": "RunError", "message": "failed in Temporal"}
    failure = event.workflow_execution_failed_event_attributes.failure
    error = await client.data_converter.decode_failure(failure)
    if isinstance(error, ApplicationError) and error.details:
        result = error.details[0]
        if isinstance(result, dict) and isinstance(result.get("error"), dict):
            return {"step": result.get("failed_step"), **result["error"]}
    kind = error.type if isinstance(error, ApplicationError) and error.type else "RunError"
    return {"class": kind, "message": str(error) or "failed in Temporal"}
