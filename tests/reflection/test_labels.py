"""A run's labels (`RunInfo.labels`) are on every trace event of it: node attempts, retries,
`for_each` items in fan-out shards, cache hits, skips and engine meta-steps. Stats filter by
them (`reflux stats --label`, the API's `?label=`), and runs labelled `shadow=true` are left
out unless asked for. Rows stored before the `labels` column read as having none."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from infra.settings import Settings
from orchestrator.plan import RunRequest, RunResult
from reflection import stats
from reflection.events import CONTEXT_CHARS, MAP_ENTRIES, TraceEvent
from reflection.stream import decode
from reflection.warehouse import MIGRATIONS, TABLE, Warehouse, open_warehouse
from tests.helpers.requests import run_request
from tests.helpers.stack import RunningStack
from tests.reflection.test_stats import known_events, warehouse
from tests.reflection.test_tracing import EXPECTED, FLOW

__all__ = ["warehouse"]  # the fixture

pytestmark = pytest.mark.timeout(240)

LABELS = {
    "r1": {"experiment": "e1", "arm": "baseline"},
    "r2": {"experiment": "e1", "arm": "it's b"},  # a quote: values are bound, never pasted
    "r3": {"experiment": "e1", "shadow": "true"},
}


def labelled_events() -> list[TraceEvent]:
    """The known events of test_stats, runs r1-r3 labelled; m1 and old have none."""
    return [
        event.model_copy(update={"labels": LABELS.get(event.run_id, {})})
        for event in known_events()
    ]


def test_labels_are_cut_like_context():
    long = "x" * (CONTEXT_CHARS + 5)
    event = labelled_events()[0].model_copy()
    cut = TraceEvent.model_validate(
        {**event.model_dump(), "labels": {long: long, **{f"k{i}": "v" for i in range(70)}}}
    )
    assert len(cut.labels) == MAP_ENTRIES
    assert cut.labels["x" * CONTEXT_CHARS] == "x" * CONTEXT_CHARS


def runs_counted(warehouse: Warehouse, **scope) -> dict[str, int]:
    rows = warehouse.query(*stats.workflow_stats(3600, **scope)).records()
    return {r["workflow_id"]: r["runs"] for r in rows}


def test_stats_filter_by_label_and_leave_shadow_runs_out(warehouse: Warehouse):
    warehouse.insert(labelled_events())
    assert runs_counted(warehouse) == {"shop": 2, "mail": 1}  # r3 is a shadow run
    assert runs_counted(warehouse, include_shadow=True) == {"shop": 3, "mail": 1}
    assert runs_counted(warehouse, labels={"shadow": "true"}) == {"shop": 1}
    assert runs_counted(warehouse, labels={"experiment": "e1"}) == {"shop": 2}
    both = {"experiment": "e1", "arm": "it's b"}
    assert runs_counted(warehouse, labels=both) == {"shop": 1}  # every label must match
    assert runs_counted(warehouse, labels={"experiment": "e1", "arm": "nope"}) == {}
    assert runs_counted(warehouse, labels={"experiment": "e1"}, include_shadow=True) == {"shop": 3}

    nodes = warehouse.query(*stats.node_stats(3600, labels={"arm": "it's b"})).records()
    assert sum(r["count"] for r in nodes) == sum(
        1 for e in labelled_events() if e.run_id == "r2" and e.status != "skipped"
    )
    failing = warehouse.query(*stats.failing_steps(3600, labels={"shadow": "true"})).records()
    assert [(r["step_id"], r["failures"]) for r in failing] == [("fetch", 1)]

    sql, params = stats.node_stats(3600, labels=both)
    assert "it's b" not in sql and "experiment" not in sql and "it's b" in params.values()


def test_rows_from_before_the_labels_column_have_none(tmp_path: Path):
    with open_warehouse(Settings(home=tmp_path)) as warehouse:
        warehouse.migrate(MIGRATIONS[:1])
        event = known_events()[0]
        old_columns = ["run_id", "step_id", "node", "node_version", "status", "start", "end"]
        warehouse._client.insert(
            TABLE, [[getattr(event, c) for c in old_columns]], column_names=old_columns
        )
        assert [m.version for m in warehouse.migrate()] == [m.version for m in MIGRATIONS[1:]]
        [row] = warehouse.query("SELECT run_id, labels FROM traces").records()
        assert row == {"run_id": event.run_id, "labels": {}}
        assert runs_counted(warehouse) == {"": 1}  # counted: no label says shadow
        # An event as a publisher older than the column sends it (no `labels` key).
        wire = {k: v for k, v in known_events()[1].__dict__.items() if k != "labels"}
        warehouse.insert([wire])
        found = warehouse.query(
            "SELECT labels FROM traces WHERE step_id = {s:String} AND attempt = 2",
            {"s": wire["step_id"]},
        ).rows
        assert found == [[{}]]


def test_the_sink_reads_an_event_from_an_older_publisher():
    line = json.loads(known_events()[0].model_dump_json())
    del line["labels"]  # as a worker of the release before publishes it
    rows, problems = decode(json.dumps(line).encode())
    assert problems == [] and len(rows) == 1


def run_labelled(
    stack: RunningStack, text: str, labels: dict[str, str], inputs: dict | None = None,
    shard_items: int | None = None,
) -> RunResult:  # fmt: skip
    def change(request: RunRequest) -> None:
        request.run.labels = dict(labels)
        if shard_items is not None:
            assert request.limits is not None
            request.limits.fanout_shard_items = shard_items

    _, result = asyncio.run(run_request(stack, text, inputs, change, timeout=120))
    return result


def test_every_event_of_a_run_carries_its_labels(stack: RunningStack, tmp_path: Path):
    labels = {"experiment": f"x-{uuid.uuid4().hex[:8]}", "arm": "candidate"}
    # The fan-out of 3 items runs in shards of 2 (child workflows).
    text = FLOW.replace("id: traced", f"id: labelled-{uuid.uuid4().hex[:8]}")
    result = run_labelled(stack, text, labels, {"dir": str(tmp_path)}, shard_items=2)
    assert result.status == "completed", result.error
    events = stack.traces(result.run_id, len(EXPECTED))
    assert {(e["step_id"], e["item"], e["attempt"]) for e in events} == EXPECTED
    assert all(e["labels"] == labels for e in events), [
        (e["step_id"], e["labels"]) for e in events if e["labels"] != labels
    ]
    kinds = {e["step_id"]: e for e in events}
    assert kinds["never"]["status"] == "skipped" and kinds["pick"]["replica"] == "workflow"
    assert kinds["hit"]["cache_hit"] is True

    sql = (
        "SELECT labels['experiment'] AS experiment, labels['arm'] AS arm, count() AS n"
        " FROM traces WHERE run_id = {run:String} GROUP BY experiment, arm"
    )
    done = stack.cli("sql", sql, "--param", f"run={result.run_id}", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"experiment": labels["experiment"], "arm": "candidate", "n": len(EXPECTED)}
    ]
    by_param = stack.cli(
        "sql",
        "SELECT count() AS n FROM traces WHERE labels[{k:String}] = {v:String}",
        "--param", "k=experiment", "--param", f"v={labels['experiment']}", "--json",
    )  # fmt: skip
    assert json.loads(by_param.stdout) == [{"n": len(EXPECTED)}]

    shown = stack.cli("runs", "show", result.run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"labels: arm=candidate experiment={labels['experiment']}" in shown.stdout


ONE_STEP = """
id: {id}
steps:
  - id: only
    node: core.transform@1
    with: {{value: 1}}
