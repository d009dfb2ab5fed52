"""Validation: a proposal's change tried against a fresh baseline at the same time, then
judged (`evolution.judge`).

- **shadow** (the change touches no step that may write): the inputs of the workflow's
  last N live runs are replayed through the live version and through the candidate (the
  live version with the mutations) side by side, as variant runs labelled
  `experiment=<proposal>`, `arm=baseline|candidate`, `shadow=true`. A shadow run never
  performs a write (`orchestrator` replays or skips such steps). Fewer live runs than N:
  they are replayed in turn until each arm has N.
- **canary** (the change touches a step that may write): the candidate is stored as a
  candidate workflow version and a workflow rollout sends `REFLUX_EVOLUTION_CANARY_PERCENT`
  of new live runs to it until each arm has N ended runs (the baseline arm is the live
  version's runs over the same time), then the rollout goes back to 0.

Every run a validation launches has an id derived from the proposal and the validation's
key, so a retried launch starts nothing twice, and the arms are those ids (a canary's are
read from the ledger by version and time), never whatever carries a label.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.client import Client

from evolution.judge import JudgeConfig, interim, judge
from evolution.proposals.model import NODE_OPS, MetricVerdict, Proposal, Validation
from evolution.samples import arm_series, target_metric
from infra import ConfigError, LifecycleError, NotFoundError, Settings, SpecError

log = logging.getLogger("reflux.evolution")

JUDGED_METRICS = ("error_rate", "latency_ms")
"""What a proposal's `expected.metric` may target; another (a timeout's `max_wait_s`) is
not measured by the runs: then nothing may be worse, and nothing needs to be better."""
LOOKS = 5
"""Planned looks at a canary's or watch's samples (the judge spends its interim alpha over
them): four interim, at each fifth of the way, and the final judgement."""
TRACE_SETTLE = 3.0
"""Seconds after a shadow validation's last run ended before judging: its traces are on
their way to ClickHouse."""
SOURCE_POOL = 200
NODE_ARM_POOL = 5000
"""How many live runs since a node-level validation began are sorted into its arms."""
"""How many recent live runs are looked at to find the N a shadow validation replays."""


def validation_key(proposal_id: str, seed: str) -> str:
    return hashlib.sha256(f"{proposal_id}\0{seed}".encode()).hexdigest()[:6]


async def choose_mode(pool: asyncpg.Pool, proposal: Proposal) -> str:
    """shadow unless a step the mutations touch, or one downstream of it (its params may
    read what changed), may write: then canary, since a shadow run would skip the very
    step the change reaches; a node's change too (canary)."""
    from orchestrator import (
        apply_mutations,
        build_plan,
        load_version,
        parse_mutations,
        resolve_pins,
    )

    if any(op.get("op") in NODE_OPS for op in proposal.mutation):
        return "canary"
    live = await load_version(pool, proposal.workflow_id)
    ops = parse_mutations(proposal.mutation)
    changed = apply_mutations(live.spec, ops, live.catalog, live.stored.ref)
    plans = [  # the step as it is and as it would be: either writing makes it a canary
        build_plan(spec, resolve_pins(spec, live.catalog, "validation"), None, live.catalog)
        for spec in (live.spec, changed)
    ]
    touched = {step.get("id") if isinstance(step, dict) else step
               for step in (op.get("step") for op in proposal.mutation)}  # fmt: skip
    steps = [step for plan in plans for step in plan.steps]
    grew = True
    while grew:  # and every step downstream of one touched
        reached = {s.id for s in steps if touched.intersection(s.needs)}
        grew = not reached <= touched
        touched |= reached
    if any(writes(step) for step in steps if step.id in touched):
        return "canary"
    return "shadow"


def writes(step: Any) -> bool:
    """Whether the step's calls may write, as far as its params say before they are
    resolved: an effect rule on a param given as a template (or a fan-out's per-item
    value) counts as the node's base effect."""
    from nodes import READ_ONLY
    from orchestrator import effect_of, may_write

    if step.for_each is not None:
        return may_write(step)
    return effect_of(step, step.with_) not in READ_ONLY


