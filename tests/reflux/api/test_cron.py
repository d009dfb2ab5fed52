"""Cron triggers: a Temporal Schedule per trigger, firing runs of the latest version, and
gone when a pushed version drops the trigger."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import ScheduleInfo
from temporalio.service import RPCError

from orchestrator.runs import connect_temporal
from orchestrator.triggers import launch_run_id, schedule_id
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually
from tests.reflux.api.conftest import auth, poll_run

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


def schedule_info(stack: RunningStack, sid: str) -> ScheduleInfo:
    async def describe() -> ScheduleInfo:
        client = await connect_temporal(stack.settings)
        return (await client.get_schedule_handle(sid).describe()).info

    return asyncio.run(describe())


def launcher_id(sid: str, at: datetime) -> str:
    """The id of the workflow a schedule's action due `at` starts: the schedule's id and the
    time, to the second."""
    return f"{sid}-{at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


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

    fired = eventually(
        lambda: cron_runs(api, tokens, workflow_id),
        timeout=30,
        every=0.5,
        what="the schedule starting a run",
    )
    run_id = fired[-1]["run_id"]
    run = poll_run(api, tokens, run_id)
    assert (run["status"], run["outputs"]) == ("completed", {"greeting": "hi cron"})

    # version 2 drops the trigger: its schedule is deleted, no run starts after
    info = schedule_info(stack, sid)
    last = info.recent_actions[-1]  # how Temporal names the launcher an action starts,
    assert last.action.workflow_id == launcher_id(sid, last.scheduled_at), last
    launched = {launch_run_id(workflow_id, a.action.workflow_id) for a in info.recent_actions}
    assert run_id in launched, (run_id, launched)  # and the run id it makes of that
    without = FLOW.format(id=workflow_id, triggers="")
    assert (
        api.post("/workflows", json={"source": without}, headers=auth(tokens["author"])).status_code
        == 201
    )  # noqa: E501
    deleted_by = datetime.now(UTC)
    assert not schedule_exists(stack, sid)
    # Proving that no run starts takes the time one would have needed (nothing must bring
    # the schedule back, a reconcile from an old version for one): the schedule's own info,
    # read before the push, says when its next two actions were due. Once they are, and the
    # launcher has had a moment to record its run, the ledger holds none of the runs those
    # actions would have made (a run's id is derived from its action's).
    due = [t for t in info.next_action_times if t > deleted_by][:2]
    assert len(due) == 2, (info.next_action_times, deleted_by)
    eventually(
        lambda: datetime.now(UTC) > due[-1] + timedelta(seconds=1),
        timeout=10,
        every=0.1,
        what="the deleted schedule's next two actions falling due",
    )
    assert not schedule_exists(stack, sid)
    would_have = {launch_run_id(workflow_id, launcher_id(sid, t)) for t in due}
    made = {r["run_id"] for r in cron_runs(api, tokens, workflow_id)}
    assert not made & would_have, (made, due)
    # and the ledger holds one run per action taken while it lived (one more than its info
    # counted may have been taken between that read and the push)
    assert len(made) in (info.num_actions, info.num_actions + 1), (made, info)


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
