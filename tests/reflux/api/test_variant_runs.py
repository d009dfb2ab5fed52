"""Variant runs through the API: `POST /runs` with mutations and labels, validated as a push
is (a 422 with the reason, and no run); labels on the run and `GET /runs?label=`; and a
shadow replay that performs no write while its reads run."""

from __future__ import annotations

import uuid

from tests.helpers.httpserver import HttpTestServer
from tests.reflux.api.conftest import auth, poll_run
from tests.reflux.api.test_control import push

FLOW = """
id: {id}
steps:
  - {{id: a, node: core.transform@1, with: {{value: 1}}}}
  - {{id: b, node: core.transform@1, with: {{value: "{{{{ steps.a.output.value }}}}"}}}}
outputs:
  b: "{{{{ steps.b.output.value }}}}"
"""


def started(api, tokens, body: dict) -> dict:
    response = api.post("/runs", json=body, headers=auth(tokens["author"]))
    assert response.status_code == 201, response.text
    return dict(response.json())


def listed(api, tokens, **params) -> list[str]:
    response = api.get("/runs", params=params, headers=auth(tokens["viewer"]))
    assert response.status_code == 200, response.text
    return [r["run_id"] for r in response.json()]


def test_mutations_and_labels_make_a_variant_run(api, tokens):
    workflow_id = f"variant-{uuid.uuid4().hex[:8]}"
    push(api, tokens, FLOW.format(id=workflow_id))
    plain = started(api, tokens, {"workflow": workflow_id})
    variant = started(api, tokens, {
        "workflow": f"{workflow_id}@1",
        "mutations": [{"op": "update_params", "step": "a", "params": {"value": 7}},
                      {"op": "set_policy", "step": "b", "retry": {"max_attempts": 5}}],
        "labels": {"experiment": "try1", "arm": "candidate"},
    })  # fmt: skip
    assert variant["labels"] == {"experiment": "try1", "arm": "candidate"}
    assert poll_run(api, tokens, plain["run_id"])["outputs"] == {"b": 1}
    detail = poll_run(api, tokens, variant["run_id"])
    assert detail["status"] == "completed" and detail["outputs"] == {"b": 7}
    assert detail["labels"] == {"experiment": "try1", "arm": "candidate"}

    assert listed(api, tokens, workflow=workflow_id, label="experiment:try1") == [variant["run_id"]]
    both = listed(api, tokens, workflow=workflow_id, label=["arm:candidate", "experiment:try1"])
    assert both == [variant["run_id"]]
    assert listed(api, tokens, workflow=workflow_id, label="experiment:other") == []
    assert len(listed(api, tokens, workflow=workflow_id)) == 2


def test_a_mutation_that_breaks_the_graph_starts_nothing(api, tokens):
    workflow_id = f"variant-bad-{uuid.uuid4().hex[:8]}"
    push(api, tokens, FLOW.format(id=workflow_id))
    cases = [
        ([{"op": "update_params", "step": "a", "params": {"value": "{{ steps.b.output }}"}}],
         "cycle"),
        ([{"op": "remove_step", "step": "a"}], "a"),
        ([{"op": "update_params", "step": "zz", "params": {"value": 1}}], "zz"),
        ([{"op": "explode", "step": "a"}], "mutation[0]"),
    ]  # fmt: skip
    for mutations, expected in cases:
        refused = api.post(
            "/runs", json={"workflow": workflow_id, "mutations": mutations},
            headers=auth(tokens["author"]),
        )  # fmt: skip
        assert refused.status_code == 422, refused.text
        assert expected in refused.json()["error"]["message"], refused.text
    refused = api.post(
        "/runs", json={"workflow": workflow_id, "labels": {"rollout": "x@1"}},
        headers=auth(tokens["author"]),
    )  # fmt: skip
    assert refused.status_code == 422 and "set by the engine" in refused.text
    assert listed(api, tokens, workflow=workflow_id) == []


WRITES = """
id: {id}
inputs:
  order: {{type: integer, required: true}}
steps:
  - id: lookup
    node: http.request@1
    with: {{url: "{base}/json?order={{{{ inputs.order }}}}"}}
  - id: save
    node: http.request@1
    with:
      method: POST
      url: "{base}/echo"
      json: {{order: "{{{{ inputs.order }}}}", seen: "{{{{ steps.lookup.output.status }}}}"}}
  - id: after
    node: core.transform@1
    with: {{value: "{{{{ steps.save.output.status }}}}"}}
"""


