"""A `Plan` is a validated `Spec` compiled for the engine: node versions resolved and pinned,
the dependency graph explicit, meta-steps marked. It is the Temporal workflow's input, so it
holds only plain data.
"""

from __future__ import annotations

import math
import secrets
from typing import Any, Literal

from pydantic import BaseModel, Field

from infra import SpecError
from orchestrator.spec import Spec
from orchestrator.validate import dependencies, step_references
from registry import Catalog

MetaKind = Literal["delay", "switch"]
META_NODES: dict[str, MetaKind] = {"core.delay": "delay", "core.switch": "switch"}
DEFAULT_TIMEOUT = 300.0
"""A step's timeout when neither it nor its node's manifest sets one."""


class RetryPolicy(BaseModel):
    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 30.0
    non_retryable: list[str] = Field(default_factory=list)


class PlannedStep(BaseModel):
    id: str
    node: str
    version: str
    """The exact version pinned for this run."""
    meta: MetaKind | None = None
    with_: dict[str, Any] = Field(default_factory=dict)
    if_: Any = None
    for_each: Any = None
    concurrency: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    local: bool = False
    """Run as a Temporal local activity: in the worker, recorded in the workflow's history
    when its workflow task completes, with no server round trip of its own."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    continue_on_error: bool = False
    cache_ttl: float | None = None
    """Seconds a result may be reused by an identical call; None: never cached."""
    secrets: list[str] | None = None
    """The names its templates pass to `secret()`: the only ones its node call resolves
    (None: a plan made before the list; then any name in a secret-bearing param)."""
    needs: list[str] = Field(default_factory=list)
    """Every step this one waits for."""
    needs_output: list[str] = Field(default_factory=list)
    """The subset whose skip or failure skips this step too (all but status-only reads)."""
    effects: str = "write"
    """What its node's calls may do (`nodes.Effect`) when no rule of `effects_when` matches
    their params; a plan made before effects were declared says `write`."""
    effects_when: list[dict[str, Any]] = Field(default_factory=list)
    """The node's per-call rules, as its manifest gives them (`nodes.EffectRule`)."""


class Plan(BaseModel):
    workflow: str
    namespace: str = "default"
    version: int | None = None
    steps: list[PlannedStep]
    outputs: dict[str, Any] = Field(default_factory=dict)


class RunInfo(BaseModel):
    id: str
    workflow: str
    version: int | None = None
    redrive_of: str | None = None
    """The failed run this one re-drives."""
    labels: dict[str, str] = Field(default_factory=dict)
    """What the run is part of (`experiment=try1`, `arm=candidate`, `shadow=true`,
    `rollout=ID@N`): on the run ledger and on every trace event of the run."""
    shadow_of: str | None = None
    """Set: a shadow replay of this run's inputs, which never performs a write."""


class ReplayedStep(BaseModel):
    """What a shadow run may take for a `write` step from the run it replays."""

    inputs_hash: str
    """Of the source run's call: the shadow call must hash the same to take its output."""
    output: Any = None


StepStatus = Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]
RunStatus = Literal["running", "completed", "failed", "cancelled"]


class StepError(BaseModel):
    class_: str = Field(alias="class")
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


class StepResult(BaseModel):
    status: StepStatus = "pending"
    attempts: int = 0
    cache_hits: int = 0
    """Calls answered from the step cache (for `for_each`, one per cached item)."""
    output: Any = None
    error: StepError | None = None
    reason: str | None = None
    """Why a skipped step was skipped, when the workflow says (a shadow run's write step)."""
    node: str = ""
    version: str = ""
    started_at: float | None = None
    """Workflow time (epoch seconds) the step was scheduled."""
    finished_at: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class RunResult(BaseModel):
    run_id: str
    workflow: str
    status: RunStatus
    paused: bool = False
    """A running run whose new steps wait for `resume`."""
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepResult] = Field(default_factory=dict)
    error: StepError | None = None
    failed_step: str | None = None


class RunLimits(BaseModel):
    """The bounds a run's workflow applies, as `settings.limits` had them when the run was
    prepared: the workflow reads no settings, so what it does replays the same."""

    fanout_max_items: int = 100_000
    """A `for_each` over more items fails the step at once."""
    fanout_shard_items: int = 1_000
    """A `for_each` over more items runs in child workflows of at most this many each."""
    expression_max_bytes: int = 1024 * 1024
    expression_max_iterations: int = 100_000

    @classmethod
    def of(cls, limits: Any) -> RunLimits:
        """From `settings.limits` (an `infra.settings.LimitsSettings`)."""
        return cls(**{name: getattr(limits, name) for name in cls.model_fields})


MAX_SHARDS = 1_000
"""The most child workflows one fan-out starts: beyond, shards hold more items than
`fanout_shard_items`, so the run's own history stays far from Temporal's limits."""


def shard_size(items: int, shard_items: int) -> int:
    """Items per child workflow of a fan-out over `items`."""
    return max(1, shard_items, math.ceil(items / MAX_SHARDS))


SHARDS_AT_ONCE = 4
SHARD_IN_FLIGHT = 250
"""Bounds on a sharded fan-out whatever its `concurrency`: children running at once, and
items in flight in each. More would not run faster (a worker runs 100 local activities at
a time) and a workflow activation scheduling thousands of activities at once can take
longer than Temporal's deadlock detector allows (2 s) on a busy machine."""