async def plan(
    pool: asyncpg.Pool, settings: Settings, proposal: Proposal, mode: str | None, runs: int | None,
    key: str,
) -> Validation:  # fmt: skip
    """What a new validation will do: its mode, its arms' size and, for shadow, the live
    runs it replays. LifecycleError when it cannot be done now (no live run to replay),
    ConfigError for a bad mode."""
    from registry import WorkflowRegistry
    from registry import runs as ledger

    if not proposal.mutation:
        raise ConfigError(f"proposal {proposal.id} has no mutation to validate")
    if mode not in (None, "shadow", "canary"):
        raise ConfigError(f"mode must be shadow or canary, not {mode!r}")
    needed = await choose_mode(pool, proposal)
    if mode == "shadow" and needed == "canary":
        raise ConfigError(
            "the change reaches a step that may write, which a shadow run skips: only a"
            " canary validates it"
        )
    chosen = mode or needed
    target = runs or settings.evolution.samples
    live = await WorkflowRegistry(pool, "").live(proposal.workflow_id)
    validation = Validation(
        mode=chosen,  # type: ignore[arg-type]
        target=target,
        metric=proposal.expected.metric if proposal.expected else "error_rate",
        key=key,
        base_version=live.version,
        started_at=datetime.now(UTC),
    )
    node_ops = [op for op in proposal.mutation if op.get("op") in NODE_OPS]
    if node_ops:
        if chosen == "shadow":
            raise ConfigError("a node's rollout is validated on live runs: use canary mode")
        validation.node_arms = await node_arms(pool, node_ops)
    elif chosen == "canary":
        rollout = await WorkflowRegistry(pool, "").rollout(proposal.workflow_id)
        if rollout is not None:
            raise LifecycleError(
                f"workflow {proposal.workflow_id} has a rollout of @{rollout.version} at"
                f" {rollout.percent}%: a canary would replace it (end it first)"
            )
    if chosen == "shadow":
        recent = await ledger.live_runs(pool, proposal.workflow_id, limit=SOURCE_POOL)
        sources = [r.id for r in recent if r.status in ("completed", "failed")][:target]
        if not sources:
            raise LifecycleError(
                f"workflow {proposal.workflow_id} has no ended live run to replay: run it,"
                " or validate in canary mode"
            )
        validation.sources = sources
        validation.runs = {
            arm: [f"{proposal.id}-{key}-{arm[0]}{i}" for i in range(target)]
            for arm in ("baseline", "candidate")
        }
    return validation


async def node_arms(pool: asyncpg.Pool, ops: list[dict[str, Any]]) -> dict[str, str]:
    """The node versions a node-level change moves runs between: `baseline`, what calls of
    the node run on now that the change would stop (or what they run without it), and
    `candidate`, what they would run. Both take live traffic while the node's rollout
    splits it, so the arms run at the same time."""
    from registry import NodeRegistry

    (op,) = ops[:1]
    name, version = op["node"], op["version"]
    catalog = await NodeRegistry(pool, "").catalog()
    production = [v for v in catalog.versions.get(name, []) if v.status == "production"]
    if not production:
        raise LifecycleError(f"{name} has no production version to compare {version} with")
    released = str(max(v.semver for v in production))
    if op["op"] == "rollout" and int(op.get("percent", 0)) > 0:
        return {"node": name, "baseline": released, "candidate": version}
    if released == version:  # deprecating the production version: runs fall back to …
        raise LifecycleError(
            f"{name}@{version} is the production version: pin the steps to another version"
            " (replace_node) and validate that instead"
        )
    return {"node": name, "baseline": version, "candidate": released}


async def launch(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    proposal: Proposal,
    validation: Validation,
    actor: str,
    beat: Callable[[str], None] = lambda _: None,
) -> Validation:
    """Start what the validation needs that is not started yet: a shadow's runs (each id
    once), or a canary's candidate version and rollout. Returns the validation as it now
    stands (a canary's candidate version set)."""
    if validation.node_arms:  # the node's rollout sends the traffic: nothing to start
        return validation
    if validation.mode == "canary":
        return await _start_canary(client, pool, settings, proposal, validation, actor)
    from orchestrator import launch as start
    from registry import runs as ledger

    existing = {r.id for r in await ledger.runs_by_id(pool, [
        *validation.runs["baseline"], *validation.runs["candidate"]])}  # fmt: skip
    labels = {"experiment": proposal.id}
    for i in range(validation.target):
        source = validation.sources[i % len(validation.sources)]
        for arm in ("baseline", "candidate"):
            run_id = validation.runs[arm][i]
            if run_id in existing:
                continue
            mutations = proposal.mutation if arm == "candidate" else ()
            try:
                await start(
                    client, pool, settings, proposal.workflow_id, validation.base_version,
                    mutations=mutations, labels={**labels, "arm": arm}, actor=actor,
                    run_id=run_id, shadow_of=source,
                )  # fmt: skip
            except NotFoundError as exc:  # the source's history is past retention: skip it
                log.warning("validation of %s: %s not replayed: %s", proposal.id, run_id, exc)
            beat(run_id)
    return validation


