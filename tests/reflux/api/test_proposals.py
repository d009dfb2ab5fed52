"""The review loop over HTTP: `/proposals` and `/critic/run` against the API that `reflux up`
starts (real HTTP, PostgreSQL, Temporal and the evolution worker): each role may do what
EVOLUTION.md says and nothing more, a namespaced token sees its namespace's proposals only,
bad requests are one-line answers, and accepts and rejects are audited."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from infra.database import connect
from infra.stack import addresses
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually
from tests.reflux.api.conftest import auth, make_token, poll_run
from tests.reflux.api.test_access import FLOW, assert_error

pytestmark = pytest.mark.timeout(120)

RETRY = {"op": "set_policy", "step": "hello", "retry": {"max_attempts": 5}}


@pytest.fixture(scope="module")
def other(stack: RunningStack) -> dict[str, str]:
    """Tokens of each role scoped to a namespace of this module's own ("b")."""
    namespace = f"b-{uuid.uuid4().hex[:6]}"
    made = {role: make_token(stack, role, namespace) for role in ("viewer", "author", "reviewer")}
    return {**made, "namespace": namespace}


def workflow(api: httpx.Client, token: str, namespace: str = "default") -> str:
    workflow_id = f"prop-wf-{uuid.uuid4().hex[:8]}"
    source = FLOW.format(id=workflow_id, namespace=namespace)
    pushed = api.post("/workflows", json={"source": source}, headers=auth(token))
    assert pushed.status_code == 201, pushed.text
    return workflow_id


def propose(api: httpx.Client, token: str, workflow_id: str, **extra: Any) -> httpx.Response:
    body = {"workflow_id": workflow_id, "title": "Retry hello  up to 5 times", "mutation": RETRY}
    return api.post("/proposals", json={**body, **extra}, headers=auth(token))


def proposal(api: httpx.Client, tokens: dict[str, str], workflow_id: str) -> dict[str, Any]:
    made = propose(api, tokens["author"], workflow_id)
    assert made.status_code == 201, made.text
    return dict(made.json())


