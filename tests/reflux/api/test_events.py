"""`GET /runs/{id}/events` (Server-Sent Events) and `reflux run --follow`."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import auth

FLOW = """
id: {id}
steps:
  - id: first
    node: core.transform@1
    with: {{value: 1}}
  - id: flaky
    node: test.flaky@1
    needs: [first]
    retry: {{max_attempts: 3, initial_interval: 100ms, backoff: 1.0}}
    with: {{record_dir: "{record_dir}", failures: 1}}
  - id: never
    node: core.transform@1
    needs: [flaky]
    if: "{{{{ false }}}}"
    with: {{value: 2}}
"""


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event type, data) pairs of an event stream, checking the id sequence."""
    events, fields, ids = [], {}, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if fields:
                ids.append(int(fields["id"]))
                events.append((fields["event"], json.loads(fields["data"])))
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    assert ids == list(range(1, len(ids) + 1))
    return events


def test_events_of_a_run_in_order(stack: RunningStack, api, tokens, tmp_path):
    workflow_id = f"events-{uuid.uuid4().hex[:8]}"
    source = FLOW.format(id=workflow_id, record_dir=tmp_path)
    assert (
        api.post("/workflows", json={"source": source}, headers=auth(tokens["author"])).status_code
        == 201
    )  # noqa: E501
    run_id = api.post(
        "/runs", json={"workflow": workflow_id}, headers=auth(tokens["author"])
    ).json()["run_id"]  # noqa: E501

    with api.stream("GET", f"/runs/{run_id}/events", headers=auth(tokens["viewer"])) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    kinds = [(kind, data.get("step")) for kind, data in events]
    assert kinds == [
        ("step.started", "first"),
        ("step.completed", "first"),
        ("step.started", "flaky"),
        ("step.retried", "flaky"),
        ("step.completed", "flaky"),
        ("step.started", "never"),
        ("step.skipped", "never"),
        ("run.finished", None),
    ]
    assert events[3][1]["attempt"] == 2
    assert events[-1][1] == {"type": "run.finished", "run_id": run_id, "status": "completed"}

    # a finished run replays the same events at once
    with api.stream("GET", f"/runs/{run_id}/events", headers=auth(tokens["viewer"])) as again:
        assert [k for k, _ in read_events(again)] == [k for k, _ in events]


def test_events_of_an_unknown_run_are_404(api, tokens):
    response = api.get("/runs/nope-123/events", headers=auth(tokens["viewer"]))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_run_follow_prints_each_event(stack: RunningStack, tmp_path):
    path = stack.write(f"follow-{uuid.uuid4().hex[:6]}.yaml",
                       FLOW.format(id="follow-cli", record_dir=tmp_path))  # fmt: skip
    done = stack.cli("run", str(path), "--follow")
    assert done.returncode == 0, done.stderr
    lines = [line.split()[1:3] for line in done.stderr.splitlines()[1:]]
    assert lines == [
        ["step.started", "first"],
        ["step.completed", "first"],
        ["step.started", "flaky"],
        ["step.retried", "flaky"],
        ["step.completed", "flaky"],
        ["step.started", "never"],
        ["step.skipped", "never"],
        ["run.finished", "completed"],
    ]
    assert "STEP" in done.stdout  # then the usual table
