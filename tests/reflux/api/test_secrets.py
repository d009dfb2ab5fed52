"""Secrets over the API and in runs: admins set them per namespace, nobody reads them back,
a run reads only its own namespace's, and secret() works only where a node allows it."""

from __future__ import annotations

import json
import textwrap

import httpx

from registry import audit
from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import auth, make_token, poll_run


def test_admins_set_list_and_delete_within_their_namespace(
    stack: RunningStack, api: httpx.Client, tokens: dict[str, str]
) -> None:
    acme_admin = make_token(stack, "admin", "acme")
    put = api.put("/secrets/ACME_KEY", json={"value": "acme-value-1"}, headers=auth(acme_admin))
    assert put.status_code == 200, put.text
    assert put.json() == {
        "name": "ACME_KEY",
        "namespace": "acme",
        "kind": "secret",
        "created": True,
    }
    elsewhere = api.put(
        "/secrets/ACME_KEY",
        json={"value": "x-1234", "namespace": "beta"},
        headers=auth(acme_admin),
    )
    assert elsewhere.status_code == 403
    assert "namespace 'beta'" in elsewhere.json()["error"]["message"]
    for role in ("viewer", "author", "reviewer"):
        refused = api.put("/secrets/X_KEY", json={"value": "v-1234"}, headers=auth(tokens[role]))
        assert refused.status_code == 403, role
    api.put(
        "/secrets/BETA_KEY",
        json={"value": "beta-value-1", "namespace": "beta"},
        headers=auth(tokens["admin"]),
    ).raise_for_status()
    seen = api.get("/secrets", headers=auth(acme_admin))
    assert seen.status_code == 200
    assert {s["name"] for s in seen.json()} == {"ACME_KEY"}  # not beta's
    everything = api.get("/secrets", headers=auth(tokens["admin"])).text
    assert "ACME_KEY" in everything and "BETA_KEY" in everything
    assert "acme-value-1" not in everything and "beta-value-1" not in everything
    bad = api.put("/secrets/lower-case", json={"value": "v-1234"}, headers=auth(tokens["admin"]))
    assert bad.status_code == 422 and "bad secret name" in bad.json()["error"]["message"]
    gone = api.delete("/secrets/ACME_KEY", headers=auth(acme_admin))
    assert gone.status_code == 200
    assert api.delete("/secrets/ACME_KEY", headers=auth(acme_admin)).status_code == 404


async def test_setting_a_secret_is_audited_by_name_only(
    stack: RunningStack, api: httpx.Client, tokens: dict[str, str]
) -> None:
    from infra.database import pool_for

    api.put(
        "/secrets/AUDITED_KEY", json={"value": "audited-value-1"}, headers=auth(tokens["admin"])
    ).raise_for_status()
    async with pool_for(stack.settings) as pool:
        entries = await audit.entries(pool, limit=50)
    mine = [e for e in entries if e.path == "/secrets/AUDITED_KEY"]
    assert mine and mine[0].action == "set_secret" and mine[0].status == 200
    assert "audited-value-1" not in repr(entries)


def test_a_run_reads_only_its_own_namespace(
    stack: RunningStack, api: httpx.Client, tokens: dict[str, str]
) -> None:
    admin = auth(tokens["admin"])
    api.put(
        "/secrets/SCOPED_KEY", json={"value": "scoped-acme-1", "namespace": "acme"}, headers=admin
    ).raise_for_status()
    results = {}
    for namespace in ("acme", "beta"):
        source = textwrap.dedent(
            f"""
            id: scoped-{namespace}
            namespace: {namespace}
            steps:
              - id: call
                node: code.python@1
                retry: {{max_attempts: 1}}
                with:
                  env: {{KEY: "{{{{ secret('SCOPED_KEY') }}}}"}}
                  code: |
                    import os
                    def run(inputs):
                        return {{"length": len(os.environ["KEY"])}}
            """
        )
        pushed = api.post("/workflows", json={"source": source}, headers=admin)
        assert pushed.status_code in (200, 201), pushed.text
        started = api.post("/runs", json={"workflow": f"scoped-{namespace}"}, headers=admin)
        assert started.status_code == 201, started.text
        results[namespace] = poll_run(api, tokens, started.json()["run_id"])
    assert results["acme"]["status"] == "completed", results["acme"]
    assert results["acme"]["steps"]["call"]["output"] == {"length": len("scoped-acme-1")}
    beta = results["beta"]
    assert beta["status"] == "failed"
    assert "secret 'SCOPED_KEY' is not set in namespace 'beta'" in json.dumps(beta)