"""


@pytest.fixture(scope="module")
def experiment(stack: RunningStack) -> tuple[str, str]:
    """A workflow run three times: unlabelled, in experiment X's arm a, and as a shadow run
    of experiment X. Returns (workflow id, experiment name)."""
    flow, name = f"exp-{uuid.uuid4().hex[:8]}", f"x-{uuid.uuid4().hex[:8]}"
    text = ONE_STEP.format(id=flow)
    for labels in ({}, {"experiment": name, "arm": "a"}, {"experiment": name, "shadow": "true"}):
        result = run_labelled(stack, text, labels)
        assert result.status == "completed", result.error
        stack.traces(result.run_id, 1)
    return flow, name


def cli_runs(stack: RunningStack, flow: str, *args: str) -> int:
    done = stack.cli("stats", "--workflow", flow, "--json", *args)
    assert done.returncode == 0, done.stderr
    flows = json.loads(done.stdout)["workflows"]
    return sum(f["runs"] for f in flows if f["workflow_id"] == flow)


def test_reflux_stats_by_label(stack: RunningStack, experiment: tuple[str, str]):
    flow, name = experiment
    assert cli_runs(stack, flow) == 2  # the shadow run is left out
    assert cli_runs(stack, flow, "--include-shadow") == 3
    assert cli_runs(stack, flow, "--label", "shadow=true") == 1
    assert cli_runs(stack, flow, "--label", f"experiment={name}") == 1
    assert cli_runs(stack, flow, "--label", f"experiment={name}", "--include-shadow") == 2
    assert cli_runs(stack, flow, "--label", f"experiment={name}", "--label", "arm=a") == 1
    assert cli_runs(stack, flow, "--label", "arm=b") == 0
    bad = stack.cli("stats", "--label", "novalue")
    assert bad.returncode == 2 and "--label: 'novalue' is not KEY=VALUE" in bad.stderr


def test_the_api_stats_by_label(stack: RunningStack, experiment: tuple[str, str]):
    flow, name = experiment
    made = stack.cli("tokens", "create", "--role", "viewer", "--name", "test-labels")
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}

    def runs(**params) -> int:
        with httpx.Client(base_url=stack.api_url, timeout=30) as api:
            got = api.get("/stats", params={"workflow": flow, **params}, headers=headers)
        assert got.status_code == 200, got.text
        return sum(f["runs"] for f in got.json()["workflows"])

    assert runs() == 2
    assert runs(include_shadow="true") == 3
    assert runs(label=[f"experiment:{name}"]) == 1
    assert runs(label=[f"experiment:{name}"], include_shadow="true") == 2
    assert runs(label=[f"experiment:{name}", "shadow:true"]) == 1
    assert runs(label=[f"experiment:{name}", "arm:b"]) == 0
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        bad = api.get("/stats", params={"label": "novalue"}, headers=headers)
    assert bad.status_code == 422 and "is not KEY:VALUE" in bad.text