async def _start_canary(
    client: Client, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    validation: Validation, actor: str,
) -> Validation:  # fmt: skip
    from orchestrator import revise
    from registry import WorkflowRegistry

    if validation.candidate_version is None:
        note = f"candidate of proposal {proposal.id}: {proposal.title}"
        revision = await revise(
            pool, actor, proposal.workflow_id, validation.base_version, proposal.mutation,
            candidate=True, note=note[:500],
        )  # fmt: skip
        if revision.version == validation.base_version:
            raise SpecError([f"proposal {proposal.id}: the mutations change nothing"])
        validation.candidate_version = revision.version
    registry = WorkflowRegistry(pool, actor)
    percent = settings.evolution.canary_percent
    await registry.set_rollout(proposal.workflow_id, validation.candidate_version, percent)
    return validation


async def arms(pool: asyncpg.Pool, proposal: Proposal, validation: Validation) -> dict[str, list]:
    """Each arm's ledger runs as they stand (a canary's: its versions' live runs since it
    began, at most `target` each)."""
    from registry import runs as ledger

    if validation.mode == "shadow":
        found = {r.id: r for r in await ledger.runs_by_id(pool, [
            *validation.runs["baseline"], *validation.runs["candidate"]])}  # fmt: skip
        return {arm: [found[i] for i in ids if i in found] for arm, ids in validation.runs.items()}
    if validation.node_arms:
        return await _node_arm_runs(pool, proposal, validation)
    candidate = await ledger.live_runs(
        pool, proposal.workflow_id, started_after=validation.started_at,
        version=validation.candidate_version, oldest_first=True, limit=validation.target,
    )  # fmt: skip
    # The baseline takes the rest of the traffic, so it fills faster: its runs are picked
    # evenly over the span the candidate's took, not the first ones (a fresh baseline is
    # one of the same time, load and inputs).
    until = candidate[-1].started_at if len(candidate) >= validation.target else None
    baseline = await ledger.live_runs(
        pool, proposal.workflow_id, started_after=validation.started_at,
        started_before=until, version=validation.base_version, oldest_first=True,
        limit=NODE_ARM_POOL,
    )  # fmt: skip
    if until is not None and len(baseline) < validation.target:  # the span was too short
        baseline = await ledger.live_runs(
            pool, proposal.workflow_id, started_after=validation.started_at,
            version=validation.base_version, oldest_first=True, limit=validation.target,
        )  # fmt: skip
    return {"baseline": spread(baseline, validation.target), "candidate": candidate}


def spread(runs: list[Any], count: int) -> list[Any]:
    """`count` of `runs` evenly spaced (all when there are no more)."""
    if len(runs) <= count:
        return runs
    step = len(runs) / count
    return [runs[int(i * step)] for i in range(count)]


async def _node_arm_runs(
    pool: asyncpg.Pool, proposal: Proposal, validation: Validation
) -> dict[str, list[Any]]:
    """A node-level change's arms: live runs since the validation began whose steps on
    the node were pinned to each arm's version (the ledger keeps every run's pins)."""
    from registry import runs as ledger

    node = validation.node_arms["node"]
    wanted = {validation.node_arms[arm]: arm for arm in ("baseline", "candidate")}
    found: dict[str, list[Any]] = {"baseline": [], "candidate": []}
    recent = await ledger.live_runs(
        pool, proposal.workflow_id, started_after=validation.started_at, ended=False,
        oldest_first=True, limit=NODE_ARM_POOL,
    )  # fmt: skip
    for run in recent:
        versions = {pin["version"] for pin in run.pins.values() if pin.get("node") == node}
        if len(versions) == 1 and (arm := wanted.get(versions.pop())) is not None:
            if len(found[arm]) < validation.target:
                found[arm].append(run)
    return found


