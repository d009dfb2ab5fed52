"""Tokens, roles, namespaces, the error shape and the audit log, against the API that
`reflux up` starts (real HTTP, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from infra.database import connect
from infra.stack import addresses
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually
from tests.reflux.api.conftest import auth, make_token, poll_run

FLOW = """
id: {id}
namespace: {namespace}
steps:
  - id: hello
    node: core.transform@1
    with: {{value: "hi {{{{ inputs.name }}}}"}}
inputs:
  name: {{type: string, default: you}}
outputs:
  greeting: "{{{{ steps.hello.output.value }}}}"
"""


def flow(namespace: str = "default") -> tuple[str, str]:
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    return workflow_id, FLOW.format(id=workflow_id, namespace=namespace)


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


def test_health_openapi_and_docs_need_no_token(api):
    assert api.get("/health").json() == {"status": "ok", "database": "ok"}
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/workflows", "/runs", "/runs/{run_id}", "/nodes", "/tokens"} <= set(doc["paths"])
    assert api.get("/docs").status_code == 200


def test_missing_and_bad_tokens_are_401(api, tokens):
    missing = api.get("/workflows")
    message = assert_error(missing, 401, "Unauthenticated")
    assert "Authorization: Bearer" in message
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert_error(api.get("/workflows", headers=auth("rfx_nope_nope")), 401, "Unauthenticated")
    forged = tokens["admin"].rsplit("_", 1)[0] + "_forged"
    assert "unknown or revoked" in assert_error(
        api.get("/workflows", headers=auth(forged)), 401, "Unauthenticated"
    )


ENDPOINTS = [
    ("GET", "/workflows", None, "viewer"),
    ("GET", "/workflows/no-such/versions", None, "viewer"),
    ("GET", "/runs", None, "viewer"),
    ("GET", "/runs/no-such", None, "viewer"),
    ("GET", "/runs/no-such/traces", None, "viewer"),
    ("GET", "/runs/no-such/events", None, "viewer"),
    ("GET", "/stats", None, "viewer"),
    ("GET", "/nodes", None, "viewer"),
    ("GET", "/nodes/core.transform", None, "viewer"),
    ("POST", "/workflows", {"source": "id: x\nsteps: []\n"}, "author"),
    ("POST", "/runs", {"workflow": "no-such-workflow"}, "author"),
    ("POST", "/runs/no-such/cancel", None, "author"),
    ("POST", "/runs/no-such/pause", None, "author"),
    ("POST", "/runs/no-such/resume", None, "author"),
    ("POST", "/runs/no-such/redrive", {}, "author"),
    ("POST", "/runs/no-such/rerun", {}, "author"),
    ("POST", "/nodes/core.transform/versions/9.9.9/promote", {"to": "staging"}, "reviewer"),
    ("POST", "/nodes/core.transform/versions/9.9.9/deprecate", {}, "reviewer"),
    ("PUT", "/nodes/core.transform/versions/9.9.9/rollout", {"percent": 0}, "reviewer"),
    ("GET", "/tokens", None, "admin"),
    ("POST", "/tokens", {"role": "viewer", "name": "matrix"}, "admin"),
    ("DELETE", "/tokens/no-such", None, "admin"),
]
ROLES = ["viewer", "author", "reviewer", "admin"]


@pytest.mark.parametrize(("method", "path", "body", "needs"), ENDPOINTS)
def test_role_matrix(api, tokens, method, path, body, needs):
    for role in ROLES:
        response = api.request(method, path, json=body, headers=auth(tokens[role]))
        if ROLES.index(role) < ROLES.index(needs):
            message = assert_error(response, 403, "Forbidden")
            assert message == f"this needs the {needs} role; the token's role is {role}"
        else:
            assert response.status_code not in (401, 403), (role, response.text)


def test_push_show_run_and_list(api, tokens):
    workflow_id, source = flow()
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    assert pushed.json() == {"workflow_id": workflow_id, "version": 1, "created": True}
    again = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert (again.status_code, again.json()["created"]) == (200, False)
    shown = api.get(f"/workflows/{workflow_id}", headers=auth(tokens["viewer"])).json()
    assert shown["source"] == source and shown["version"] == 1

    started = api.post(
        "/runs",
        json={"workflow": f"{workflow_id}@1", "inputs": {"name": "Ada"}},
        headers=auth(tokens["author"]),
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    run = poll_run(api, tokens, run_id)
    assert run["status"] == "completed", run
    assert run["outputs"] == {"greeting": "hi Ada"}
    assert run["steps"]["hello"]["status"] == "completed"
    assert run["started_by"] == "token:test-author"
    listed = api.get("/runs", params={"workflow": workflow_id}, headers=auth(tokens["viewer"]))
    assert [r["run_id"] for r in listed.json()] == [run_id]

    events = eventually(  # the sink takes the events into ClickHouse within moments
        lambda: api.get(f"/runs/{run_id}/traces", headers=auth(tokens["viewer"])).json(),
        timeout=20,
        every=0.2,
        what=f"the traces of run {run_id}",
    )
    assert [(e["step_id"], e["status"], e["node"]) for e in events] == [
        ("hello", "ok", "core.transform")
    ]
    stats = api.get("/stats", params={"workflow": workflow_id}, headers=auth(tokens["viewer"]))
    assert [(w["workflow_id"], w["runs"]) for w in stats.json()["workflows"]] == [(workflow_id, 1)]
    bad = api.get("/stats", params={"since": "soon"}, headers=auth(tokens["viewer"]))
    assert assert_error(bad, 422, "InvalidRequest").startswith("since: bad duration 'soon'")


def test_invalid_workflow_is_422_with_every_problem(api, tokens):
    response = api.post(
        "/workflows", json={"source": "id: bad\nsteps:\n  - id: a\n    node: no.such@1\n"},
        headers=auth(tokens["author"]),
    )  # fmt: skip
    assert_error(response, 422, "SpecError")
    problems = response.json()["error"]["details"]["problems"]
    assert problems and all(p.startswith("<request>:") for p in problems)
    bad_body = api.post("/runs", json={"inputs": 5}, headers=auth(tokens["author"]))
    assert assert_error(bad_body, 422, "InvalidRequest").startswith("body.workflow: Field required")


def test_namespaces_isolate_tenants(stack: RunningStack, api, tokens):
    team_a = make_token(stack, "author", "team-a")
    theirs_id, theirs = flow("team-b")
    assert (
        api.post("/workflows", json={"source": theirs}, headers=auth(tokens["admin"])).status_code
        == 201
    )  # noqa: E501
    run_id = api.post("/runs", json={"workflow": theirs_id}, headers=auth(tokens["admin"])).json()[
        "run_id"
    ]  # noqa: E501

    mine_id, mine = flow("team-a")
    assert api.post("/workflows", json={"source": mine}, headers=auth(team_a)).status_code == 201
    refused = api.post("/workflows", json={"source": flow("team-b")[1]}, headers=auth(team_a))
    assert "namespace 'team-b'" in assert_error(refused, 403, "Forbidden")

    listed = {w["id"] for w in api.get("/workflows", headers=auth(team_a)).json()}
    assert mine_id in listed and theirs_id not in listed
    for path in (
        f"/workflows/{theirs_id}",
        f"/workflows/{theirs_id}/versions",
        f"/runs/{run_id}",
        f"/runs/{run_id}/traces",
    ):
        assert_error(api.get(path, headers=auth(team_a)), 404, "NotFound")
    stats = api.get("/stats", params={"workflow": theirs_id}, headers=auth(team_a)).json()
    assert stats["workflows"] == [] and stats["nodes"] == []
    assert_error(
        api.post("/runs", json={"workflow": theirs_id}, headers=auth(team_a)), 404, "NotFound"
    )  # noqa: E501
    assert_error(api.post(f"/runs/{run_id}/cancel", headers=auth(team_a)), 404, "NotFound")
    runs = api.get("/runs", params={"namespace": "team-b"}, headers=auth(team_a)).json()
    assert runs == []
    # an id taken in another namespace cannot be pushed over
    hijack = FLOW.format(id=theirs_id, namespace="team-a")
    assert_error(
        api.post("/workflows", json={"source": hijack}, headers=auth(team_a)), 409, "Conflict"
    )  # noqa: E501


def test_revoked_token_stops_working(stack: RunningStack, api, tokens):
    token = make_token(stack, "viewer")
    assert api.get("/workflows", headers=auth(token)).status_code == 200
    token_id = token.split("_")[1]
    revoked = api.delete(f"/tokens/{token_id}", headers=auth(tokens["admin"]))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert_error(api.get("/workflows", headers=auth(token)), 401, "Unauthenticated")


def test_mutating_calls_are_audited(stack: RunningStack, api, tokens):
    workflow_id, source = flow()
    api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    api.post("/workflows", json={"source": source}, headers=auth(tokens["viewer"]))  # refused
    api.get("/workflows", headers=auth(tokens["author"]))  # reads are not audited

    async def last_rows() -> list[dict]:
        conn = await connect(addresses(stack.settings).database)
        try:
            rows = await conn.fetch(
                "SELECT token_id, role, method, path, action, status FROM audit_log"
                " ORDER BY id DESC LIMIT 2"
            )
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    refused, pushed = asyncio.run(last_rows())
    assert pushed == {
        "token_id": tokens["author"].split("_")[1], "role": "author", "method": "POST",
        "path": "/workflows", "action": "push_workflow", "status": 201,
    }  # fmt: skip
    assert (refused["role"], refused["status"]) == ("viewer", 403)


def test_text_the_database_cannot_hold_is_422_not_500(api, tokens):
    response = api.get("/runs", params={"workflow": "a\x00b"}, headers=auth(tokens["viewer"]))
    assert "not valid text" in assert_error(response, 422, "InvalidRequest")
    response = api.get("/workflows/a%00b", headers=auth(tokens["viewer"]))
    assert_error(response, 422, "InvalidRequest")


def test_unknown_route_and_method_keep_the_shape(api, tokens):
    assert_error(api.get("/nope", headers=auth(tokens["viewer"])), 404, "NotFound")
    assert_error(api.put("/workflows", headers=auth(tokens["viewer"])), 405, "MethodNotAllowed")
