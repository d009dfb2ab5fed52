"""Rerun and redrive overrides are validated as a push is: one that makes a cycle (or reads
what does not exist) is a 422 with the reason, and no run starts."""

from __future__ import annotations

import uuid

from tests.reflux.api.conftest import auth, poll_run
from tests.reflux.api.test_control import push, start

CHAIN = """
id: {id}
steps:
  - {{id: a, node: core.transform@1, with: {{value: 1}}}}
  - {{id: b, node: {b_node}, needs: [a], with: {b_with}}}
  - {{id: c, node: core.transform@1, with: {{value: "{{{{ steps.b.output }}}}"}}}}
  - {{id: d, node: core.transform@1, with: {{value: "{{{{ steps.c.output.value }}}}"}}}}
"""


def runs_of(api, tokens, workflow_id: str) -> int:
    listed = api.get("/runs", params={"workflow": workflow_id}, headers=auth(tokens["viewer"]))
    assert listed.status_code == 200, listed.text
    return len(listed.json())


def test_a_rerun_whose_overrides_make_a_cycle_is_refused(api, tokens):
    workflow_id = f"rerun-cycle-{uuid.uuid4().hex[:8]}"
    push(api, tokens, CHAIN.format(id=workflow_id, b_node="core.transform@1", b_with="{value: 2}"))
    run_id = start(api, tokens, workflow_id)
    assert poll_run(api, tokens, run_id)["status"] == "completed"

    refused = api.post(
        f"/runs/{run_id}/rerun",
        json={"overrides": {"a": {"value": "{{ steps.d.output.value }}"}}},
        headers=auth(tokens["author"]),
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "SpecError"
    assert error["message"] == (
        f"{workflow_id}@1 with overrides: steps[0].with.value: cycle: a -> d -> c -> b -> a"
    )
    assert runs_of(api, tokens, workflow_id) == 1, "no run started"

    fine = api.post(
        f"/runs/{run_id}/rerun",
        json={"overrides": {"d": {"value": "{{ steps.a.output.value + 10 }}"}}},
        headers=auth(tokens["author"]),
    )
    assert fine.status_code == 201, fine.text
    again = poll_run(api, tokens, fine.json()["run_id"])
    assert again["status"] == "completed"
    assert again["steps"]["d"]["output"] == {"value": 11}


def test_a_redrive_whose_overrides_make_a_cycle_through_the_failed_step_is_refused(
    api, tokens, tmp_path
):
    workflow_id = f"redrive-cycle-{uuid.uuid4().hex[:8]}"
    flaky = f'{{record_dir: "{tmp_path}", failures: 9, retryable: false}}'
    push(api, tokens, CHAIN.format(id=workflow_id, b_node="test.flaky@1", b_with=flaky))
    failed_id = start(api, tokens, workflow_id)
    failed = poll_run(api, tokens, failed_id)
    assert failed["status"] == "failed"

    refused = api.post(
        f"/runs/{failed_id}/redrive",
        json={"overrides": {"b": {"failures": "{{ steps.d.output.value }}"}}},
        headers=auth(tokens["author"]),
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"] == (
        f"{workflow_id}@1 with overrides: steps[1].with.failures: cycle: b -> d -> c -> b"
    )
    assert runs_of(api, tokens, workflow_id) == 1, "no run started"