async def check(
    pool: asyncpg.Pool, settings: Settings, proposal: Proposal, validation: Validation
) -> tuple[bool, bool, Validation]:
    """(done, harmful, validation with the samples so far). Done: every shadow run ended
    (and its traces had time to land), each canary arm is full, or the wait is over.
    Harmful: the judge's interim look says stop (canary only: a shadow harms nothing)."""
    found = await arms(pool, proposal, validation)
    ended = {arm: [r for r in runs if r.status != "running"] for arm, runs in found.items()}
    validation.samples = {arm: len(runs) for arm, runs in ended.items()}
    if validation.mode == "canary":
        validation.runs = {arm: [r.id for r in runs] for arm, runs in ended.items()}
    now = datetime.now(UTC)
    waited = (now - validation.started_at).total_seconds() if validation.started_at else 0.0
    limit = settings.evolution.shadow_wait if validation.mode == "shadow" else (
        settings.evolution.canary_wait)  # fmt: skip
    if waited > limit.total_seconds():
        return True, False, validation
    if validation.mode == "shadow":
        planned = sum(len(ids) for ids in validation.runs.values())
        launched = sum(len(runs) for runs in found.values())
        all_ended = launched >= planned and all(len(ended[a]) == len(found[a]) for a in found)
        last = max((r.ended_at for runs in ended.values() for r in runs if r.ended_at),
                   default=None)  # fmt: skip
        settled = last is None or (now - last).total_seconds() >= TRACE_SETTLE
        return all_ended and settled, False, validation
    full = all(len(ended[arm]) >= validation.target for arm in ended)
    if full:
        return True, False, validation
    look = due_look(min(validation.samples.values()), validation.target, validation.looks)
    if look is None:
        return False, False, validation
    validation.looks = look
    series = await arm_series(settings, ended, proposal.step_id)
    harm = interim(series, look, LOOKS - 1, judge_config(settings))
    if harm is not None:
        validation.reason = harm.reason
    return False, harm is not None, validation


def due_look(samples: int, target: int, taken: int) -> int | None:
    """The interim look due at `samples` per arm of `target` (looks at every LOOKS-th of
    the way, the last one being the final judgement), if one is due that was not taken."""
    reached = min(samples * LOOKS // max(target, 1), LOOKS - 1)
    return reached if reached > taken else None


async def finish(
    pool: asyncpg.Pool, settings: Settings, proposal: Proposal, validation: Validation,
    actor: str, judged: bool = True,
) -> Validation:  # fmt: skip
    """End the validation: a canary's rollout back to 0; then, unless stopped, the
    judgement of the ended runs."""
    from registry import WorkflowRegistry

    if validation.mode == "canary" and validation.candidate_version is not None:
        registry = WorkflowRegistry(pool, actor)
        current = await registry.rollout(proposal.workflow_id)
        if current is not None and current.version == validation.candidate_version:
            await registry.set_rollout(proposal.workflow_id, validation.candidate_version, 0)
    validation.ended_at = datetime.now(UTC)
    if not judged:
        validation.reason = "stopped before it was judged"
        return validation
    found = await arms(pool, proposal, validation)
    ended = {arm: [r for r in runs if r.status != "running"] for arm, runs in found.items()}
    series = await arm_series(settings, ended, proposal.step_id)
    metric = validation.metric or "error_rate"
    target = target_metric(metric, proposal.step_id) if metric in JUDGED_METRICS else None
    verdict = judge(series, target, judge_config(settings))
    validation.result = verdict.result
    validation.reason = verdict.reason
    distinct = len(set(validation.sources))
    if (
        validation.mode == "shadow"
        and verdict.result == "pass"
        and distinct < min(validation.target, settings.evolution.min_samples)
    ):  # replays of a few inputs are not that many independent samples
        validation.result = "inconclusive"
        validation.reason = (
            f"{verdict.reason} But only {distinct} distinct live runs were replayed"
            f" (fewer than {settings.evolution.min_samples}): run the workflow more."
        )
    validation.samples = verdict.samples.model_dump()
    validation.metrics = [MetricVerdict(**m.model_dump()) for m in verdict.metrics]
    return validation


def judge_config(settings: Settings) -> JudgeConfig:
    return JudgeConfig(min_samples=settings.evolution.min_samples)


STATUS_OF: dict[str, str] = {
    "pass": "validated",
    "fail": "failed_validation",
    "inconclusive": "inconclusive",
}
