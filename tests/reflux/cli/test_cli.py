"""`reflux validate` and `reflux run` as a user runs them: exit codes, output formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.httpserver import HttpTestServer
from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(180)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_validate_prints_ok_or_one_line_per_problem(stack: RunningStack):
    bad = stack.write(
        "bad.yaml",
        """
        id: bad
        steps:
          - id: a
            node: htp.request@1
          - id: b
            node: core.transform@1
            needz: [a]
        """,
    )
    good = EXAMPLES / "hello.yaml"
    done = stack.cli("validate", str(good), str(bad))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"{good}: ok"
    assert any(
        line.startswith(f"{bad}:5:11: steps[0].node:") and "did you mean 'http.request'" in line
        for line in lines
    ), lines
    assert any(line.startswith(f"{bad}:8:5: steps[1].needz:") for line in lines), lines
    assert "Traceback" not in done.stderr
    assert stack.cli("validate", str(good)).returncode == 0


def test_run_json_prints_one_object_and_exit_code_follows_status(stack: RunningStack):
    done = stack.cli("run", str(EXAMPLES / "hello.yaml"), "--json", "--input", '{"name": "Ada"}')
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)  # the whole stdout is one JSON object
    assert set(body) == {"run_id", "status", "outputs", "steps"}
    assert body["status"] == "completed"
    assert body["outputs"]["greeting"] == "Hello, Ada!"
    assert body["steps"]["grade"]["status"] == "completed"
    assert set(body["steps"]["greet"]) >= {"status", "attempts", "output", "error"}

    failing = stack.write(
        "fails.yaml",
        """
        id: fails
        steps:
          - id: boom
            node: core.transform@1
            with: {value: "{{ 1 // 0 }}"}
        """,
    )
    done = stack.cli("run", str(failing), "--json")
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert body["status"] == "failed"
    assert body["steps"]["boom"]["error"]["class"] == "ExpressionError"


def test_run_table_shows_steps_and_outputs(stack: RunningStack):
    done = stack.cli(
        "run", str(EXAMPLES / "hello.yaml"), "--input", '{"name": "Ada", "scores": [3, 9, 4]}'
    )
    assert done.returncode == 0, done.stderr
    assert "STEP" in done.stdout and "ATTEMPTS" in done.stdout
    assert "celebrate  ok" in done.stdout
    assert '"total": 16' in done.stdout
    assert "spread     ok" in done.stdout  # the sandboxed code step


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{not json"], "--input:1:2: <input>: invalid JSON"),
        (["--input", "[1]"], "must be a JSON object"),
        (["--input", '{"nam": "x"}'], "nam"),
        (["--input", '{"name": 5}'], "name"),
    ],
)
def test_run_rejects_bad_input_with_exit_2(stack: RunningStack, args, message):
    done = stack.cli("run", str(EXAMPLES / "hello.yaml"), "--json", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_run_rejects_invalid_file_with_exit_2(stack: RunningStack, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nsteps: [\n")
    done = stack.cli("run", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"{path}:")
    missing = stack.cli("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_http_request_through_the_stack_and_ssrf_refusal(stack: RunningStack):
    with HttpTestServer() as server:
        result = stack.run(
            f"""
            id: http
            steps:
              - id: get
                node: http.request@1
                with: {{url: "{server.url("/json")}"}}
              - id: private
                node: http.request@1
                continue_on_error: true
                with: {{url: "http://10.0.0.1/", timeout: 2}}
              - id: missing
                node: http.request@1
                continue_on_error: true
                with: {{url: "{server.url("/status/404")}"}}
            outputs:
              hello: "{{{{ steps.get.output.json.hello }}}}"
            """
        )
    assert result.status == "completed", result.error
    assert result.outputs == {"hello": "world"}
    private = result.steps["private"]
    assert private.status == "failed" and private.error.class_ == "SsrfError"
    assert private.attempts == 1
    missing = result.steps["missing"]
    assert missing.error.class_ == "HttpStatusError" and missing.attempts == 1


def test_validate_without_a_stack_falls_back_to_the_builtin_catalog(tmp_path):
    import os
    import subprocess
    import sys

    from infra.ports import free_port

    env = {**os.environ, "REFLUX_HOME": str(tmp_path), "REFLUX_DATABASE_PORT": str(free_port())}
    env.pop("REFLUX_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "reflux.cli", "validate", str(EXAMPLES / "hello.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("hello.yaml: ok")
    assert "cannot reach PostgreSQL" in done.stderr and "built-in library" in done.stderr
    assert "Traceback" not in done.stderr
