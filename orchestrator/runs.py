"""Start runs and wait for them: the client side of `DagWorkflow`.

A run starts here: node versions are pinned against one registry snapshot, the run is
recorded in the registry with its pins, then the Temporal workflow starts. The worker
records how it ended. `launch` is the one way a stored workflow version starts, whoever
asks (CLI, API, webhooks, events, cron, rerun and redrive, the evolution layer): the live
version or a rollout's, or an exact one with mutations, pins and labels (a variant run),
or a shadow replay of an earlier run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError

from infra import ServiceError, Settings, SpecError, check_value
from orchestrator.labels import SHADOW, check_labels
from orchestrator.payloads import data_converter
from orchestrator.plan import (
    ReplayedStep,
    RunInfo,
    RunLimits,
    RunRequest,
    RunResult,
    StepError,
    StepResult,
    build_plan,
    new_secret_nonce,
    resolve_pins,
)
from orchestrator.spec import Spec, describe_value
from orchestrator.workflow import DagWorkflow, ShadowDagWorkflow
from orchestrator.yamlsource import Problem
from registry import Catalog, WorkflowVersion, object_store
from registry import runs as ledger

ProgressCallback = Callable[[dict[str, StepResult]], None]


async def connect_temporal(settings: Settings) -> Client:
    """A client whose payloads of `inline_limit` bytes or more go to the object store."""
    from infra import addresses

    address = addresses(settings).temporal
    try:
        return await Client.connect(
            address,
            namespace=settings.temporal.namespace,
            data_converter=data_converter(object_store(settings), settings.inline_limit),
        )
    except RuntimeError as exc:
        raise ServiceError(
            f"cannot reach Temporal at {address}: {exc} (is `reflux up` running?)"
        ) from None


def new_run_id(workflow: str) -> str:
    return f"{workflow}-{uuid.uuid4().hex[:12]}"


async def start_run(client: Client, request: RunRequest, task_queue: str) -> WorkflowHandle:
    run = ShadowDagWorkflow.run if request.run.shadow_of is not None else DagWorkflow.run
    return await client.start_workflow(
        run,
        request,
        id=request.run.id,
        task_queue=task_queue,
        result_type=RunResult,
        static_summary=f"{request.plan.workflow}: {len(request.plan.steps)} steps",
    )


async def prepare_run(
    pool: asyncpg.Pool,
    settings: Settings,
    spec: Spec,
    catalog: Catalog,
    inputs: dict[str, Any],
    workflow_version: int | None = None,
    actor: str | None = None,
    run_id: str | None = None,
    redrive: Redrive | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    shadow_of: str | None = None,
    replay: dict[str, ReplayedStep] | None = None,
    mutations: list[dict[str, Any]] | None = None,
) -> RunRequest:
    """Pin a validated spec's nodes and record the run in the ledger: what starting it
    needs. `actor`: who starts it (default: `settings.user`); `run_id`: one chosen
    beforehand; `redrive`: the steps a failed run completed, taken as they are; `labels`:
    already checked; `shadow_of` and `replay`: a shadow replay of that run; `mutations`:
    those `spec` was made with, for the ledger. Inputs nested
    too deeply or too large are an InputShapeError before anything is recorded, whatever
    the entry point (CLI, API, webhook, event, cron)."""
    limits = settings.limits
    check_value(inputs, limits.input_max_depth, limits.input_max_bytes, "inputs")
    run_id = run_id or new_run_id(spec.id)
    pins = resolve_pins(spec, catalog, run_id)
    done = redrive.done if redrive else {}
    for step_id, step in done.items():
        pins[step_id] = step.version
    plan = build_plan(spec, pins, workflow_version, catalog, settings.temporal.local_step_timeout)
    if replay is not None:  # only what may write is ever taken: the rest runs again
        from orchestrator.shadow import may_write

        writes = {step.id for step in plan.steps if may_write(step)}
        replay = {step_id: step for step_id, step in replay.items() if step_id in writes}
    request = RunRequest(
        run=RunInfo(
            id=run_id,
            workflow=spec.id,
            version=workflow_version,
            redrive_of=redrive.run_id if redrive else None,
            labels=dict(labels or {}),
            shadow_of=shadow_of,
        ),
        plan=plan,
        inputs=inputs,
        done=done,
        limits=RunLimits.of(limits),
        secret_nonce=new_secret_nonce(),
        local_end=True,
        replay=replay if shadow_of is not None else None,
    )
    recorded = {s.id: {"node": s.node_name, "version": pins[s.id]} for s in spec.steps}
    await ledger.record_start(
        pool, run_id, spec.id, workflow_version, recorded, actor or settings.user,
        spec.namespace, dict(labels or {}), shadow_of, mutations,
    )  # fmt: skip
    return request


async def submit(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    spec: Spec,
    catalog: Catalog,
    inputs: dict[str, Any],
    workflow_version: int | None = None,
    actor: str | None = None,
    run_id: str | None = None,
    redrive: Redrive | None = None,
    **variant: Any,
) -> WorkflowHandle:
    """Start a run of a validated spec (`prepare_run`, then the Temporal workflow);
    `variant`: prepare_run's labels, shadow_of, replay and mutations."""
    request = await prepare_run(
        pool, settings, spec, catalog, inputs, workflow_version, actor, run_id, redrive, **variant
    )
    try:
        return await start_run(client, request, settings.temporal.task_queue)
    except BaseException as exc:
        error = {"class": "RunError", "message": f"the workflow did not start: {exc}"}
        await ledger.record_end(pool, request.run.id, "failed", error)
        raise


