"""`DagWorkflow`: runs a `Plan` on Temporal.

Steps whose dependencies are done run at once; each node call is one activity, so Temporal
owns retries and timeouts. Short steps run as local activities (the fast path: in this
worker, with no server round trip per step, recorded when the workflow task completes);
`core.delay`/`core.switch` run in the workflow itself. Templates are rendered here,
deterministically, from inputs and earlier results. A failed step (without
`continue_on_error`) fails the run: steps still running are cancelled, steps not started are
marked cancelled, and the Temporal execution fails with the step's error class, carrying the
whole `RunResult` as its detail so clients can show the step table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from infra.durations import parse_duration
    from infra.errors import ExpressionError
    from nodes.builtin.core import SwitchParams, pick_branch
    from orchestrator import expressions
    from orchestrator.activities import (
        RUN_END_ACTIVITY,
        STEP_ACTIVITY,
        RunEnd,
        StepCall,
        StepCallResult,
    )
    from orchestrator.plan import (
        PlannedStep,
        RunRequest,
        RunResult,
        StepError,
        StepResult,
    )
    from reflection.events import TraceEvent, TraceStatus

TERMINAL = {"completed", "failed", "skipped", "cancelled"}
# Statuses of a dependency that skip a step reading its output.
NO_OUTPUT = {"failed", "skipped", "cancelled"}


class StepFailed(Exception):
    def __init__(self, error: StepError, attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


@workflow.defn(name="reflux.dag")
class DagWorkflow:
    def __init__(self) -> None:
        self.steps: dict[str, StepResult] = {}
        self.paused = False

    @workflow.query(name="progress")
    def progress(self) -> dict[str, StepResult]:
        return self.steps

    @workflow.query(name="paused")
    def is_paused(self) -> bool:
        return self.paused

    @workflow.signal(name="pause")
    def pause(self) -> None:
        """No step starts until `resume`; steps already running finish."""
        self.paused = True

    @workflow.signal(name="resume")
    def resume(self) -> None:
        self.paused = False

    @workflow.run
    async def run(self, request: RunRequest) -> RunResult:
        self.request = request
        plan = request.plan
        self.steps = {s.id: StepResult(node=s.node, version=s.version) for s in plan.steps}
        self.events: list[TraceEvent] = []
        by_id = self.by_id = {s.id: s for s in plan.steps}
        pending = dict(by_id)
        for step_id, done_before in request.done.items():  # a re-drive: taken as they are
            if step_id in pending:
                self.steps[step_id] = done_before
                del pending[step_id]
        running: dict[asyncio.Task[None], str] = {}
        failure: tuple[str, StepError] | None = None
        try:
            while pending or running:
                if not self.paused:
                    self._schedule(pending, running)
                if not running and not self.paused:
                    break
                waits: list[asyncio.Future[Any]] = list(running)
                resumed = None
                if self.paused:  # wake on resume as well as on a step's end
                    resumed = asyncio.ensure_future(
                        workflow.wait_condition(lambda: not self.paused)
                    )
                    waits.append(resumed)
                done, _ = await workflow.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if resumed is not None and not resumed.done():
                    resumed.cancel()
                for task in done:
                    if task is resumed:
                        continue
                    step_id = running.pop(task)
                    task.result()  # a bug in the engine fails the workflow task, to be retried
                    result = self.steps[step_id]
                    soft = by_id[step_id].continue_on_error
                    if result.status == "failed" and not soft and not failure:
                        assert result.error is not None
                        failure = (step_id, result.error)
                if failure is not None:
                    await self._cancel(running, pending)
                    break
        except asyncio.CancelledError:
            await self._cancel(running, pending)
            await self._record_end("cancelled")
            raise
        result = RunResult(
            run_id=request.run.id, workflow=plan.workflow, status="completed", steps=self.steps
        )
        if failure is None:
            try:
                result.outputs = expressions.render(plan.outputs, self._context())
            except ExpressionError as exc:
                failure = ("outputs", StepError(class_="ExpressionError", message=str(exc)))
        if failure is None:
            await self._record_end("completed")
        else:
            result.status = "failed"
            result.failed_step, result.error = failure
            await self._record_end("failed", {"step": failure[0], **failure[1].model_dump()})
            raise ApplicationError(
                f"step {failure[0]} failed: {failure[1].class_}: {failure[1].message}",
                result.model_dump(mode="json", by_alias=True),
                type=failure[1].class_,
                non_retryable=True,
            )
        return result

    async def _record_end(self, status: str, error: dict[str, Any] | None = None) -> None:
        """Tell the registry's run ledger how the run ended. Retried for up to ten minutes;
        a ledger that stays unreachable is logged, never fails the run."""
        end = RunEnd(run_id=self.request.run.id, status=status, error=error, events=self.events)
        options: dict[str, Any] = dict(
            start_to_close_timeout=timedelta(seconds=10),
            schedule_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary=f"run ended: {status}",
        )
        try:
            if self.request.local_end:
                await workflow.execute_local_activity(RUN_END_ACTIVITY, end, **options)
            else:
                await workflow.execute_activity(RUN_END_ACTIVITY, end, **options)
        except FailureError as exc:
            workflow.logger.warning(
                "could not record the end of run %s: %s", self.request.run.id, exc
            )

    def _schedule(
        self, pending: dict[str, PlannedStep], running: dict[asyncio.Task[None], str]
    ) -> None:
        """Start every step whose dependencies are done; skip those whose inputs never came.
        A skip can make later-listed or earlier-listed steps ready, so repeat until stable."""
        progressed = True
        while progressed:
            progressed = False
            for step in list(pending.values()):
                if not all(self.steps[d].status in TERMINAL for d in step.needs):
                    continue
                del pending[step.id]
                progressed = True
                if any(self.steps[d].status in NO_OUTPUT for d in step.needs_output):
                    self._finish(step.id, "skipped")
                    self._trace(step, "skipped")
                else:
                    running[asyncio.create_task(self._run_step(step))] = step.id

    async def _cancel(
        self, running: dict[asyncio.Task[None], str], pending: dict[str, Any]
    ) -> None:
        for task in running:
            task.cancel()
        if running:
            await workflow.wait(list(running))
        for step_id in list(running.values()) + list(pending):
            if self.steps[step_id].status not in TERMINAL:
                self._finish(step_id, "cancelled")
            # In-flight node calls trace their own cancellation; these never made one.
            if step_id in pending or self.by_id[step_id].meta is not None:
                self._trace(self.by_id[step_id], "cancelled")
        running.clear()
        pending.clear()

    def _trace(self, step: PlannedStep, status: TraceStatus, start: float | None = None) -> None:
        """A trace event for what the workflow decided itself (it has no node call)."""
        run, now = self.request.run, workflow.now()
        began = datetime.fromtimestamp(start, UTC) if start is not None else now
        self.events.append(
            TraceEvent.timed(
                began,
                now,
                run_id=run.id,
                step_id=step.id,
                node=step.node,
                node_version=step.version,
                status=status,
                workflow_id=run.workflow,
                workflow_version=run.version,
                namespace=self.request.plan.namespace,
                replica="workflow",
            )
        )

    def _finish(self, step_id: str, status: str) -> None:
        result = self.steps[step_id]
        result.status = status  # type: ignore[assignment]
        result.finished_at = workflow.now().timestamp()
        if result.started_at is None:
            result.started_at = result.finished_at

    def _context(self, **extra: Any) -> dict[str, Any]:
        run = self.request.run
        return {
            "inputs": self.request.inputs,
            "steps": {
                sid: {"output": r.output, "status": r.status} for sid, r in self.steps.items()
            },
            "run": {"id": run.id, "workflow": run.workflow, "version": run.version},
            **extra,
        }

    async def _run_step(self, step: PlannedStep) -> None:
        result = self.steps[step.id]
        result.status = "running"
        result.started_at = workflow.now().timestamp()
        try:
            if step.if_ is not None and not expressions.is_truthy(
                expressions.render(step.if_, self._context())
            ):
                self._finish(step.id, "skipped")
                self._trace(step, "skipped")
                return
            if step.for_each is not None:
                result.output = await self._run_for_each(step)
            else:
                output, attempts = await self._run_once(step, self._context())
                result.output = output
                result.attempts = attempts
            self._finish(step.id, "completed")
        except StepFailed as exc:
            result.error = exc.error
            result.attempts += exc.attempts
            self._finish(step.id, "failed")
        except ExpressionError as exc:
            result.error = StepError(class_="ExpressionError", message=str(exc))
            self._finish(step.id, "failed")
        except asyncio.CancelledError:
            self._finish(step.id, "cancelled")
            raise

    async def _run_for_each(self, step: PlannedStep) -> list[Any]:
        items = expressions.render(step.for_each, self._context())
        if not isinstance(items, list):
            raise ExpressionError(
                f"for_each must give a list, got {type(items).__name__}: {str(items)[:80]}"
            )
        slots = asyncio.Semaphore(step.concurrency or max(len(items), 1))
        outputs: list[Any] = [None] * len(items)
        result = self.steps[step.id]

        async def one(index: int, item: Any) -> None:
            async with slots:
                context = self._context(item=item, index=index)
                output, attempts = await self._run_once(step, context, index)
                outputs[index] = output
                result.attempts += attempts

        tasks = [asyncio.create_task(one(i, item)) for i, item in enumerate(items)]
        try:
            for task in tasks:  # in input order: the first failing item is the one reported
                await task
        finally:
            for task in tasks:
                task.cancel()
        return outputs

    async def _run_meta(self, step: PlannedStep, params: dict[str, Any]) -> dict[str, Any]:
        """An engine meta-step, run in the workflow itself."""
        if step.meta == "delay":
            started = workflow.now().timestamp()
            seconds = parse_duration(params.get("duration", 0))
            await workflow.sleep(seconds)
            self._trace(step, "ok", started)
            return {"waited_seconds": seconds}
        branch = pick_branch(SwitchParams.model_validate(params))
        self._trace(step, "ok")
        return {"branch": branch}

    async def _run_once(
        self, step: PlannedStep, context: dict[str, Any], item: int = -1
    ) -> tuple[Any, int]:
        params = expressions.render(step.with_, context)
        if step.meta is not None:
            try:
                return await self._run_meta(step, params), 1
            except ValueError as exc:  # bad params (pydantic's ValidationError is one)
                self._trace(step, "error")
                error = StepError(class_="ValidationError", message=_one_line(step, exc))
                raise StepFailed(error, 1) from None
        run = self.request.run
        retry = step.retry
        call = StepCall(
            node=step.node,
            version=step.version,
            params=params,
            run_id=run.id,
            workflow_id=run.workflow,
            workflow_version=run.version,
            namespace=self.request.plan.namespace,
            step_id=step.id,
            item=item,
            timeout=step.timeout,
            cache_ttl=step.cache_ttl,
        )
        options: dict[str, Any] = dict(
            result_type=StepCallResult,
            # The node call times out first with a clean NodeTimeoutError; this is the backstop.
            start_to_close_timeout=timedelta(seconds=step.timeout + 5),
            retry_policy=RetryPolicy(
                maximum_attempts=retry.max_attempts,
                initial_interval=timedelta(seconds=retry.initial_interval),
                backoff_coefficient=retry.backoff,
                maximum_interval=timedelta(seconds=max(retry.max_interval, retry.initial_interval)),
                non_retryable_error_types=retry.non_retryable or None,
            ),
            cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
            summary=f"{step.id}: {step.node}@{step.version}",
        )
        try:
            if step.local:
                done = await workflow.execute_local_activity(STEP_ACTIVITY, call, **options)
            else:
                done = await workflow.execute_activity(STEP_ACTIVITY, call, **options)
        except FailureError as exc:
            # A regular activity's failure comes wrapped in ActivityError, a local one's bare.
            cause = exc.cause if isinstance(exc, ActivityError) else exc
            if isinstance(cause, CancelledError):  # the run is being cancelled
                raise asyncio.CancelledError() from None
            raise StepFailed(*_step_error(cause or exc)) from None
        if done.cache_hit:
            self.steps[step.id].cache_hits += 1
        return done.output, done.attempt


WORKFLOWS: list[type] = [DagWorkflow]
"""The workflow classes a worker runs (besides the cron launcher)."""


def _step_error(cause: BaseException) -> tuple[StepError, int]:
    if isinstance(cause, ApplicationError):
        info = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return (
            StepError(
                class_=cause.type or "NodeError",
                message=cause.message,
                retryable=bool(info.get("retryable", not cause.non_retryable)),
                details=info.get("details") or {},
            ),
            int(info.get("attempt", 1)),
        )
    if isinstance(cause, TimeoutError):
        return StepError(class_="NodeTimeoutError", message=f"activity timed out: {cause}"), 1
    return StepError(class_=type(cause).__name__, message=str(cause)), 1


def _one_line(step: PlannedStep, exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        return f"{step.node}: with.{where}: {first['msg']}"
    return f"{step.node}: {exc}"
