"""Start runs and wait for them: the client side of `DagWorkflow`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError

from infra.errors import ServiceError
from orchestrator.plan import RunRequest, RunResult, StepError, StepResult
from orchestrator.workflow import DagWorkflow

ProgressCallback = Callable[[dict[str, StepResult]], None]


async def connect_temporal(address: str, namespace: str = "default") -> Client:
    try:
        return await Client.connect(
            address, namespace=namespace, data_converter=pydantic_data_converter
        )
    except RuntimeError as exc:
        raise ServiceError(
            f"cannot reach Temporal at {address}: {exc} (is `reflux up` running?)"
        ) from None


def new_run_id(workflow: str) -> str:
    return f"{workflow}-{uuid.uuid4().hex[:12]}"


async def start_run(client: Client, request: RunRequest, task_queue: str) -> WorkflowHandle:
    return await client.start_workflow(
        DagWorkflow.run,
        request,
        id=request.run.id,
        task_queue=task_queue,
        result_type=RunResult,
        static_summary=f"{request.plan.workflow}: {len(request.plan.steps)} steps",
    )


def run_handle(client: Client, run_id: str) -> WorkflowHandle:
    """A handle on an existing run (the Temporal workflow id is the run id)."""
    return client.get_workflow_handle_for(DagWorkflow.run, run_id)


async def wait_run(
    handle: WorkflowHandle, on_progress: ProgressCallback | None = None, every: float = 0.5
) -> RunResult:
    """Wait for the run's end; call `on_progress` with the step table meanwhile."""
    result = asyncio.ensure_future(handle.result())
    while on_progress is not None and not result.done():
        await asyncio.wait([result], timeout=every)
        if not result.done():
            try:
                on_progress(await handle.query("progress", result_type=dict[str, StepResult]))
            except Exception:  # a query can race the run's end; progress is best effort
                pass
    try:
        return await result
    except WorkflowFailureError as exc:
        return await _failed_result(handle, exc)


async def _failed_result(handle: WorkflowHandle, exc: WorkflowFailureError) -> RunResult:
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.details:
        return RunResult.model_validate(cause.details[0])
    status = "cancelled" if isinstance(cause, CancelledError) else "failed"
    steps: dict[str, StepResult] = {}
    try:
        steps = await handle.query("progress", result_type=dict[str, StepResult])
    except Exception:  # the worker may be gone; the run's end is still known
        pass
    kind = "TerminatedError" if isinstance(cause, TerminatedError) else type(cause).__name__
    return RunResult(
        run_id=handle.id,
        workflow="",
        status=status,
        steps=steps,
        error=StepError(class_=kind, message=str(cause or exc)),
    )