@dataclass(frozen=True)
class Runnable:
    """A stored workflow version, validated against the registry's catalog of now."""

    stored: WorkflowVersion
    spec: Spec
    catalog: Catalog


async def load_version(
    pool: asyncpg.Pool, workflow_id: str, version: int | None = None
) -> Runnable:
    """What a run of a stored version needs (None: the live one). Raises NotFoundError,
    or SpecError when the version no longer validates (e.g. a node it names is gone)."""
    from orchestrator.validate import validate_text
    from registry import NodeRegistry, WorkflowRegistry

    stored = await WorkflowRegistry(pool, "").get(workflow_id, version)
    catalog = await NodeRegistry(pool, "").catalog()
    spec, problems = validate_text(stored.source, stored.ref, catalog)
    if spec is None:
        raise SpecError(problems)
    return Runnable(stored, spec, catalog)


@dataclass(frozen=True)
class Launched:
    handle: WorkflowHandle
    version: int
    """The stored version the run runs (the rollout's, when a rollout chose it)."""
    spec: Spec
    """What it runs: the stored version with the mutations applied."""
    labels: dict[str, str]


async def launch(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    workflow_id: str,
    version: int | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    mutations: Sequence[Any] = (),
    labels: Mapping[str, Any] | None = None,
    actor: str | None = None,
    run_id: str | None = None,
    redrive: Redrive | None = None,
    shadow_of: str | None = None,
) -> Launched:
    """Start stored workflow `workflow_id` as a run.

    `version` None: the live version, or, for a plain live run (no mutations, no labels of
    a person's) that a workflow rollout's share takes (chosen from the run id), the
    rollout's, labelled `rollout=ID@N`. `mutations` (`orchestrator.mutations`, or their
    JSON) are applied and the result validated as a push is: a SpecError says where, and
    no run starts. `labels`: a person's (checked); `shadow_of`: replay that run's inputs
    (unless `inputs` are given) through this version without performing a write
    (`orchestrator.shadow`), labelled `shadow=true`."""
    from orchestrator.mutations import apply_mutations, dump_mutations, parse_mutations
    from registry import WorkflowRegistry

    chosen = check_labels(labels)
    changes = parse_mutations(list(mutations)) if mutations else []
    run_id = run_id or new_run_id(workflow_id)
    if version is None and shadow_of is None and not changes and not chosen:
        version, extra = await WorkflowRegistry(pool, "").choose(workflow_id, run_id)
        chosen.update(extra)
    loaded = await load_version(pool, workflow_id, version)
    spec = loaded.spec
    if changes:  # a large source takes a while to check: not on the caller's event loop
        ref = loaded.stored.ref
        spec = await asyncio.to_thread(apply_mutations, spec, changes, loaded.catalog, ref)
    replay = None
    if shadow_of is not None:
        from orchestrator.shadow import replay_of

        source = await ledger.get_run(pool, shadow_of)
        if source.workflow_id != workflow_id:
            raise SpecError([f"shadow_of: run '{shadow_of}' ran workflow"
                             f" '{source.workflow_id}', not '{workflow_id}'"])  # fmt: skip
        given, replay = await replay_of(settings, client, shadow_of)
        inputs = given if inputs is None else inputs
        chosen[SHADOW] = "true"
    handle = await submit(
        client, pool, settings, spec, loaded.catalog, spec.bind_inputs(dict(inputs or {})),
        loaded.stored.version, actor, run_id, redrive,
        labels=chosen, shadow_of=shadow_of, replay=replay, mutations=dump_mutations(changes),
    )  # fmt: skip
    return Launched(handle, loaded.stored.version, spec, chosen)


