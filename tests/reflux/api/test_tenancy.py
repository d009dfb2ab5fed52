"""Tenancy: a token scoped to a namespace never reaches past it, not to mint, list or revoke
tokens, not to change global node versions, and a push neither learns of another tenant's
workflow nor moves a workflow to another namespace."""

from __future__ import annotations

import uuid

from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import auth, make_token
from tests.reflux.api.test_access import FLOW, assert_error


def _namespace() -> str:
    return f"team-{uuid.uuid4().hex[:6]}"


def test_a_scoped_admin_mints_only_its_own_namespace(stack: RunningStack, api, tokens):
    ns = _namespace()
    scoped = make_token(stack, "admin", ns)
    # no namespace would be a global token; another namespace is not its own
    for body in ({"role": "viewer"}, {"role": "viewer", "namespace": "elsewhere"}):
        refused = api.post("/tokens", json=body, headers=auth(scoped))
        assert "namespace" in assert_error(refused, 403, "Forbidden")
    made = api.post("/tokens", json={"role": "author", "namespace": ns}, headers=auth(scoped))
    assert made.status_code == 201, made.text
    assert made.json()["namespace"] == ns


def test_a_scoped_admin_lists_and_revokes_only_its_own(stack: RunningStack, api, tokens):
    ns = _namespace()
    scoped = make_token(stack, "admin", ns)
    own = make_token(stack, "viewer", ns)
    other = make_token(stack, "viewer", _namespace())
    listed = api.get("/tokens", headers=auth(scoped))
    assert listed.status_code == 200, listed.text
    seen = {t["id"] for t in listed.json()}
    assert own.split("_")[1] in seen
    assert other.split("_")[1] not in seen
    assert tokens["admin"].split("_")[1] not in seen
    assert {t["namespace"] for t in listed.json()} == {ns}

    # another tenant's token and a global one are as unknown as a token that never was
    for victim in (other, tokens["viewer"]):
        victim_id = victim.split("_")[1]
        refused = api.delete(f"/tokens/{victim_id}", headers=auth(scoped))
        assert assert_error(refused, 404, "NotFound") == f"no token '{victim_id}'"
        assert api.get("/workflows", headers=auth(victim)).status_code == 200
    revoked = api.delete(f"/tokens/{own.split('_')[1]}", headers=auth(scoped))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]

    # a global admin still sees and revokes every token
    every = {t["id"] for t in api.get("/tokens", headers=auth(tokens["admin"])).json()}
    assert {own.split("_")[1], other.split("_")[1], scoped.split("_")[1]} <= every


def test_node_lifecycle_changes_need_a_global_token(stack: RunningStack, api, tokens):
    scoped = make_token(stack, "reviewer", _namespace())
    node = api.get("/nodes/test.echo", headers=auth(tokens["viewer"])).json()
    version = node["versions"][0]["version"]
    base = f"/nodes/test.echo/versions/{version}"
    for method, path, body in (
        ("POST", f"{base}/promote", {"to": "production"}),
        ("POST", f"{base}/deprecate", {}),
        ("PUT", f"{base}/rollout", {"percent": 10}),
    ):
        refused = api.request(method, path, json=body, headers=auth(scoped))
        message = assert_error(refused, 403, "Forbidden")
        assert "without a namespace" in message and "\n" not in message
    after = api.get("/nodes/test.echo", headers=auth(tokens["viewer"])).json()
    assert after == node  # nothing changed
    # a global reviewer may (promoting a production version to production changes nothing)
    allowed = api.post(f"{base}/promote", json={"to": "production"},
                       headers=auth(tokens["reviewer"]))  # fmt: skip
    assert allowed.status_code == 200, allowed.text


def test_a_push_does_not_tell_that_another_tenant_has_the_id(stack: RunningStack, api, tokens):
    workflow_id = f"tenancy-{uuid.uuid4().hex[:8]}"
    theirs = FLOW.format(id=workflow_id, namespace=_namespace())
    assert (
        api.post("/workflows", json={"source": theirs}, headers=auth(tokens["admin"])).status_code
        == 201
    )  # noqa: E501
    ns = _namespace()
    scoped = make_token(stack, "author", ns)
    mine = FLOW.format(id=workflow_id, namespace=ns)
    refused = api.post("/workflows", json={"source": mine}, headers=auth(scoped))
    message = assert_error(refused, 409, "Conflict")
    assert "namespace" not in message and "in use" not in message, message
    # the same answer as for any workflow the token may not write: nothing about who has it
    assert workflow_id in message


def test_a_global_push_never_moves_a_workflow_to_another_namespace(
    stack: RunningStack, api, tokens
):
    workflow_id = f"tenancy-{uuid.uuid4().hex[:8]}"
    first, second = _namespace(), _namespace()
    pushed = api.post("/workflows", json={"source": FLOW.format(id=workflow_id, namespace=first)},
                      headers=auth(tokens["admin"]))  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    moved = FLOW.format(id=workflow_id, namespace=second) + "description: moved\n"
    refused = api.post("/workflows", json={"source": moved}, headers=auth(tokens["admin"]))
    message = assert_error(refused, 409, "Conflict")
    assert f"namespace '{first}'" in message  # a global token sees every namespace: say which
    listed = {w["id"]: w for w in api.get("/workflows", headers=auth(tokens["admin"])).json()}
    assert listed[workflow_id]["namespace"] == first
    assert listed[workflow_id]["latest_version"] == 1


def test_the_cli_push_never_moves_a_workflow_either(stack: RunningStack, api, tokens):
    workflow_id = f"tenancy-{uuid.uuid4().hex[:8]}"
    first, second = _namespace(), _namespace()
    path = stack.write(f"{workflow_id}.yaml", FLOW.format(id=workflow_id, namespace=first))
    done = stack.cli("workflows", "push", str(path))
    assert done.returncode == 0, done.stderr + done.stdout
    path.write_text(FLOW.format(id=workflow_id, namespace=second))
    done = stack.cli("workflows", "push", str(path))
    assert done.returncode != 0
    said = (done.stdout + done.stderr).strip()
    assert f"namespace '{first}'" in said and "Traceback" not in said, said
    listed = {w["id"]: w for w in api.get("/workflows", headers=auth(tokens["admin"])).json()}
    assert (listed[workflow_id]["namespace"], listed[workflow_id]["latest_version"]) == (first, 1)
