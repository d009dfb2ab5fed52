"""Pause, resume and re-drive through the API, on real runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from temporalio.api.history.v1 import HistoryEvent

from orchestrator.runs import connect_temporal, run_handle
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually_async
from tests.reflux.api.conftest import auth, poll_run
from tests.support.nodes import events


def push(api, tokens, source: str) -> None:
    response = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert response.status_code == 201, response.text


def start(api, tokens, workflow_id: str) -> str:
    response = api.post("/runs", json={"workflow": workflow_id}, headers=auth(tokens["author"]))
    assert response.status_code == 201, response.text
    return str(response.json()["run_id"])


def calls(directory: Path) -> int:
    """How many times the test node was called (it records each call there)."""
    return len(events(directory))


async def decided_after_timer(stack: RunningStack, run_id: str) -> list[HistoryEvent]:
    """The run's history after its first timer fired, once a workflow task has completed
    after it (the task's commands are written with its completion)."""
    client = await connect_temporal(stack.settings)
    handle = run_handle(client, run_id)

    async def after_timer() -> list[HistoryEvent]:
        events = list((await handle.fetch_history()).events)
        fired = [i for i, e in enumerate(events) if e.HasField("timer_fired_event_attributes")]
        assert fired, "the delay's timer has not fired"
        rest = events[fired[0] + 1 :]
        assert any(e.HasField("workflow_task_completed_event_attributes") for e in rest), (
            "no workflow task has completed since the timer fired"
        )
        return rest

    return await eventually_async(after_timer, timeout=30, every=0.1, what="the run's decision")


def starts_a_step(event: HistoryEvent) -> bool:
    """An activity scheduled, or a local activity's marker (a step run in the worker)."""
    local = event.marker_recorded_event_attributes.marker_name == "core_local_activity"
    return local or event.HasField("activity_task_scheduled_event_attributes")


def test_pause_holds_new_steps_until_resume(stack: RunningStack, api, tokens):
    workflow_id = f"pausing-{uuid.uuid4().hex[:8]}"
    push(api, tokens, f"""
id: {workflow_id}
steps:
  - id: wait
    node: core.delay@1
    with: {{duration: 1s}}
  - id: after
    node: core.transform@1
    needs: [wait]
    with: {{value: done}}
""")  # fmt: skip
    run_id = start(api, tokens, workflow_id)
    paused = api.post(f"/runs/{run_id}/pause", headers=auth(tokens["author"]))
    assert paused.status_code == 202, paused.text
    run = poll_run(
        api, tokens, run_id, lambda r: r["steps"].get("wait", {}).get("status") == "completed"
    )  # noqa: E501
    # Not a wait for `after` not to start: the run's history says whether it did. Once the
    # workflow task that saw `wait` end (its timer fired) has completed, the run has decided
    # what to start next, and its decisions are in the history with that task's completion.
    decided = asyncio.run(decided_after_timer(stack, run_id))
    assert not [e for e in decided if starts_a_step(e)], decided
    run = api.get(f"/runs/{run_id}", headers=auth(tokens["viewer"])).json()
    assert (run["status"], run["paused"]) == ("running", True)
    assert run["steps"]["after"]["status"] == "pending"

    assert api.post(f"/runs/{run_id}/resume", headers=auth(tokens["author"])).status_code == 202
    run = poll_run(api, tokens, run_id)
    assert run["status"] == "completed"
    assert run["steps"]["after"]["output"] == {"value": "done"}
    again = api.post(f"/runs/{run_id}/pause", headers=auth(tokens["author"]))
    assert again.status_code == 409 and again.json()["error"]["code"] == "Conflict"

    rerun = api.post(
        f"/runs/{run_id}/rerun",
        json={"overrides": {"after": {"value": "again"}}},
        headers=auth(tokens["author"]),
    )
    assert rerun.status_code == 201, rerun.text
    second = poll_run(api, tokens, rerun.json()["run_id"])
    assert second["status"] == "completed"
    # from the start: its first step ran again, after the first run had ended
    assert second["steps"]["wait"]["started_at"] > run["steps"]["after"]["finished_at"]
    assert second["steps"]["after"]["output"] == {"value": "again"}


def test_redrive_runs_only_what_did_not_complete(api, tokens, tmp_path):
    workflow_id = f"redrive-{uuid.uuid4().hex[:8]}"
    push(api, tokens, f"""
id: {workflow_id}
steps:
  - id: fetch
    node: test.flaky@1
    with: {{record_dir: "{tmp_path / 'fetch'}", failures: 0}}
  - id: load
    node: test.flaky@1
    needs: [fetch]
    with: {{record_dir: "{tmp_path / 'load'}", failures: 9, retryable: false}}
  - id: report
    node: core.transform@1
    needs: [load]
    with: {{value: "{{{{ steps.fetch.output.calls }}}}/{{{{ steps.load.output.calls }}}}"}}
outputs:
  report: "{{{{ steps.report.output.value }}}}"
""")  # fmt: skip
    failed_id = start(api, tokens, workflow_id)
    failed = poll_run(api, tokens, failed_id)
    assert failed["status"] == "failed"
    assert (calls(tmp_path / "fetch"), calls(tmp_path / "load")) == (1, 1)

    refused = api.post(f"/runs/{failed_id}/redrive", json={"overrides": {"nope": {}}},
                       headers=auth(tokens["author"]))  # fmt: skip
    assert refused.status_code == 422 and "no step 'nope'" in refused.text
    # the fix: the step's params (it now fails 0 times, having been called once)
    redriven = api.post(
        f"/runs/{failed_id}/redrive",
        json={"overrides": {"load": {"failures": 0}}},
        headers=auth(tokens["author"]),
    )
    assert redriven.status_code == 201, redriven.text
    run_id = redriven.json()["run_id"]
    assert run_id != failed_id
    run = poll_run(api, tokens, run_id)
    assert run["status"] == "completed", json.dumps(run)[:2000]
    assert run["outputs"] == {"report": "1/2"}
    # fetch completed in the failed run and was not called again; load was
    assert (calls(tmp_path / "fetch"), calls(tmp_path / "load")) == (1, 2)
    assert run["pins"]["fetch"] == failed["pins"]["fetch"]

    completed = api.post(f"/runs/{run_id}/redrive", json={}, headers=auth(tokens["author"]))
    assert completed.status_code == 409
