"""The worker runs our workflows unsandboxed (for speed); these replay real histories under
Temporal's workflow sandbox, so workflow code that is non-deterministic or reaches for what
the sandbox forbids (time, randomness, I/O, mutable module state) fails here."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from infra.database import pool_for
from orchestrator.runs import connect_temporal, submit, wait_run
from orchestrator.triggers import TriggerWorkflow
from orchestrator.validate import parse_spec
from orchestrator.workflow import WORKFLOWS
from registry.nodes import NodeRegistry
from tests.helpers.requests import run_request
from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(180)

# Our modules and the template engine are deterministic and side-effect free: shared with the
# sandbox rather than re-imported per run.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "jinja2", "markupsafe", "yaml", "infra", "nodes", "orchestrator", "reflection", "registry"
    )
)

EVERYTHING = """
id: replay-everything
inputs:
  items: {type: array, default: [1, 2, 3]}
steps:
  - {id: first, node: core.transform@1, with: {value: 1}}
  - {id: slow, node: test.sleep@1, with: {seconds: 0.05, label: regular}}
  - id: each
    node: core.transform@1
    for_each: "{{ inputs.items }}"
    concurrency: 2
    with: {value: "{{ item * steps.first.output.value }}"}
  - {id: pick, node: core.switch@1, with: {value: b, cases: {a: a, b: b}}}
  - {id: wait, node: core.delay@1, with: {duration: 100ms}, needs: [pick]}
  - {id: skipped, node: core.transform@1, if: "{{ steps.pick.output.branch == 'a' }}",
     with: {value: 0}}
  - {id: soft, node: test.flaky@1, continue_on_error: true, retry: {max_attempts: 1},
     with: {record_dir: "{record_dir}", failures: 5}}
outputs:
  total: "{{ steps.each.output | map(attribute='value') | sum }}"
"""
FAILING = """
id: replay-failing
steps:
  - {id: ok, node: core.transform@1, with: {value: 1}}
  - {id: broken, node: test.flaky@1, local: true, needs: [ok], retry: {max_attempts: 2,
     initial_interval: 0.1s}, with: {record_dir: "{record_dir}", failures: 5}}
  - {id: never, node: core.transform@1, needs: [broken], with: {value: 2}}
"""


async def replay(stack: RunningStack, run_ids: list[str]) -> None:
    client = await connect_temporal(stack.settings)
    replayer = Replayer(
        workflows=[*WORKFLOWS, TriggerWorkflow],
        workflow_runner=SANDBOX,
        data_converter=client.data_converter,
    )
    for run_id in run_ids:
        history = await client.get_workflow_handle(run_id).fetch_history()
        await replayer.replay_workflow(history)  # raises on any divergence or violation


def test_histories_replay_under_the_workflow_sandbox(stack: RunningStack, tmp_path):
    done = stack.run(EVERYTHING.replace("{record_dir}", str(tmp_path / "a")))
    assert done.status == "completed", done.error
    assert done.outputs == {"total": 6}
    assert done.steps["skipped"].status == "skipped"
    assert done.steps["soft"].status == "failed"
    failed = stack.run(FAILING.replace("{record_dir}", str(tmp_path / "b")))
    assert failed.status == "failed" and failed.steps["never"].status == "cancelled"
    asyncio.run(replay(stack, [done.run_id, failed.run_id]))


SHORT_LOCAL = """
id: query-split
steps:
  - {id: only, node: core.transform@1, local: true, with: {value: 1}}
"""


def split_between_markers(history: WorkflowHistory) -> bool:
    """Whether a workflow task ended between the step's local-activity marker and the next
    (the run's end): what ran after the step was recorded in another task."""
    kinds = [
        "marker" if e.HasField("marker_recorded_event_attributes") else "task"
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        or e.HasField("workflow_task_completed_event_attributes")
    ]
    markers = [i for i, kind in enumerate(kinds) if kind == "marker"]
    return len(markers) > 1 and "task" in kinds[markers[0] : markers[-1]]


async def split_run(stack: RunningStack, tries: int = 300) -> str:
    """A run whose workflow task a query split after its local step: started and queried at
    once (now and then the query catches the first task in flight), until one is."""
    async with pool_for(stack.settings) as pool:
        catalog = await NodeRegistry(pool, stack.settings.user).catalog()
        spec = parse_spec(SHORT_LOCAL, catalog=catalog)
        client = await connect_temporal(stack.settings)
        for _ in range(tries):
            handle = await submit(client, pool, stack.settings, spec, catalog, {})
            await handle.query("progress")
            assert (await wait_run(handle)).status == "completed"
            if split_between_markers(await handle.fetch_history()):
                return handle.id
    raise AssertionError(f"no query split a workflow task after the step in {tries} runs")


def test_a_run_whose_task_a_query_split_replays(stack: RunningStack):
    """A query reaching a run while its first workflow task runs a local step splits that
    task: the step's marker lands in one, what follows in the next. What the workflow does
    after a local step must not depend on where that boundary fell (a `workflow.patched`
    there did: the query failed with a nondeterminism error)."""
    run_id = asyncio.run(split_run(stack))
    asyncio.run(replay(stack, [run_id]))


SHARDED = """
id: replay-shards
inputs:
  items: {type: array}
steps:
  - {id: first, node: core.transform@1, with: {value: 10}}
  - id: each
    node: core.transform@1
    for_each: "{{ inputs.items }}"
    concurrency: 3
    with: {value: "{{ item + steps.first.output.value }}"}
  - {id: never, node: core.transform@1, needs: [each], with: {value: 0}}
"""


def test_shards_and_runs_the_engine_fails_replay(stack: RunningStack):
    """A fan-out in child workflows (replayed, each of them), and runs the engine fails
    itself: steps it can never reach, a step it cannot schedule."""

    def small_shards(request) -> None:
        request.limits.fanout_shard_items = 2

    def unreachable(request) -> None:
        request.plan.steps[-1].needs = ["ghost"]

    async def runs() -> list[str]:
        _, sharded = await run_request(stack, SHARDED, {"items": [1, 2, 3, 4, 5]}, small_shards)
        assert sharded.status == "completed", sharded.error
        assert [o["value"] for o in sharded.steps["each"].output] == [11, 12, 13, 14, 15]
        _, stuck = await run_request(stack, SHARDED, {"items": [1]}, unreachable)
        assert stuck.status == "failed" and stuck.steps["never"].status == "failed"
        huge = SHARDED.replace("value: 0}", "value: 0}, timeout: 99999999999d")
        _, unschedulable = await run_request(stack, huge, {"items": [1]})
        assert unschedulable.steps["never"].error.class_ == "EngineError"
        shards = [f"{sharded.run_id}/each/{i}" for i in range(3)]
        return [sharded.run_id, *shards, stuck.run_id, unschedulable.run_id]

    asyncio.run(replay(stack, asyncio.run(runs())))
