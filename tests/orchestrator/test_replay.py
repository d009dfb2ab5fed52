"""The worker runs our workflows unsandboxed (for speed); these replay real histories under
Temporal's workflow sandbox, so workflow code that is non-deterministic or reaches for what
the sandbox forbids (time, randomness, I/O, mutable module state) fails here."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from orchestrator.runs import connect_temporal, run_handle
from orchestrator.triggers import TriggerWorkflow
from orchestrator.workflow import DagWorkflow
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
        workflows=[DagWorkflow, TriggerWorkflow],
        workflow_runner=SANDBOX,
        data_converter=client.data_converter,
    )
    for run_id in run_ids:
        history = await run_handle(client, run_id).fetch_history()
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