def test_secret_is_refused_where_a_node_takes_none(
    stack: RunningStack, api: httpx.Client, tokens: dict[str, str]
) -> None:
    source = textwrap.dedent(
        """
        id: reads-a-hook-key
        steps:
          - id: show
            node: core.transform@1
            with: {value: "{{ secret('TEST_HOOK') }}"}
        """
    )
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 422
    assert "secret() is not allowed here (core.transform takes no secret())" in pushed.text
    path = stack.write("reads-a-hook-key.yaml", source)
    checked = stack.cli("validate", str(path))
    assert checked.returncode == 1
    assert checked.stdout.strip().endswith(
        "steps[0].with.value: secret() is not allowed here (core.transform takes no secret())"
    )


def test_a_placeholder_that_arrives_as_data_stays_data(stack: RunningStack) -> None:
    # Written literally (or arriving in an input), the placeholder is not secret(): the node
    # service leaves it alone, in a param that takes no secret and in one that does.
    result = stack.run(
        """
        id: placeholder-as-data
        inputs:
          text: {type: string}
        steps:
          - id: show
            node: core.transform@1
            with: {value: "{{ inputs.text }}"}
        """,
        inputs={"text": "${secret:TEST_HOOK}"},
    )
    assert result.status == "completed"
    assert result.steps["show"].output == {"value": "${secret:TEST_HOOK}"}


def test_a_webhook_key_is_not_a_secret_a_workflow_can_read(
    stack: RunningStack, api: httpx.Client, tokens: dict[str, str]
) -> None:
    api.put(
        "/secrets/SHARED_NAME",
        json={"value": "hook-signing-key-1", "kind": "webhook"},
        headers=auth(tokens["admin"]),
    ).raise_for_status()
    result = stack.run(
        """
        id: reads-a-webhook-key
        steps:
          - id: call
            node: code.python@1
            retry: {max_attempts: 1}
            with:
              env: {KEY: "{{ secret('SHARED_NAME') }}"}
              code: |
                import os
                def run(inputs):
                    return os.environ["KEY"]
        """
    )
    assert result.status == "failed"
    error = result.steps["call"].error
    assert error is not None
    assert "secret 'SHARED_NAME' is not set in namespace 'default'" in error.message


def test_step_views_redact_sensitive_keys(
    stack: RunningStack, api: httpx.Client, tokens: dict[str, str]
) -> None:
    source = textwrap.dedent(
        """
        id: sensitive-output
        steps:
          - id: shape
            node: core.transform@1
            with:
              value: {user: ada, password: hunter22, deep: [{api_key: k-1, note: fine}]}
        outputs:
          all: "{{ steps.shape.output }}"
        """
    )
    admin = auth(tokens["admin"])
    api.post("/workflows", json={"source": source}, headers=admin).raise_for_status()
    started = api.post("/runs", json={"workflow": "sensitive-output"}, headers=admin)
    run = poll_run(api, tokens, started.json()["run_id"])
    assert run["status"] == "completed"
    shown = run["steps"]["shape"]["output"]["value"]
    assert shown == {
        "user": "ada",
        "password": "[redacted]",
        "deep": [{"api_key": "[redacted]", "note": "fine"}],
    }
    assert "hunter22" not in json.dumps(run) and "k-1" not in json.dumps(run)
