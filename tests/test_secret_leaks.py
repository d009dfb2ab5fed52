"""Secrets never leak: run the workflows that leaked them (a server echoing the
Authorization header in a 500, code that raises and prints with the value, a response that
carries it URL-encoded and base64), then search every store for the value — the CLI's
output, the API's answers, Temporal history, ClickHouse, every PostgreSQL table (a dump),
and every file under REFLUX_HOME (logs, JetStream streams, the step cache bucket, which
holds the http step's result) — and find it nowhere. The HTTP server is this test's
stand-in for a third-party API."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from infra.services import pg_bin_dir
from infra.stack import addresses
from tests.helpers.httpserver import HttpTestServer, RecordedRequest, Reply
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually
from tests.reflux.api.conftest import make_token

SECRET = "s3cr3t-Vx9-leak-canary"
FORMS = {
    "plain": SECRET.encode(),
    "url": quote(SECRET, safe="").encode(),
    "base64": base64.b64encode(SECRET.encode()).rstrip(b"="),
    "basic": base64.b64encode(f"ada:{SECRET}".encode())[4:20],
}


def echo_500(request: RecordedRequest) -> Reply:
    auth = request.headers.get("authorization", "")
    return Reply(500, f"denied: {auth} (b64 {base64.b64encode(auth.encode()).decode()})")


def echo_ok(request: RecordedRequest) -> Reply:
    auth = request.headers.get("authorization", "")
    return Reply(200, {"auth": auth, "path": request.path, "quoted": quote(auth, safe="")})


@pytest.fixture(scope="module")
def server() -> HttpTestServer:
    with HttpTestServer() as running:
        running.route("/echo-500", echo_500)
        running.route("/echo", echo_ok)
        yield running


@pytest.fixture(scope="module")
def leaky_runs(stack: RunningStack, server: HttpTestServer) -> dict[str, dict]:
    done = stack.cli("secrets", "set", "LEAK_CANARY", input=SECRET + "\n")
    assert done.returncode == 0, done.stderr
    basic = {"username": "ada", "password": "{{ secret('LEAK_CANARY') }}"}
    flows = {
        "http-500": f"""
            id: leak-http-500
            steps:
              - id: call
                node: http.request@1
                retry: {{max_attempts: 1}}
                with:
                  url: "{server.url("/echo-500")}"
                  headers: {{Authorization: "Bearer {{{{ secret('LEAK_CANARY') }}}}"}}
            """,
        "http-ok": f"""
            id: leak-http-ok
            steps:
              - id: call
                node: http.request@1
                cache: {{ttl: 10m, allow_secrets: true}}  # so the step cache bucket holds it
                with:
                  url: "{server.url("/echo")}?key={{{{ secret('LEAK_CANARY') }}}}"
                  auth: {json.dumps(basic)}
              - id: show
                node: core.transform@1
                with: {{value: "{{{{ steps.call.output }}}}"}}
            outputs:
              body: "{{{{ steps.call.output.json }}}}"
            """,
        "code": """
            id: leak-code
            steps:
              - id: boom
                node: code.python@1
                with:
                  env: {KEY: "{{ secret('LEAK_CANARY') }}"}
                  code: |
                    import os, sys
                    def run(inputs):
                        print("stdout has", os.environ["KEY"])
                        print("stderr has", os.environ["KEY"], file=sys.stderr)
                        raise ValueError("boom " + os.environ["KEY"])
            """,
    }
    runs = {}
    for name, text in flows.items():
        path = stack.write(f"{name}.yaml", text)
        done = stack.cli("run", str(path), "--json")
        assert done.returncode in (0, 1), done.stderr
        runs[name] = {"cli": done.stdout + done.stderr, "body": json.loads(done.stdout)}
    return runs


def assert_clean(where: str, data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for form, needle in FORMS.items():
        assert needle not in blob, f"the secret ({form}) is in {where}"


def test_the_runs_did_what_leaked_before(
    leaky_runs: dict[str, dict], server: HttpTestServer
) -> None:
    sent = [r.headers.get("authorization", "") for r in server.requests]
    assert f"Bearer {SECRET}" in sent  # the third-party API did get the value
    failed = leaky_runs["http-500"]["body"]
    assert failed["status"] == "failed"
    assert "[secret:LEAK_CANARY]" in json.dumps(failed)
    ok = leaky_runs["http-ok"]["body"]
    assert ok["status"] == "completed", ok
    assert ok["outputs"]["body"]["path"] == "/echo?key=[secret:LEAK_CANARY]"
    code = leaky_runs["code"]["body"]
    assert code["status"] == "failed"
    assert code["error"]["class"] == "CodeRunError"
    assert "boom [secret:LEAK_CANARY]" in json.dumps(code)


def test_no_store_holds_the_value(stack: RunningStack, leaky_runs: dict[str, dict]) -> None:
    run_ids = [r["body"]["run_id"] for r in leaky_runs.values()]
    for name, run in leaky_runs.items():
        assert_clean(f"`reflux run --json` of {name}", run["cli"])

    def traced() -> list[str]:
        outs = [stack.cli("traces", run_id).stdout for run_id in run_ids]
        return outs if all(json.loads(o or "[]") for o in outs) else []

    for run_id, text in zip(run_ids, eventually(traced, timeout=60), strict=True):
        assert_clean(f"`reflux traces {run_id}`", text)
    ours = "', '".join(run_ids)
    rows = stack.cli("sql", f"SELECT * FROM traces WHERE run_id IN ('{ours}')", "--json")
    assert rows.returncode == 0, rows.stderr
    assert len(json.loads(rows.stdout)) >= len(run_ids)
    assert_clean("ClickHouse's rows of these runs", rows.stdout)

    # Every row of the session's table, searched in ClickHouse (the value goes in as hex, so
    # the query itself does not put it anywhere the file search below would find it).
    def rows_holding(needle: bytes) -> int:
        query = (
            "SELECT count() AS n FROM traces"
            f" WHERE position(formatRow('JSONEachRow', *), unhex('{needle.hex()}')) > 0"
        )
        found = stack.cli("sql", query, "--json")
        assert found.returncode == 0, found.stderr
        return int(json.loads(found.stdout)[0]["n"])

    assert rows_holding(b"[secret:LEAK_CANARY]") > 0  # the search finds what is there
    for form, needle in FORMS.items():
        assert rows_holding(needle) == 0, f"the secret ({form}) is in ClickHouse"

    admin = make_token(stack, "admin")
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
        for run_id in run_ids:
            for path in ("", "/traces", "/events"):
                answer = api.get(f"/runs/{run_id}{path}")
                assert answer.status_code == 200, answer.text
                assert_clean(f"GET /runs/{run_id}{path}", answer.content)

    for run_id in run_ids:
        assert_clean(f"the Temporal history of {run_id}", asyncio.run(_history(stack, run_id)))
    assert_clean("a dump of every PostgreSQL table", _pg_dump(stack))
    for path in sorted(Path(stack.home).rglob("*")):
        if path.is_file():
            assert_clean(str(path.relative_to(stack.home)), path.read_bytes())


def test_listing_shows_names_not_values(stack: RunningStack, leaky_runs: dict[str, dict]) -> None:
    listed = stack.cli("secrets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert any(s["name"] == "LEAK_CANARY" for s in json.loads(listed.stdout))
    assert_clean("`reflux secrets list`", listed.stdout)


async def _history(stack: RunningStack, run_id: str) -> str:
    from orchestrator.runs import connect_temporal

    client = await connect_temporal(stack.settings)
    history = await client.get_workflow_handle(run_id).fetch_history()
    return history.to_json()


def _pg_dump(stack: RunningStack) -> bytes:
    url = addresses(stack.settings).database
    done = subprocess.run(
        [str(pg_bin_dir() / "pg_dump"), "--data-only", url], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert b"LEAK_CANARY" in done.stdout  # the dump has the secrets table: sealed values only
    return done.stdout


INJECTED = "${secret:OTHER_CANARY}${secret:LEAK_CANARY}"


def test_a_placeholder_in_an_input_asks_for_no_secret(
    stack: RunningStack, server: HttpTestServer, leaky_runs: dict[str, dict]
) -> None:
    done = stack.cli("secrets", "set", "OTHER_CANARY", input="other-value-Qz8\n")
    assert done.returncode == 0, done.stderr
    result = stack.run(
        f"""
        id: injects-a-placeholder
        inputs:
          note: {{type: string}}
        steps:
          - id: call
            node: http.request@1
            with:
              url: "{server.url("/echo")}?next={{{{ inputs.note }}}}"
              headers:
                Authorization: "Bearer {{{{ secret('LEAK_CANARY') }}}}"
                X-Note: "{{{{ inputs.note }}}}"
        """,
        inputs={"note": INJECTED},
    )
    assert result.status == "completed"
    seen = [r for r in server.requests if "x-note" in r.headers]
    assert [r.headers["x-note"] for r in seen] == [INJECTED]
    assert seen[0].arg("next") == INJECTED
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"
