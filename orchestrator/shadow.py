"""Shadow runs: a run's inputs replayed through a workflow version that must not write.

A step whose call is `none` or `read` (`nodes.Effect`, from its node's manifest and the
call's params) runs. A `write` call is never made: it takes the source run's recorded
output when its params hash as the source run's call did (`ReplayedStep`), else the step is
skipped with `SKIP_REASON`, and so are the steps that need its output. A `for_each` step
runs only when its node's calls can never write.

`replay_of` gathers what a shadow run of a finished run needs; `decide` is the workflow's
rule for one call (pure, so it replays deterministically).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from infra import Settings
from nodes import READ_ONLY, EffectRule, call_effect, canonical_placeholders
from orchestrator.plan import PlannedStep, ReplayedStep
from reflection import inputs_hash

SKIP_REASON = "shadow: write step not replayed"
TRACES_OF_RUN = (
    "SELECT step_id, argMax(inputs_hash, attempt) AS inputs_hash FROM traces"
    " WHERE run_id = {run:String} AND item = -1 AND status = 'ok' GROUP BY step_id"
)
TRACE_WAIT = 10.0
"""Seconds `replay_of` waits for a finished run's traces to reach the warehouse."""


class ShadowSkip(Exception):
    """A `write` call a shadow run may not make (and has no recorded output for)."""


@dataclass(frozen=True)
class Decision:
    run: bool
    """Make the call (it does not write)."""
    output: Any = None
    """Not run: the source run's output for it (when `replayed`)."""
    replayed: bool = False


def may_write(step: PlannedStep) -> bool:
    """Whether any call of the step's node could write, whatever its params."""
    effects = [step.effects, *(rule.get("effect") for rule in step.effects_when)]
    return any(effect not in READ_ONLY for effect in effects)


def effect_of(step: PlannedStep, params: dict[str, Any]) -> str:
    rules = [EffectRule.from_manifest(rule) for rule in step.effects_when]
    return call_effect(step.effects, rules, params)


def decide(
    step: PlannedStep,
    params: dict[str, Any],
    namespace: str,
    replay: dict[str, ReplayedStep],
    item: int = -1,
) -> Decision:
    """What a shadow run does with one call of `step` (raises ShadowSkip to skip it)."""
    if effect_of(step, params) in READ_ONLY and (item < 0 or not may_write(step)):
        return Decision(run=True)
    recorded = replay.get(step.id)
    if item < 0 and recorded is not None:
        keyed = canonical_placeholders(params) if step.secrets else params
        if inputs_hash(step.node, step.version, keyed, namespace) == recorded.inputs_hash:
            return Decision(run=False, output=recorded.output, replayed=True)
    raise ShadowSkip(SKIP_REASON)


async def replay_of(
    settings: Settings, client: Any, run_id: str
) -> tuple[dict[str, Any], dict[str, ReplayedStep]]:
    """The inputs run `run_id` was started with, and each of its completed steps' output
    with the hash of the params its call had (from its trace): what a shadow run of it
    may take for a write step."""
    from orchestrator.runs import live_state, original_request
    from reflection import query

    original = await original_request(client, run_id)
    state = await live_state(client, run_id)
    steps = state.steps if state is not None else {}
    called = {  # the steps whose completed call a write step of the shadow run may take
        step.id for step in original.plan.steps
        if step.for_each is None and step.meta is None and step.id not in original.done
        and steps.get(step.id) is not None and steps[step.id].status == "completed"
    }  # fmt: skip
    deadline = time.monotonic() + TRACE_WAIT
    while True:  # traces reach ClickHouse a moment after the run ends: wait for them
        found = await query(settings, TRACES_OF_RUN, {"run": run_id})
        hashes = {row[0]: row[1] for row in found.rows}
        if called <= hashes.keys() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    replay = {
        step_id: ReplayedStep(inputs_hash=hashes[step_id], output=result.output)
        for step_id, result in steps.items()
        if step_id in called and hashes.get(step_id)
    }
    given = {k: v for k, v in original.inputs.items() if v is not None}
    return given, replay
