"""`DagWorkflow`: runs a `Plan` on Temporal; `ShardWorkflow`: a slice of a large fan-out.

Steps whose dependencies are done run at once; each node call is one activity, so Temporal
owns retries and timeouts. Short steps run as local activities (the fast path: in this
worker, with no server round trip per step, recorded when the workflow task completes);
`core.delay`/`core.switch` run in the workflow itself. Templates are rendered here,
deterministically, from inputs and earlier results. A failed step (without
`continue_on_error`) fails the run: steps still running are cancelled, steps not started are
marked cancelled, and the Temporal execution fails with the step's error class, carrying the
whole `RunResult` as its detail so clients can show the step table.

Why fan-outs shard: every item is an activity in some history, and one history holds tens of
thousands of events at most (and slows every replay long before). A `for_each` over more
than `fanout_shard_items` items runs in child workflows of that many items each, the step's
`concurrency` split between the children running at once (`plan.shard_lanes`); their
outputs come back in order. Over `fanout_max_items` the step fails at once.

Why no exception escapes a step: an exception out of workflow code fails the workflow task,
which Temporal retries forever: the run would be wedged. Whatever a step's rendering or
scheduling raises fails that step with the reason (`ExpressionError` for templates,
`EngineError` otherwise); only Temporal's own nondeterminism errors and cancellation go on
as they are. A run whose steps can never start (a dependency cycle, an unknown step) fails
naming them rather than ending `completed` with steps pending."""

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
    ChildWorkflowError,
    FailureError,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from pydantic_core import to_jsonable_python

    from infra import ExpressionError, parse_duration
    from nodes import CallIdentity, SwitchParams, pick_branch, placeholder
    from orchestrator import expressions, shadow
    from orchestrator.activities import (
        RUN_END_ACTIVITY,
        STEP_ACTIVITY,
        RunEnd,
        StepCall,
        StepCallResult,
    )
    from orchestrator.expressions import ExpressionLimits
    from orchestrator.plan import (
        PlannedStep,
        RunInfo,
        RunLimits,
        RunRequest,
        RunResult,
        ShardRequest,
        ShardResult,
        StepError,
        StepResult,
        shard_lanes,
        shard_size,
    )
    from reflection import TraceEvent, TraceStatus

TERMINAL = {"completed", "failed", "skipped", "cancelled"}
# Statuses of a dependency that skip a step reading its output.
NO_OUTPUT = {"failed", "skipped", "cancelled"}
# Exceptions that must fail the workflow task as they do (Temporal retries it once fixed code
# is deployed), never be turned into a failed step.
PASS_THROUGH = (workflow.NondeterminismError, workflow.ReadOnlyContextError)
LONGEST = 315_576_000_000
"""The longest duration, in seconds, a Temporal command holds (protobuf's Duration)."""
FOR_EACH_ITEM_BYTES = 256
"""A `for_each` is bounded by its item count (REFLUX_FANOUT_MAX_ITEMS) more than by its
size: it may give this many bytes per item allowed when that is more than
REFLUX_EXPRESSION_MAX_BYTES (100,000 items: 25.6 MB)."""