def status_becomes(api: httpx.Client, token: str, pid: str, wanted: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        shown = api.get(f"/proposals/{pid}", headers=auth(token)).json()
        return shown if shown["status"] == wanted else None

    return eventually(reached, timeout=60, every=0.2, what=f"{pid} {wanted}")


def test_an_author_proposes_and_a_viewer_reads_it(api, tokens):
    workflow_id = workflow(api, tokens["author"])
    made = proposal(api, tokens, workflow_id)
    assert made["id"].startswith("prop-")
    assert (made["status"], made["source"], made["kind"]) == ("open", "person", "retry")
    assert (made["workflow_id"], made["workflow_version"], made["step_id"]) == (
        workflow_id, 1, "hello",
    )  # fmt: skip
    assert made["title"] == "Retry hello up to 5 times"  # one line, spaces collapsed
    assert made["mutation"] == [RETRY]  # one object is a list of one
    assert made["created_by"] == "token:test-author"
    assert [(h["status"], h["actor"]) for h in made["history"]] == [("open", "token:test-author")]

    viewer = auth(tokens["viewer"])
    shown = api.get(f"/proposals/{made['id']}", headers=viewer)
    assert shown.status_code == 200 and shown.json() == made
    listed = api.get("/proposals", params={"workflow": workflow_id}, headers=viewer)
    assert [p["id"] for p in listed.json()] == [made["id"]]
    newer = proposal(api, tokens, workflow_id)
    listed = api.get("/proposals", params={"workflow": workflow_id}, headers=viewer).json()
    assert [p["id"] for p in listed] == [newer["id"], made["id"]]  # newest first
    one = api.get("/proposals", params={"workflow": workflow_id, "limit": 1}, headers=viewer)
    assert [p["id"] for p in one.json()] == [newer["id"]]
    by_kind = {"workflow": workflow_id, "kind": "timeout"}
    assert api.get("/proposals", params=by_kind, headers=viewer).json() == []
    by_status = {"workflow": workflow_id, "status": "rejected"}
    assert api.get("/proposals", params=by_status, headers=viewer).json() == []
    bad = api.get("/proposals", params={"status": "nope"}, headers=viewer)
    assert assert_error(bad, 422, "InvalidRequest").startswith("query.status:")


def test_each_role_may_do_its_part_only(api, tokens):
    workflow_id = workflow(api, tokens["author"])
    pid = proposal(api, tokens, workflow_id)["id"]
    reject = {"note": "not now"}
    for token in (tokens["viewer"],):
        assert_error(propose(api, token, workflow_id), 403, "Forbidden")
        assert_error(api.post(f"/proposals/{pid}/validate", json={}, headers=auth(token)),
                     403, "Forbidden")  # fmt: skip
        assert_error(api.post("/critic/run", json={}, headers=auth(token)), 403, "Forbidden")
    for token in (tokens["viewer"], tokens["author"]):
        message = assert_error(
            api.post(f"/proposals/{pid}/accept", json={}, headers=auth(token)), 403, "Forbidden"
        )
        assert "reviewer" in message
        assert_error(api.post(f"/proposals/{pid}/reject", json=reject, headers=auth(token)),
                     403, "Forbidden")  # fmt: skip
    shown = api.get(f"/proposals/{pid}", headers=auth(tokens["viewer"])).json()
    assert (shown["status"], len(shown["history"])) == ("open", 1)  # nothing reached it

    rejected = api.post(f"/proposals/{pid}/reject", json=reject, headers=auth(tokens["reviewer"]))
    assert rejected.status_code == 202, rejected.text
    assert rejected.headers["location"] == f"/proposals/{pid}"
    assert rejected.json()["status"] == "open"  # as it was: the lifecycle moves it
    done = status_becomes(api, tokens["viewer"], pid, "rejected")
    assert (done["history"][-1]["actor"], done["history"][-1]["note"]) == (
        "token:test-reviewer", "not now",
    )  # fmt: skip
    again = api.post(f"/proposals/{pid}/validate", json={}, headers=auth(tokens["author"]))
    assert "its life has ended" in assert_error(again, 409, "LifecycleError")


def test_accept_needs_validation_unless_an_admin_forces_it(api, tokens):
    workflow_id = workflow(api, tokens["author"])
    pid = proposal(api, tokens, workflow_id)["id"]
    path = f"/proposals/{pid}/accept"

    refused = api.post(path, json={"note": "ship it"}, headers=auth(tokens["reviewer"]))
    message = assert_error(refused, 409, "LifecycleError")
    assert "not validated: validate it first" in message and "\n" not in message
    forced = api.post(path, json={"note": "x", "force": True}, headers=auth(tokens["reviewer"]))
    assert "admin role" in assert_error(forced, 403, "Forbidden")
    unsaid = api.post(path, json={"force": True}, headers=auth(tokens["admin"]))
    assert "needs a note" in assert_error(unsaid, 409, "LifecycleError")
    shown = api.get(f"/proposals/{pid}", headers=auth(tokens["viewer"])).json()
    assert shown["status"] == "open"

    body = {"note": "the outage is now", "force": True}
    accepted = api.post(path, json=body, headers=auth(tokens["admin"]))
    assert accepted.status_code == 202, accepted.text
    applied = status_becomes(api, tokens["viewer"], pid, "applied")
    assert applied["applied"]["workflow_version"] == 2
    assert "forced by admin while open" in applied["history"][1]["note"]
    live = api.get(f"/workflows/{workflow_id}", headers=auth(tokens["viewer"])).json()
    assert live["version"] == 2 and "max_attempts: 5" in live["source"]
    late = api.post(f"/proposals/{pid}/reject", json={"note": "no"}, headers=auth(tokens["admin"]))
    assert "too late" in assert_error(late, 409, "LifecycleError")


def test_validate_is_asked_at_once_and_the_lifecycle_judges(api, tokens):
    workflow_id = workflow(api, tokens["author"])
    started = api.post("/runs", json={"workflow": workflow_id}, headers=auth(tokens["author"]))
    assert started.status_code == 201, started.text
    assert poll_run(api, tokens, started.json()["run_id"])["status"] == "completed"
    pid = proposal(api, tokens, workflow_id)["id"]
    path = f"/proposals/{pid}/validate"
    bad = api.post(path, json={"mode": "live"}, headers=auth(tokens["author"]))
    assert assert_error(bad, 422, "InvalidRequest").startswith("body.mode:")
    asked = api.post(path, json={"mode": "shadow", "runs": 2}, headers=auth(tokens["author"]))
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "open" and asked.headers["location"] == f"/proposals/{pid}"

    judged = status_becomes(api, tokens["viewer"], pid, "inconclusive")  # 2 runs per arm
    assert (judged["validation"]["mode"], judged["validation"]["target"]) == ("shadow", 2)
    assert judged["validation"]["samples"] == {"baseline": 2, "candidate": 2}
    assert [h["status"] for h in judged["history"]] == ["open", "validating", "inconclusive"]
    assert judged["history"][1]["actor"] == "token:test-author"


def test_another_namespace_is_not_there(api, tokens, other):
    workflow_id = workflow(api, tokens["author"])
    pid = proposal(api, tokens, workflow_id)["id"]
    unknown = f"no proposal '{pid}'"
    assert assert_error(api.get(f"/proposals/{pid}", headers=auth(other["viewer"])),
                        404, "NotFound") == unknown  # fmt: skip
    asks = [("validate", other["author"], {}), ("accept", other["reviewer"], {"note": "x"}),
            ("accept", other["reviewer"], {"note": "x", "force": True}),
            ("reject", other["reviewer"], {"note": "x"})]  # fmt: skip
    for action, token, body in asks:
        answer = api.post(f"/proposals/{pid}/{action}", json=body, headers=auth(token))
        assert assert_error(answer, 404, "NotFound") == unknown, action
    assert pid not in [p["id"] for p in api.get("/proposals", headers=auth(other["viewer"])).json()]
    made = propose(api, other["author"], workflow_id)
    assert assert_error(made, 404, "NotFound") == f"unknown workflow '{workflow_id}'"
    scan = api.post("/critic/run", json={"workflow": workflow_id}, headers=auth(other["author"]))
    assert assert_error(scan, 404, "NotFound") == f"unknown workflow '{workflow_id}'"

    own = workflow(api, other["author"], other["namespace"])
    mine = propose(api, other["author"], own)
    assert mine.status_code == 201, mine.text
    assert mine.json()["namespace"] == other["namespace"]
    listed = [p["id"] for p in api.get("/proposals", headers=auth(other["viewer"])).json()]
    assert listed == [mine.json()["id"]]
    everyone = api.get("/proposals", params={"workflow": own}, headers=auth(tokens["viewer"]))
    assert [p["id"] for p in everyone.json()] == [mine.json()["id"]]
    shown = api.get(f"/proposals/{pid}", headers=auth(tokens["viewer"])).json()
    assert (shown["status"], len(shown["history"])) == ("open", 1)


def test_bad_requests_are_one_line(api, tokens):
    workflow_id = workflow(api, tokens["author"])
    author = tokens["author"]
    zero = {"op": "set_policy", "step": "hello", "retry": {"max_attempts": 0}}
    answer = propose(api, author, workflow_id, mutation=[RETRY, zero])
    message = assert_error(answer, 422, "SpecError")
    assert "mutation[1].retry.max_attempts" in message, message
    answer = propose(api, author, workflow_id, mutation={**RETRY, "step": "nope"})
    problems = answer.json()["error"]["details"]["problems"]
    assert answer.status_code == 422 and any("nope" in p for p in problems), answer.text
    for mutation in ("retry", [], [RETRY] * 65, [RETRY, "x"]):
        answer = propose(api, author, workflow_id, mutation=mutation)
        assert assert_error(answer, 422, "InvalidRequest").startswith("body.mutation:")
    for extra, where in (({"title": "  "}, "body.title"), ({"title": "t" * 301}, "body.title"),
                         ({"kind": "magic"}, "body.kind")):  # fmt: skip
        answer = propose(api, author, workflow_id, **extra)
        assert assert_error(answer, 422, "InvalidRequest").startswith(f"{where}:"), extra
    mixed = [RETRY, {"op": "deprecate", "node": "core.transform", "version": "1"}]
    answer = propose(api, author, workflow_id, mutation=mixed)
    assert "one node operation" in assert_error(answer, 422, "InvalidRequest")
    unknown = propose(api, author, f"{workflow_id}-gone")
    assert assert_error(unknown, 404, "NotFound") == f"unknown workflow '{workflow_id}-gone'"
    assert (
        api.get("/proposals", params={"workflow": workflow_id}, headers=auth(author)).json() == []
    )

    gone = api.get("/proposals/prop-00000000", headers=auth(tokens["viewer"]))
    assert assert_error(gone, 404, "NotFound") == "no proposal 'prop-00000000'"
    asked = api.post("/proposals/prop-00000000/validate", json={}, headers=auth(author))
    assert_error(asked, 404, "NotFound")
    pid = proposal(api, tokens, workflow_id)["id"]
    reviewer = auth(tokens["reviewer"])
    for body in ({}, {"note": "   "}, {"note": "n" * 2001}):
        answer = api.post(f"/proposals/{pid}/reject", json=body, headers=reviewer)
        message = assert_error(answer, 422, "InvalidRequest")
        assert message.startswith("body.note:") and "\n" not in message, message


def test_the_critic_on_a_workflow_without_traces_finds_nothing(api, tokens, other):
    workflow_id = workflow(api, tokens["author"])
    body = {"workflow": workflow_id, "since": "1h"}
    scan = api.post("/critic/run", json=body, headers=auth(tokens["author"]))
    assert scan.status_code == 200, scan.text
    assert scan.json() == {"proposals": [], "errors": []}
    scoped = api.post("/critic/run", json={"since": "5m"}, headers=auth(other["author"]))
    assert scoped.status_code == 200 and scoped.json()["proposals"] == [], scoped.text
    for since in ("soon", "0s", "90d"):
        bad = api.post("/critic/run", json={"since": since}, headers=auth(tokens["author"]))
        assert assert_error(bad, 422, "InvalidRequest").startswith("body.since:"), since


def test_the_openapi_document_lists_every_endpoint(api):
    paths = api.get("/openapi.json").json()["paths"]
    wanted = {
        ("/proposals", "get"), ("/proposals", "post"), ("/proposals/{proposal_id}", "get"),
        ("/proposals/{proposal_id}/validate", "post"), ("/proposals/{proposal_id}/accept", "post"),
        ("/proposals/{proposal_id}/reject", "post"), ("/critic/run", "post"),
    }  # fmt: skip
    for path, method in wanted:
        operation = paths[path][method]
        assert operation["summary"] and operation["description"], (path, method)
        assert operation["responses"]["403"], (path, method)
        if method == "post":
            assert "requestBody" in operation, path
    created = paths["/proposals"]["post"]["responses"]["201"]["content"]["application/json"]
    assert created["schema"] == {"$ref": "#/components/schemas/Proposal"}


def test_accepts_and_rejects_are_audited(stack: RunningStack, api, tokens):
    workflow_id = workflow(api, tokens["author"])
    first, second = (
        proposal(api, tokens, workflow_id)["id"],
        proposal(api, tokens, workflow_id)["id"],
    )
    api.post(f"/proposals/{first}/accept", json={}, headers=auth(tokens["reviewer"]))  # 409
    api.post(f"/proposals/{first}/reject", json={"note": "no"}, headers=auth(tokens["reviewer"]))
    api.post(f"/proposals/{second}/reject", json={"note": "no"}, headers=auth(tokens["author"]))

    async def rows() -> list[tuple[Any, ...]]:
        conn = await connect(addresses(stack.settings).database)
        try:
            found = await conn.fetch(
                "SELECT token_id, role, path, action, status FROM audit_log"
                " WHERE path LIKE '/proposals/' || $1 || '/%' OR path LIKE '/proposals/' || $2"
                " || '/%' ORDER BY id",
                first, second,
            )  # fmt: skip
            return [tuple(r) for r in found]
        finally:
            await conn.close()

    reviewer, author = tokens["reviewer"].split("_")[1], tokens["author"].split("_")[1]
    assert asyncio.run(rows()) == [
        (reviewer, "reviewer", f"/proposals/{first}/accept", "accept_proposal", 409),
        (reviewer, "reviewer", f"/proposals/{first}/reject", "reject_proposal", 202),
        (author, "author", f"/proposals/{second}/reject", "reject_proposal", 403),
    ]
