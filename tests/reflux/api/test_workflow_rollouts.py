"""Candidate versions, promotion and rollouts through the HTTP API: the live version is what
`GET /workflows/{id}` shows and whose cron triggers are Schedules; a candidate's wait."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.triggers import schedule_id
from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import auth, make_token
from tests.reflux.api.test_access import assert_error
from tests.reflux.api.test_cron import schedule_exists

pytestmark = pytest.mark.timeout(120)

FLOW = """
id: {id}
namespace: {namespace}
inputs:
  who: {{type: string, default: you}}
steps:
  - id: hello
    node: core.transform@1
    with: {{value: "{greeting} {{{{ inputs.who }}}}"}}
outputs:
  greeting: "{{{{ steps.hello.output.value }}}}"
{triggers}
"""
# an interval no test waits for: the Schedule exists, it never fires while the test runs
HOURLY = """triggers:
  - type: cron
    id: hourly
    every: 1h
"""


def source(workflow_id: str, greeting: str, triggers: str = "", namespace: str = "default"):
    return FLOW.format(id=workflow_id, greeting=greeting, triggers=triggers, namespace=namespace)


def new_id() -> str:
    return f"cand-{uuid.uuid4().hex[:8]}"


def states(api, tokens, workflow_id: str) -> list[tuple[int, bool, bool, int | None]]:
    listed = api.get(f"/workflows/{workflow_id}/versions", headers=auth(tokens["viewer"]))
    assert listed.status_code == 200, listed.text
    return [(v["version"], v["live"], v["candidate"], v["rollout"]) for v in listed.json()]


def push(api, token: str, text: str, candidate: bool = False):
    return api.post("/workflows", json={"source": text, "candidate": candidate},
                    headers=auth(token))  # fmt: skip


def test_a_candidates_cron_waits_for_its_promotion(stack: RunningStack, api, tokens):
    workflow_id = new_id()
    author = tokens["author"]
    assert push(api, author, source(workflow_id, "hi")).status_code == 201
    sid = schedule_id(workflow_id, "hourly")

    pushed = push(api, author, source(workflow_id, "hello", HOURLY), candidate=True)
    assert pushed.status_code == 201, pushed.text
    assert pushed.json() == {"workflow_id": workflow_id, "version": 2, "created": True}
    assert states(api, tokens, workflow_id) == [(1, True, False, None), (2, False, True, None)]
    shown = api.get(f"/workflows/{workflow_id}", headers=auth(tokens["viewer"])).json()
    assert (shown["version"], shown["live"]) == (1, True)  # no ?version: the live one
    assert not schedule_exists(stack, sid)
    listed = {w["id"]: w for w in api.get("/workflows", headers=auth(author)).json()}
    assert (listed[workflow_id]["latest_version"], listed[workflow_id]["live_version"]) == (2, 1)

    promoted = api.post(f"/workflows/{workflow_id}/promote", json={"version": 2},
                        headers=auth(author))  # fmt: skip
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {"workflow_id": workflow_id, "version": 2, "previous": 1,
                               "changed": True, "rollout_ended": None}  # fmt: skip
    assert schedule_exists(stack, sid)
    assert states(api, tokens, workflow_id) == [(1, False, False, None), (2, True, False, None)]

    again = api.post(f"/workflows/{workflow_id}/promote", json={"version": 2},
                     headers=auth(author))  # fmt: skip
    assert again.json()["changed"] is False

    back = api.post(f"/workflows/{workflow_id}/promote", json={"version": 1},
                    headers=auth(author))  # fmt: skip
    assert back.status_code == 200, back.text
    assert not schedule_exists(stack, sid)  # version 1 has no cron trigger


def test_a_normal_push_of_a_candidates_content_makes_it_live(stack: RunningStack, api, tokens):
    workflow_id = new_id()
    author = tokens["author"]
    push(api, author, source(workflow_id, "hi"))
    push(api, author, source(workflow_id, "hello", HOURLY), candidate=True)
    assert not schedule_exists(stack, schedule_id(workflow_id, "hourly"))
    live = push(api, author, source(workflow_id, "hello", HOURLY))
    assert (live.status_code, live.json()["created"], live.json()["version"]) == (200, False, 2)
    assert states(api, tokens, workflow_id) == [(1, False, False, None), (2, True, False, None)]
    assert schedule_exists(stack, schedule_id(workflow_id, "hourly"))
    push(api, author, source(workflow_id, "hi"))  # version 3, live: the Schedule goes
    assert not schedule_exists(stack, schedule_id(workflow_id, "hourly"))


def test_a_rollout_starts_changes_and_ends(api, tokens):
    workflow_id = new_id()
    author = tokens["author"]
    push(api, author, source(workflow_id, "hi"))
    push(api, author, source(workflow_id, "hello"), candidate=True)
    path = f"/workflows/{workflow_id}/rollout"

    started = api.put(path, json={"version": 2, "percent": 10}, headers=auth(author))
    assert started.status_code == 200, started.text
    assert started.json() == {"workflow_id": workflow_id, "version": 2, "percent": 10,
                              "previous": None}  # fmt: skip
    assert states(api, tokens, workflow_id) == [(1, True, False, None), (2, False, True, 10)]
    changed = api.put(path, json={"version": 2, "percent": 25}, headers=auth(author))
    assert changed.json()["previous"] == {"version": 2, "percent": 10}
    assert states(api, tokens, workflow_id)[1] == (2, False, True, 25)

    of_live = api.put(path, json={"version": 1, "percent": 10}, headers=auth(author))
    message = assert_error(of_live, 409, "LifecycleError")
    assert message.startswith(f"cannot roll out {workflow_id}@1: it is live")
    missing = api.put(path, json={"version": 7, "percent": 10}, headers=auth(author))
    assert "has no version 7 (versions 1 to 2)" in assert_error(missing, 404, "NotFound")
    too_much = api.put(path, json={"version": 2, "percent": 101}, headers=auth(author))
    assert assert_error(too_much, 422, "InvalidRequest").startswith("body.percent:")

    ended = api.put(path, json={"version": 2, "percent": 0}, headers=auth(author))
    assert ended.json()["previous"] == {"version": 2, "percent": 25}
    assert states(api, tokens, workflow_id)[1] == (2, False, True, None)
    none_left = api.put(path, json={"version": 2, "percent": 0}, headers=auth(author))
    assert "no rollout of" in assert_error(none_left, 409, "LifecycleError")

    # promoting the rolled-out version ends its rollout
    api.put(path, json={"version": 2, "percent": 40}, headers=auth(author))
    promoted = api.post(f"/workflows/{workflow_id}/promote", json={"version": 2},
                        headers=auth(author))  # fmt: skip
    assert promoted.json()["rollout_ended"] == 40
    assert states(api, tokens, workflow_id) == [(1, False, False, None), (2, True, False, None)]


def test_roles_and_namespaces_as_for_pushing(stack: RunningStack, api, tokens):
    workflow_id = new_id()
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    mine = make_token(stack, "author", namespace)
    assert push(api, mine, source(workflow_id, "hi", namespace=namespace)).status_code == 201
    assert push(api, mine, source(workflow_id, "yo", namespace=namespace), True).status_code == 201
    promote, rollout = f"/workflows/{workflow_id}/promote", f"/workflows/{workflow_id}/rollout"

    for method, path, body in (
        ("PUT", rollout, {"version": 2, "percent": 5}),
        ("POST", promote, {"version": 2}),
    ):
        viewer = api.request(method, path, json=body, headers=auth(tokens["viewer"]))
        assert assert_error(viewer, 403, "Forbidden").startswith("this needs the author role")
        other = make_token(stack, "author", f"other-{uuid.uuid4().hex[:6]}")
        hidden = api.request(method, path, json=body, headers=auth(other))
        assert assert_error(hidden, 404, "NotFound") == f"unknown workflow '{workflow_id}'"
        assert api.request(method, path, json=body, headers=auth(mine)).status_code == 200

    unknown = api.post("/workflows/no-such-flow/promote", json={"version": 1},
                       headers=auth(tokens["author"]))  # fmt: skip
    assert_error(unknown, 404, "NotFound")


def test_a_first_version_cannot_be_a_candidate(api, tokens):
    workflow_id = new_id()
    refused = push(api, tokens["author"], source(workflow_id, "hi"), candidate=True)
    assert "push its first version without candidate" in assert_error(refused, 400, "RegistryError")
    missing = api.get(f"/workflows/{workflow_id}", headers=auth(tokens["viewer"]))
    assert_error(missing, 404, "NotFound")