class StepFailed(Exception):
    def __init__(self, error: StepError, attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


def shard_id(run_id: str, step_id: str, index: int) -> str:
    """The workflow id of shard `index` of a step's fan-out in a run."""
    return f"{run_id}/{step_id}/{index}"


class _StepCalls:
    """What a run's workflow and its fan-out shards share: rendering a step's templates and
    calling its node, one item or many."""

    run_info: RunInfo
    namespace: str
    limits: RunLimits | None

    def _render(
        self, value: Any, context: dict[str, Any], limits: ExpressionLimits | None = None
    ) -> Any:
        """`value` rendered within the run's expression limits (or `limits`); `secret('X')`
        renders the run's own placeholder (see `nodes.secrets`)."""
        if self.secret_nonce:
            context = {**context, "secret": self._secret}
        try:
            return expressions.render(value, context, limits=limits or _expression(self.limits))
        except ExpressionError:
            raise
        except Exception as exc:  # e.g. a RecursionError on a deeply nested value
            raise ExpressionError(_exception_line(exc)) from None

    async def _items(
        self,
        step: PlannedStep,
        items: list[Any],
        offset: int,
        concurrency: int | None,
        context: dict[str, Any],
        tally: StepResult | ShardResult,
    ) -> list[Any]:
        """Each item of `items` (`offset` is the first one's index) through the step, at most
        `concurrency` at a time; outputs in order. Attempts and cache hits add to `tally`."""
        slots = asyncio.Semaphore(concurrency or max(len(items), 1))
        outputs: list[Any] = [None] * len(items)

        async def one(position: int, item: Any) -> None:
            async with slots:
                index = offset + position
                params = self._render(step.with_, {**context, "item": item, "index": index})
                done = await self._call(step, params, index)
                outputs[position] = done.output
                tally.attempts += done.attempt
                tally.cache_hits += done.cache_hit

        tasks = [asyncio.create_task(one(i, item)) for i, item in enumerate(items)]
        try:
            for task in tasks:  # in input order: the first failing item is the one reported
                await task
        finally:
            for task in tasks:
                task.cancel()
        return outputs

    secret_nonce: str | None = None

    def _identity(self, step: PlannedStep, item: int = -1) -> CallIdentity:
        """Who a call of `step` (its first attempt) is: the run's ids and labels."""
        run = self.run_info
        return CallIdentity(
            run_id=run.id,
            workflow_id=run.workflow,
            workflow_version=run.version,
            namespace=self.namespace,
            step_id=step.id,
            item=item,
            labels=run.labels,
        )

    def _secret(self, name: Any) -> str:
        return placeholder(str(name), self.secret_nonce)

    async def _call(self, step: PlannedStep, params: dict[str, Any], item: int) -> StepCallResult:
        """The step's node called with `params` as one activity; StepFailed when it fails."""
        retry = step.retry
        call = StepCall(
            node=step.node,
            version=step.version,
            params=params,
            identity=self._identity(step, item),
            timeout=step.timeout,
            cache_ttl=step.cache_ttl,
            secrets=step.secrets,
            secret_nonce=self.secret_nonce,
        )
        options: dict[str, Any] = dict(
            result_type=StepCallResult,
            # The node call times out first with a clean NodeTimeoutError; this is the backstop.
            start_to_close_timeout=_duration(step.timeout + 5, "timeout"),
            retry_policy=RetryPolicy(
                maximum_attempts=retry.max_attempts,
                initial_interval=_duration(retry.initial_interval, "retry.initial_interval"),
                backoff_coefficient=retry.backoff,
                maximum_interval=_duration(
                    max(retry.max_interval, retry.initial_interval), "retry.max_interval"
                ),
                non_retryable_error_types=retry.non_retryable or None,
            ),
            cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
            summary=f"{step.id}: {step.node}@{step.version}",
        )
        try:
            if step.local:
                return await workflow.execute_local_activity(STEP_ACTIVITY, call, **options)
            return await workflow.execute_activity(STEP_ACTIVITY, call, **options)
        except FailureError as exc:
            # A regular activity's failure comes wrapped in ActivityError, a local one's bare.
            cause = exc.cause if isinstance(exc, ActivityError) else exc
            if isinstance(cause, CancelledError):  # the run is being cancelled
                raise asyncio.CancelledError() from None
            raise StepFailed(*_step_error(cause or exc)) from None


@workflow.defn(name="reflux.dag")
class DagWorkflow(_StepCalls):
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
        self.run_info, self.limits = request.run, request.limits
        self.secret_nonce = request.secret_nonce
        plan = request.plan
        self.namespace = plan.namespace
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
                    task.result()  # `_run_step` ends every step; only cancellation comes out
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
        if failure is None and pending:  # nothing runs and nothing can start
            failure = self._unreachable(pending)
        result = RunResult(
            run_id=request.run.id, workflow=plan.workflow, status="completed", steps=self.steps
        )
        if failure is None:
            try:
                result.outputs = _json_data(self._render(plan.outputs, self._context()))
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
        A skip can make later-listed or earlier-listed steps ready, so repeat until stable.
        A dependency on a step the plan does not have is never done."""
        progressed = True
        while progressed:
            progressed = False
            for step in list(pending.values()):
                if not all(self._status(d) in TERMINAL for d in step.needs):
                    continue
                del pending[step.id]
                progressed = True
                if any(self._status(d) in NO_OUTPUT for d in step.needs_output):
                    self._finish(step.id, "skipped")
                    self._trace(step, "skipped")
                else:
                    running[asyncio.create_task(self._run_step(step))] = step.id

    def _status(self, step_id: str) -> str:
        known = self.steps.get(step_id)
        return known.status if known is not None else "pending"

    def _unreachable(self, pending: dict[str, PlannedStep]) -> tuple[str, StepError]:
        """Fail the steps left waiting on steps that never end."""
        ids = [step_id for step_id in self.by_id if step_id in pending]
        error = StepError(
            class_="EngineError",
            message=f"unreachable steps: {', '.join(ids)} (each waits on a step that never "
            "ends: a dependency cycle or an unknown step)",
        )
        for step_id in ids:
            self.steps[step_id].error = error
            self._finish(step_id, "failed")
            self._trace(self.by_id[step_id], "error")
        pending.clear()
        return ids[0], error

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
        now = workflow.now()
        began = datetime.fromtimestamp(start, UTC) if start is not None else now
        self.events.append(
            TraceEvent.for_call(
                self._identity(step),
                began,
                now,
                node=step.node,
                node_version=step.version,
                status=status,
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
        """Run one step to its end: whatever happens it ends completed, skipped, failed (with
        the reason) or, when the run is being cancelled, cancelled."""
        result = self.steps[step.id]
        result.status = "running"
        result.started_at = workflow.now().timestamp()
        try:
            if step.if_ is not None and not expressions.is_truthy(
                self._render(step.if_, self._context())
            ):
                self._finish(step.id, "skipped")
                self._trace(step, "skipped")
                return
            if step.for_each is not None:
                if self.run_info.shadow_of is not None and shadow.may_write(step):
                    raise shadow.ShadowSkip(shadow.SKIP_REASON)
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
        except shadow.ShadowSkip as exc:  # a shadow run's write it may not make
            result.reason = str(exc)
            self._finish(step.id, "skipped")
            self._trace(step, "skipped")
        except asyncio.CancelledError:
            self._finish(step.id, "cancelled")
            raise
        except PASS_THROUGH:
            raise
        except Exception as exc:  # a bug or a limit of the engine's: fail the step, not the task
            result.error = StepError(class_="EngineError", message=_engine_line(step, exc))
            self._finish(step.id, "failed")

    async def _run_for_each(self, step: PlannedStep) -> list[Any]:
        items = self._render(step.for_each, self._context(), _for_each(self.limits))
        if not isinstance(items, list):
            raise ExpressionError(
                f"for_each must give a list, got {type(items).__name__}: {str(items)[:80]}"
            )
        limits = self.limits
        if limits is not None and len(items) > limits.fanout_max_items:
            raise ExpressionError(
                f"for_each gave {len(items)} items, over the limit of "
                f"{limits.fanout_max_items} (REFLUX_FANOUT_MAX_ITEMS)"
            )
        tally = self.steps[step.id]  # attempts and cache hits count as they come
        if limits is not None and len(items) > limits.fanout_shard_items:
            return await self._run_shards(step, items, limits, tally)
        return await self._items(step, items, 0, step.concurrency, self._context(), tally)

    def _shard_context(self, step: PlannedStep) -> dict[str, Any]:
        """What the step's `with` may read: every shard gets the same (one stored payload
        when large), without the inputs and steps it does not read (a `for_each` over
        `inputs.items` does not send the whole list to every shard)."""
        context = self._context()
        context["steps"] = {sid: context["steps"][sid] for sid in step.needs}
        refs = expressions.references(step.with_)
        if not refs.dynamic_inputs:
            context["inputs"] = {k: v for k, v in context["inputs"].items() if k in refs.inputs}
        return context

    async def _run_shards(
        self, step: PlannedStep, items: list[Any], limits: RunLimits, tally: StepResult
    ) -> list[Any]:
        """The fan-out as child workflows of `shard_size` items, `shard_lanes` at a time;
        the first failing shard (in item order) fails the step and cancels the others."""
        size = shard_size(len(items), limits.fanout_shard_items)
        starts = range(0, len(items), size)
        lanes, each = shard_lanes(step.concurrency, size, len(starts))
        slots = asyncio.Semaphore(lanes)
        run = self.request.run
        context = self._shard_context(step)

        async def shard(index: int, start: int) -> ShardResult:
            chunk = items[start : start + size]
            request = ShardRequest(
                run=run, namespace=self.namespace, step=step, items=chunk, offset=start,
                concurrency=each, limits=limits, secret_nonce=self.secret_nonce,
            )  # fmt: skip
            async with slots:
                try:
                    return await workflow.execute_child_workflow(
                        ShardWorkflow.run,
                        args=[request, context],
                        id=shard_id(run.id, step.id, index),
                        result_type=ShardResult,
                        parent_close_policy=workflow.ParentClosePolicy.TERMINATE,
                        static_summary=f"{step.id}: items {start}-{start + len(chunk) - 1}"
                        f" of {len(items)}",
                    )
                except ChildWorkflowError as exc:
                    if isinstance(exc.cause, CancelledError):
                        raise asyncio.CancelledError() from None
                    return ShardResult(error=_step_error(exc.cause or exc)[0])

        tasks = [asyncio.create_task(shard(i, start)) for i, start in enumerate(starts)]
        outputs: list[Any] = []
        try:
            for task in tasks:  # in item order: the first failing shard is the one reported
                done = await task
                tally.attempts += done.attempts
                tally.cache_hits += done.cache_hits
                if done.error is not None:
                    raise StepFailed(done.error, 0)
                outputs.extend(done.outputs)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # the shards have ended
        return outputs

    async def _run_meta(self, step: PlannedStep, params: dict[str, Any]) -> dict[str, Any]:
        """An engine meta-step, run in the workflow itself."""
        if step.meta == "delay":
            started = workflow.now().timestamp()
            seconds = parse_duration(params.get("duration", 0))
            await workflow.sleep(_duration(seconds, "duration"))
            self._trace(step, "ok", started)
            return {"waited_seconds": seconds}
        branch = pick_branch(SwitchParams.model_validate(params))
        self._trace(step, "ok")
        return {"branch": branch}

    async def _run_once(
        self, step: PlannedStep, context: dict[str, Any], item: int = -1
    ) -> tuple[Any, int]:
        params = self._render(step.with_, context)
        if step.meta is not None:
            try:
                return await self._run_meta(step, params), 1
            except ValueError as exc:  # bad params (pydantic's ValidationError is one)
                self._trace(step, "error")
                error = StepError(class_="ValidationError", message=_one_line(step, exc))
                raise StepFailed(error, 1) from None
        if self.run_info.shadow_of is not None:
            replay = self.request.replay or {}
            decision = shadow.decide(step, params, self.namespace, replay, item)
            if not decision.run:  # the source run's output for this write: no call
                self._trace(step, "ok")
                return decision.output, 0
        done = await self._call(step, params, item)
        if done.cache_hit:
            self.steps[step.id].cache_hits += 1
        return done.output, done.attempt


@workflow.defn(name="reflux.fanout_shard")
class ShardWorkflow(_StepCalls):
    """A slice of a large fan-out's items through its step, outputs returned in order.
    Started by `DagWorkflow` as a child (id `shard_id`); cancelled with it."""

    @workflow.run
    async def run(self, shard: ShardRequest, context: dict[str, Any]) -> ShardResult:
        self.run_info, self.namespace, self.limits = shard.run, shard.namespace, shard.limits
        self.secret_nonce = shard.secret_nonce
        step, tally = shard.step, ShardResult()
        try:
            tally.outputs = await self._items(
                step, shard.items, shard.offset, shard.concurrency, context, tally
            )
        except StepFailed as exc:
            tally.attempts += exc.attempts
            tally.error = exc.error
        except ExpressionError as exc:
            tally.error = StepError(class_="ExpressionError", message=str(exc))
        except PASS_THROUGH:
            raise
        except Exception as exc:  # as in `DagWorkflow._run_step`: never a wedged task
            tally.error = StepError(class_="EngineError", message=_engine_line(step, exc))
        if tally.error is not None:
            tally.outputs = []
        return tally


@workflow.defn(name="reflux.dag.shadow")
class ShadowDagWorkflow(DagWorkflow):
    """A shadow replay (`RunInfo.shadow_of`, `orchestrator.shadow`): a type of its own, so
    only a worker that knows shadow runs takes one (a worker of an earlier release would
    ignore `shadow_of` and make every write)."""

    @workflow.run
    async def run(self, request: RunRequest) -> RunResult:
        return await super().run(request)


WORKFLOWS: list[type] = [DagWorkflow, ShadowDagWorkflow, ShardWorkflow]
"""The workflow classes a worker runs (besides the cron launcher)."""


def _expression(limits: RunLimits | None) -> ExpressionLimits | None:
    """The expression limits of a run (None: one prepared before they were in its request,
    rendered with the defaults)."""
    if limits is None:
        return None
    return ExpressionLimits(limits.expression_max_bytes, limits.expression_max_iterations)


def _for_each(limits: RunLimits | None) -> ExpressionLimits | None:
    if limits is None:
        return None
    most = max(limits.expression_max_bytes, FOR_EACH_ITEM_BYTES * limits.fanout_max_items)
    return ExpressionLimits(most, limits.expression_max_iterations)


def _duration(seconds: float, what: str) -> timedelta:
    """`seconds` as a timedelta a Temporal command can hold; ValueError when it can't (the
    SDK would fail building the command, after adding it: a task failing forever)."""
    if not 0 <= seconds <= LONGEST:
        raise ValueError(f"{what} of {seconds:g}s is out of Temporal's range (0 to {LONGEST}s)")
    return timedelta(seconds=seconds)


def _json_data(value: Any) -> Any:
    """`value` when a payload can hold it (plain JSON data); ExpressionError otherwise."""
    try:
        to_jsonable_python(value)
    except Exception as exc:
        raise ExpressionError(f"outputs: not JSON data: {_exception_line(exc)}") from None
    return value


def _exception_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _engine_line(step: PlannedStep, exc: BaseException) -> str:
    return f"step {step.id} could not be run: {_exception_line(exc)}"


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
