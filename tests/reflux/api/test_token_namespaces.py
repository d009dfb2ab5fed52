"""A token's namespace is a namespace name or none at all: an empty (or malformed) one is
refused where a token is made, and a token that has one (even "", as an older version could
store) is scoped by it: it never sees another namespace's secrets or stats."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid

import pytest

from infra.database import connect
from infra.stack import addresses
from orchestrator.spec import WORKFLOW_ID
from registry.tokens import NAMESPACE_RE
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually
from tests.reflux.api.conftest import auth, poll_run
from tests.reflux.api.test_access import FLOW, assert_error


def test_a_token_namespace_is_written_as_a_workflows_namespace():
    assert NAMESPACE_RE.pattern == WORKFLOW_ID.pattern  # registry cannot import orchestrator


@pytest.mark.parametrize("namespace", ["", "Acme", "acme team", "-acme"])
def test_the_api_refuses_a_token_with_a_bad_namespace(api, tokens, namespace: str):
    response = api.post(
        "/tokens", json={"role": "viewer", "namespace": namespace}, headers=auth(tokens["admin"])
    )
    message = assert_error(response, 422, "InvalidRequest")
    assert f"namespace: bad namespace {namespace!r}" in message and "\n" not in message


@pytest.mark.parametrize("namespace", ["", "Acme"])
def test_the_cli_refuses_a_token_with_a_bad_namespace(stack: RunningStack, namespace: str):
    done = stack.cli("tokens", "create", "--role", "viewer", "--namespace", namespace)
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""  # no token printed
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"bad namespace {namespace!r}" in lines[0], done.stderr
    assert "every namespace" not in done.stderr


def legacy_token(stack: RunningStack, namespace: str) -> str:
    """A token stored with `namespace` as it is, as an older version could have made it."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)

    async def insert() -> None:
        conn = await connect(addresses(stack.settings).database)
        try:
            await conn.execute(
                "INSERT INTO api_tokens (id, name, role, namespace, secret_hash, created_by)"
                " VALUES ($1, 'legacy', 'admin', $2, $3, 'test')",
                token_id, namespace, hashlib.sha256(secret.encode()).hexdigest(),
            )  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(insert())
    return f"rfx_{token_id}_{secret}"


def test_an_empty_namespace_token_lists_no_other_namespaces_secrets(
    stack: RunningStack, api, tokens
):
    ns = f"team-{uuid.uuid4().hex[:6]}"
    api.put(
        "/secrets/OTHER_TEAM_KEY", json={"value": "their-value", "namespace": ns},
        headers=auth(tokens["admin"]),
    ).raise_for_status()  # fmt: skip
    empty = legacy_token(stack, "")
    listed = api.get("/secrets", headers=auth(empty))
    assert "OTHER_TEAM_KEY" not in listed.text
    assert "bad namespace ''" in assert_error(listed, 422, "InvalidRequest")
    # and a global admin asking for namespace "" is told the name is bad, not shown all
    asked = api.get("/secrets", params={"namespace": ""}, headers=auth(tokens["admin"]))
    assert "bad namespace ''" in assert_error(asked, 422, "InvalidRequest")


def test_an_empty_namespace_token_sees_no_other_namespaces_stats(stack: RunningStack, api, tokens):
    workflow_id = f"stats-{uuid.uuid4().hex[:8]}"
    source = FLOW.format(id=workflow_id, namespace="default")
    assert api.post("/workflows", json={"source": source},
                    headers=auth(tokens["author"])).status_code == 201  # fmt: skip
    started = api.post("/runs", json={"workflow": workflow_id}, headers=auth(tokens["author"]))
    assert started.status_code == 201, started.text
    assert poll_run(api, tokens, started.json()["run_id"])["status"] == "completed"

    def stats(token: str) -> dict:
        response = api.get("/stats", params={"since": "1h"}, headers=auth(token))
        assert response.status_code == 200, response.text
        return response.json()

    def traced() -> bool:  # the sink has it: a global token sees the workflow
        return workflow_id in {w["workflow_id"] for w in stats(tokens["viewer"])["workflows"]}

    eventually(traced, timeout=60)
    assert stats(legacy_token(stack, "")) == {"nodes": [], "workflows": [], "failing_steps": []}
