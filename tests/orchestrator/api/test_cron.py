"""Cron triggers: a Temporal Schedule per trigger, firing runs of the latest version, and
gone when a pushed version drops the trigger."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from temporalio.service import RPCError

from orchestrator.runs import connect_temporal
from orchestrator.triggers import schedule_id
from tests.helpers.stack import RunningStack
from tests.orchestrator.api.conftest import auth, poll_run

FLOW = """
id: {id}
inputs:
  who: {{type: string, required: true}}
steps:
  - id: hello
    node: core.transform@1
    with: {{value: "hi {{{{ inputs.who }}}}"}}
outputs:
  greeting: "{{{{ steps.hello.output.value }}}}"
{triggers}
"""
TICK = """triggers:
  - type: cron
    id: tick
    every: 2s
    inputs: {who: cron}
"""


def schedule_exists(stack: RunningStack, sid: str) -> bool:
    async def describe() -> bool:
        client = await connect_temporal(stack.settings)
        try:
            await client.get_schedule_handle(sid).describe()
            return True
        except RPCError:
            return False

    return asyncio.run(describe())


def cron_runs(api, tokens, workflow_id: str) -> list[dict]:
    runs = api.get("/runs", params={"workflow": workflow_id}, headers=auth(tokens["viewer"]))
    return [r for r in runs.json() if r["started_by"] == "cron:tick"]


def test_a_schedule_fires_and_goes_with_its_trigger(stack: RunningStack, api, tokens):
    workflow_id = f"cron-{uuid.uuid4().hex[:8]}"
    pushed = api.post("/workflows", json={"source": FLOW.format(id=workflow_id, triggers=TICK)},
                      headers=auth(tokens["author"]))  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    sid = schedule_id(workflow_id, "tick")
    assert schedule_exists(stack, sid)

    deadline = time.monotonic() + 30
    while not cron_runs(api, tokens, workflow_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    fired = cron_runs(api, tokens, workflow_id)
    assert fired, "the schedule never started a run"
    run_id = fired[-1]["run_id"]
    run = poll_run(api, tokens, run_id)
    assert (run["status"], run["outputs"]) == ("completed", {"greeting": "hi cron"})

    # version 2 drops the trigger: its schedule is deleted, no run starts after
    without = FLOW.format(id=workflow_id, triggers="")
    assert (
        api.post("/workflows", json={"source": without}, headers=auth(tokens["author"])).status_code
        == 201
    )  # noqa: E501
    assert not schedule_exists(stack, sid)
    count = len(cron_runs(api, tokens, workflow_id))
    time.sleep(4.5)
    assert len(cron_runs(api, tokens, workflow_id)) == count


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("{type: cron, id: t}", "needs one of `schedule` (cron) or `every`"),
        ("{type: cron, id: t, schedule: '* *'}", "five fields"),
        ("{type: cron, id: t, every: 500ms}", "at least 1s"),
        ("{type: cron, id: t, every: 1m, overlap: sometimes}", "expected one of skip, buffer_one"),
    ],
)
def test_bad_cron_triggers_are_refused(api, tokens, trigger, message):
    source = FLOW.format(id="bad-cron", triggers=f"triggers:\n  - {trigger}\n")
    response = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