def shard_lanes(concurrency: int | None, size: int, shards: int) -> tuple[int, int]:
    """(children running at once, items in flight in each) for a step's `concurrency` over
    `shards` children of `size` items: the fewest children that can use the budget, the
    budget split evenly between them, so the step never has more than `concurrency` items
    in flight. Unbounded: `SHARDS_AT_ONCE` children of `SHARD_IN_FLIGHT` items."""
    budget = concurrency if concurrency is not None else SHARDS_AT_ONCE * SHARD_IN_FLIGHT
    per_child = min(size, SHARD_IN_FLIGHT)
    lanes = max(1, min(shards, SHARDS_AT_ONCE, math.ceil(budget / per_child)))
    return lanes, max(1, min(per_child, budget // lanes))


class ShardRequest(BaseModel):
    """One child workflow of a large fan-out: a slice of a step's items to run."""

    run: RunInfo
    namespace: str
    step: PlannedStep
    items: list[Any]
    offset: int
    """The index of the first item in the step's whole `for_each`."""
    concurrency: int | None = None
    limits: RunLimits | None = None
    secret_nonce: str | None = None


class ShardResult(BaseModel):
    """What a shard did: its items' outputs in order (none when it failed)."""

    outputs: list[Any] = Field(default_factory=list)
    attempts: int = 0
    cache_hits: int = 0
    error: StepError | None = None


class RunRequest(BaseModel):
    run: RunInfo
    plan: Plan
    inputs: dict[str, Any] = Field(default_factory=dict)
    done: dict[str, StepResult] = Field(default_factory=dict)
    """Steps already completed (by the run re-driven): taken as they are, not run again."""
    limits: RunLimits | None = None
    """Set on every run prepared now; None: a run prepared before limits reached the
    workflow, which replays as it ran (no fan-out shards, no item limit)."""
    local_end: bool = False
    """Record the run's end as a local activity (no server round trip). Every run prepared
    now says so; runs prepared before this field recorded it as a regular activity and
    replay as they ran. Carried in the request, not decided by `workflow.patched`: a patch
    checked after a local activity can replay differently from how it ran when a query
    splits the workflow task (the marker lands in the next task)."""
    secret_nonce: str | None = None
    """Random per run: `secret('X')` renders `${secret:X:<nonce>}` and the node service
    resolves only placeholders that carry it, so data cannot ask for a secret."""
    replay: dict[str, ReplayedStep] | None = None
    """Set for a shadow run (`RunInfo.shadow_of`): step id -> the source run's completed
    `write` call. A `write` call takes that output when its params hash the same, else the
    step is skipped: a shadow run never performs a write."""


def new_secret_nonce() -> str:
    return secrets.token_hex(16)


def resolve_pins(spec: Spec, catalog: Catalog, run_id: str) -> dict[str, str]:
    """Step id -> the exact node version it runs in run `run_id` (rollouts included)."""
    return {
        step.id: catalog.resolve(step.node_name, step.node_version_spec, run_id)
        for step in spec.steps
    }


def runs_local(local: bool | None, timeout: float, local_timeout: float) -> bool:
    """The fast path's rule: a step runs as a local activity when it says `local: true`, or
    says nothing and its timeout is at most `local_timeout`. Long steps stay regular
    activities: a worker crash redoes a local step whole, and while local steps run the
    workflow task stays open, so cancels, queries and signals wait (up to its heartbeat)."""
    return local if local is not None else timeout <= local_timeout


def build_plan(
    spec: Spec,
    pins: dict[str, str],
    version: int | None = None,
    catalog: Catalog | None = None,
    local_timeout: float = 0.0,
) -> Plan:
    """Compile a validated spec with every step's node version pinned (`resolve_pins`).
    `catalog` gives the timeouts nodes declare, for steps that set none; `local_timeout`
    (`REFLUX_TEMPORAL_LOCAL_STEP_TIMEOUT`) is the fast path's limit (0: only steps that say
    `local: true`)."""
    graph = dependencies(spec)
    steps = []
    for step in spec.steps:
        pinned = pins.get(step.id)
        if pinned is None:
            raise SpecError([f"step {step.id}: no version pinned for {step.node}"])
        timeout = step.timeout
        if timeout is None and catalog is not None:
            timeout = catalog.timeout(step.node_name, pinned)
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        refs = step_references(step)
        reads = refs.steps
        cache = step.cache
        cacheable = cache is not None and (cache.allow_secrets or not refs.secrets)
        status_only = {sid for sid, attrs in reads.items() if attrs == {"status"}}
        needs = sorted(graph[step.id])
        effects, effects_when = (
            catalog.effects(step.node_name, pinned) if catalog else ("write", ())
        )
        steps.append(
            PlannedStep(
                id=step.id,
                node=step.node_name,
                version=pinned,
                meta=META_NODES.get(step.node_name),
                with_=step.with_,
                if_=step.if_,
                for_each=step.for_each,
                concurrency=step.concurrency,
                timeout=timeout,
                local=runs_local(step.local, timeout, local_timeout),
                retry=RetryPolicy(**step.retry.model_dump()),
                continue_on_error=step.continue_on_error,
                cache_ttl=cache.ttl if cache is not None and cacheable else None,
                secrets=sorted(refs.secrets),
                needs=needs,
                needs_output=[sid for sid in needs if sid not in status_only],
                effects=effects,
                effects_when=[dict(rule) for rule in effects_when],
            )
        )
    return Plan(
        workflow=spec.id,
        namespace=spec.namespace,
        version=version,
        steps=steps,
        outputs=spec.outputs,
    )
