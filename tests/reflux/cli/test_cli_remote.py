"""The CLI against a remote platform: REFLUX_API_URL and REFLUX_TOKEN set, and Temporal,
NATS and PostgreSQL pointed at addresses where nothing listens, so every command that
works must have gone through the API."""

from __future__ import annotations

import json
import subprocess
import uuid

from infra.ports import free_port
from tests.helpers.stack import CLI, RunningStack
from tests.reflux.api.conftest import make_token

FLOW = """
id: {id}
inputs:
  name: {{type: string, required: true}}
steps:
  - id: greet
    node: core.transform@1
    with: {{value: "hello {{{{ inputs.name }}}}"}}
outputs:
  greeting: "{{{{ steps.greet.output.value }}}}"
"""


def remote_cli(stack: RunningStack, token: str):
    dead = free_port()
    env = {
        **stack.env,
        "REFLUX_API_URL": stack.api_url,
        "REFLUX_TOKEN": token,
        "REFLUX_TEMPORAL_ADDRESS": f"127.0.0.1:{dead}",
        "REFLUX_NATS_URL": f"nats://127.0.0.1:{dead}",
        "REFLUX_DATABASE_URL": f"postgresql://reflux@127.0.0.1:{dead}/reflux",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)

    return cli


def test_push_run_follow_stats_traces_through_the_api(stack: RunningStack, tmp_path):
    cli = remote_cli(stack, make_token(stack, "author"))
    workflow_id = f"remote-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(id=workflow_id))

    pushed = cli("workflows", "push", str(path))
    assert (pushed.returncode, pushed.stdout.strip()) == (
        0,
        f"{path}: stored as {workflow_id}@1",
    ), pushed.stderr  # noqa: E501
    listed = cli("workflows", "list")
    assert workflow_id in listed.stdout, listed.stderr
    shown = cli("workflows", "show", f"{workflow_id}@1")
    assert f"id: {workflow_id}" in shown.stdout, shown.stderr

    done = cli("run", workflow_id, "--input", '{"name": "Ada"}', "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["status"], body["outputs"]) == ("completed", {"greeting": "hello Ada"})

    followed = cli("run", str(path), "--input", '{"name": "Bo"}', "--follow")
    assert followed.returncode == 0, followed.stderr
    kinds = [line.split()[1] for line in followed.stderr.splitlines()[1:]]
    assert kinds == ["step.started", "step.completed", "run.finished"]
    assert "greet" in followed.stdout and '"greeting": "hello Bo"' in followed.stdout

    traces = cli("traces", body["run_id"])
    assert traces.returncode == 0, traces.stderr
    shown = cli("runs", "show", body["run_id"])
    assert shown.stdout.startswith(f"run {body['run_id']}: {workflow_id}@1, completed"), (
        shown.stderr
    )
    stats = cli("stats", "--workflow", workflow_id, "--json")
    assert stats.returncode == 0, stats.stderr
    assert set(json.loads(stats.stdout)) == {"nodes", "workflows", "failing_steps"}

    path.write_text(FLOW.format(id=workflow_id).replace("hello", "hi"))
    assert cli("workflows", "push", str(path)).returncode == 0
    versions = cli("workflows", "versions", workflow_id)
    assert [line.split()[0] for line in versions.stdout.splitlines()[1:]] == ["1", "2"]
    diff = cli("workflows", "diff", workflow_id, "1", "2")
    assert '-    with: {value: "hello' in diff.stdout and '+    with: {value: "hi' in diff.stdout
    nodes = cli("nodes", "list", "--json")
    assert {"name": "core.transform", "version": "1.1.0"}.items() <= next(
        n for n in json.loads(nodes.stdout) if n["name"] == "core.transform"
    ).items()


def test_reviewer_changes_through_the_api(stack: RunningStack):
    reviewer = remote_cli(stack, make_token(stack, "reviewer"))
    deprecated = reviewer("nodes", "deprecate", "test.echo", "2.0.0")
    assert deprecated.stdout.strip() == "test.echo@2.0.0: production -> deprecated", (
        deprecated.stderr
    )  # noqa: E501
    promoted = reviewer("nodes", "promote", "test.echo", "2.0.0", "--to", "production", "--force")
    assert promoted.stdout.strip() == "test.echo@2.0.0: deprecated -> production", promoted.stderr
    started = reviewer("nodes", "rollout", "test.echo", "1.1.0", "--percent", "20")
    assert "takes 20% of new runs" in started.stdout, started.stderr
    stopped = reviewer("nodes", "rollout", "test.echo", "1.1.0", "--percent", "0")
    assert "rollout stopped" in stopped.stdout, stopped.stderr
    again = reviewer("nodes", "rollout", "test.echo", "1.1.0", "--percent", "0")
    assert (again.returncode, again.stderr.strip()) == (
        1,
        "reflux: RegistryError: no rollout of test.echo@1.1.0 to stop (test.echo has none)",
    )
    missing = reviewer("nodes", "deprecate", "core.transform", "9.9.9")
    assert missing.returncode == 1 and "9.9.9" in missing.stderr


def test_remote_errors_are_the_cli_errors(stack: RunningStack, tmp_path):
    viewer = remote_cli(stack, make_token(stack, "viewer"))
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(id=f"remote-{uuid.uuid4().hex[:8]}"))
    refused = viewer("workflows", "push", str(path))
    assert refused.returncode == 1
    assert "Forbidden: this needs the author role; the token's role is viewer" in refused.stderr

    bad = remote_cli(stack, "rfx_nope_nope")
    unknown = bad("workflows", "list")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "reflux: Unauthenticated: unknown or revoked token",
    )
    author = remote_cli(stack, make_token(stack, "author"))
    path.write_text("id: broken\nsteps:\n  - id: a\n    node: no.such@1\n")
    invalid = author("workflows", "push", str(path))
    assert invalid.returncode == 2
    assert invalid.stdout.startswith(f"{path}:4:11:")
    missing = author("run", "no-such-workflow")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "reflux: unknown workflow 'no-such-workflow'",
    )  # noqa: E501