def test_a_shadow_replay_never_writes(api, tokens):
    with HttpTestServer() as server:
        workflow_id = f"shadow-{uuid.uuid4().hex[:8]}"
        base = server.url("").rstrip("/")
        push(api, tokens, WRITES.format(id=workflow_id, base=base))
        source = started(api, tokens, {"workflow": workflow_id, "inputs": {"order": 42}})
        assert poll_run(api, tokens, source["run_id"])["status"] == "completed"
        posts = sum(1 for r in server.requests if r.method == "POST")
        gets = sum(1 for r in server.requests if r.method == "GET")
        assert (posts, gets) == (1, 1)

        # same inputs: the POST step takes the source run's output, the GET runs again
        shadow = started(api, tokens, {"workflow": f"{workflow_id}@1",
                                       "shadow_of": source["run_id"]})  # fmt: skip
        assert shadow["labels"] == {"shadow": "true"}
        detail = poll_run(api, tokens, shadow["run_id"])
        assert detail["status"] == "completed", detail
        assert detail["steps"]["save"]["status"] == "completed"
        assert detail["steps"]["after"]["output"] == {"value": 200}
        assert detail["shadow_of"] == source["run_id"]

        # other inputs: the POST's params differ, so it is skipped, and what needs it
        other = started(api, tokens, {"workflow": f"{workflow_id}@1", "inputs": {"order": 7},
                                      "shadow_of": source["run_id"]})  # fmt: skip
        detail = poll_run(api, tokens, other["run_id"])
        assert detail["steps"]["lookup"]["status"] == "completed"
        assert detail["steps"]["save"]["status"] == "skipped"
        assert detail["steps"]["save"]["reason"] == "shadow: write step not replayed"
        assert detail["steps"]["after"]["status"] == "skipped"

        assert sum(1 for r in server.requests if r.method == "POST") == 1, "no shadow POST"
        assert sum(1 for r in server.requests if r.method == "GET") == 3


def test_a_rerun_runs_the_same_variant_and_a_shadow_run_is_never_rerun(api, tokens):
    workflow_id = f"variant-again-{uuid.uuid4().hex[:8]}"
    push(api, tokens, FLOW.format(id=workflow_id))
    variant = started(api, tokens, {
        "workflow": f"{workflow_id}@1", "labels": {"experiment": "again"},
        "mutations": [{"op": "update_params", "step": "a", "params": {"value": 7}}],
    })  # fmt: skip
    assert poll_run(api, tokens, variant["run_id"])["outputs"] == {"b": 7}
    again = api.post(f"/runs/{variant['run_id']}/rerun", json={}, headers=auth(tokens["author"]))
    assert again.status_code == 201, again.text
    assert again.json()["labels"] == {"experiment": "again"}
    detail = poll_run(api, tokens, again.json()["run_id"])
    assert detail["outputs"] == {"b": 7} and detail["labels"] == {"experiment": "again"}

    shadow = started(api, tokens, {"workflow": f"{workflow_id}@1",
                                   "shadow_of": variant["run_id"]})  # fmt: skip
    poll_run(api, tokens, shadow["run_id"])
    for action in ("rerun", "redrive"):
        refused = api.post(f"/runs/{shadow['run_id']}/{action}", json={},
                           headers=auth(tokens["author"]))  # fmt: skip
        assert refused.status_code == 409, refused.text
        assert "shadow replay" in refused.text or "only a failed run" in refused.text


def test_another_namespace_can_neither_shadow_nor_mutate_nor_list(stack, api, tokens):
    from tests.reflux.api.conftest import make_token

    workflow_id = f"variant-tenant-{uuid.uuid4().hex[:8]}"
    push(api, tokens, FLOW.format(id=workflow_id))
    run = started(api, tokens, {"workflow": workflow_id, "labels": {"experiment": "mine"}})
    poll_run(api, tokens, run["run_id"])
    other = auth(make_token(stack, "author", f"ns-{uuid.uuid4().hex[:6]}"))

    shadow = api.post("/runs", json={"workflow": workflow_id, "shadow_of": run["run_id"]},
                      headers=other)  # fmt: skip
    assert shadow.status_code == 404, shadow.text
    mutate = api.post(f"/workflows/{workflow_id}/mutate", headers=other,
                      json={"mutations": [{"op": "remove_step", "step": "b"}]})  # fmt: skip
    assert mutate.status_code == 404, mutate.text
    seen = api.get("/runs", params={"label": "experiment:mine"}, headers=other)
    assert seen.status_code == 200 and seen.json() == []
    assert listed(api, tokens, workflow=workflow_id) == [run["run_id"]]  # nothing started