@dataclass(frozen=True)
class Redrive:
    run_id: str
    """The failed run."""
    done: dict[str, StepResult]
    """Its completed steps."""


def apply_overrides(
    spec: Spec,
    overrides: dict[str, dict[str, Any]],
    catalog: Catalog | None = None,
    ref: str | None = None,
) -> Spec:
    """The workflow with `overrides` (step id -> params set in its `with`) applied,
    validated as a push is: SpecError when it is not valid any more (a cycle, a template
    reading what does not exist), each problem saying "`ref` with overrides". `spec` is
    left as it is."""
    from orchestrator.validate import validate_data

    ref = ref or spec.id
    problems = []
    for step_id, params in overrides.items():
        where = f"overrides.{step_id}"
        if not any(step.id == step_id for step in spec.steps):
            problems.append(Problem("", 0, 0, where, f"no step '{step_id}' in {ref}"))
        elif not isinstance(params, dict):
            got = describe_value(params)
            problems.append(Problem("", 0, 0, where, f"expected a mapping of params, got {got}"))
    if problems:
        raise SpecError(problems)
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for raw in data["steps"]:
        raw["with"] = {**raw.get("with", {}), **overrides.get(raw["id"], {})}
    changed, found = validate_data(data, ref, catalog)
    if changed is None:
        # Lines of a text nobody wrote would mislead: the path says where.
        raise SpecError([Problem(f"{ref} with overrides", 0, 0, p.path, p.message) for p in found])
    return changed


def redrive_of(
    run_id: str,
    steps: dict[str, StepResult],
    spec: Spec,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Redrive:
    """A re-drive of failed run `run_id` whose steps ended as `steps`: its completed steps
    are taken as they are, except those `overrides` change and every step that depends on
    one of them (their outputs would be stale)."""
    from orchestrator.validate import dependencies

    graph = dependencies(spec)
    again = set(overrides or {})
    grew = True
    while grew:
        grown = {sid for sid, needed in graph.items() if needed & again} - again
        again |= grown
        grew = bool(grown)
    done = {
        sid: step for sid, step in steps.items() if step.status == "completed" and sid not in again
    }
    return Redrive(run_id, done)


async def original_request(client: Client, run_id: str) -> RunRequest:
    """What a run was started with (its plan and bound inputs), from Temporal's history."""
    handle = run_handle(client, run_id)
    async for event in handle.fetch_history_events():
        attributes = event.workflow_execution_started_event_attributes
        decoded = await client.data_converter.decode(attributes.input.payloads, [RunRequest])
        return decoded[0]  # type: ignore[no-any-return]
    raise ServiceError(f"Temporal has no history for run '{run_id}'")


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


async def live_state(client: Client, run_id: str, timeout: float = 30) -> RunResult | None:
    """The run's step states (and outputs, once ended) from Temporal; None when Temporal
    no longer has it (retention) or never did. A running run's state comes from its worker:
    ServiceError when none answers within `timeout` seconds."""
    from datetime import timedelta

    from temporalio.client import (
        WorkflowExecutionStatus,
        WorkflowQueryFailedError,
        WorkflowQueryRejectedError,
    )
    from temporalio.service import RPCError

    handle = run_handle(client, run_id)
    try:
        described = await handle.describe()
    except RPCError:
        return None
    if described.status != WorkflowExecutionStatus.RUNNING:
        return await wait_run(handle)
    wait = timedelta(seconds=timeout)
    try:
        steps = await handle.query("progress", result_type=dict[str, StepResult], rpc_timeout=wait)
        paused = await handle.query("paused", result_type=bool, rpc_timeout=wait)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
        raise ServiceError(
            f"run {run_id} is running, but no worker told its state: {exc}"
        ) from None
    return RunResult(run_id=run_id, workflow="", status="running", steps=steps, paused=paused)


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
