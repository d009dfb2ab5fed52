"""`validate`: the invalid corpus (each file says where its problem is), valid examples, and
the helpers the engine uses (`dependencies`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.errors import SpecError
from orchestrator.validate import (
    dependencies,
    parse_spec,
    step_references,
    validate_file,
    validate_text,
)
from registry.versions import Catalog

HERE = Path(__file__).parent
INVALID = sorted((HERE / "invalid").glob("*.yaml"))
VALID = sorted((HERE / "valid").glob("*.yaml"))
HTTP_SECRETS = {"headers": "value", "auth": "value", "params": "value", "url": "query"}
AVAILABLE = Catalog.from_manifests(
    [
        {"name": "http.request", "version": v, "secret_params": HTTP_SECRETS}
        for v in ("1.0.0", "1.2.0")
    ]
    + [{"name": "core.transform", "version": "1.0.0"}]
)
EXPECT = re.compile(r"#\s*expect:\s*(\d+):(\d+):\s*(.+)")


def test_corpus_is_big_enough():
    assert len(INVALID) >= 18
    assert len(VALID) >= 3


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_corpus(path):
    first_line = path.read_text().splitlines()[0] if path.read_text() else ""
    match = EXPECT.fullmatch(first_line.strip())
    assert match, f"{path.name}: first line must be '# expect: LINE:COL: fragment'"
    line, col, fragment = int(match[1]), int(match[2]), match[3].strip()
    spec, problems = validate_file(path, AVAILABLE)
    assert spec is None
    shown = "\n".join(str(p) for p in problems)
    assert any(p.line == line and p.col == col and fragment in str(p) for p in problems), (
        f"expected {line}:{col}: {fragment!r} among:\n{shown}"
    )
    for problem in problems:
        assert str(problem).startswith(f"{path}:{problem.line}:{problem.col}: ")


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_examples(path):
    spec, problems = validate_file(path, AVAILABLE)
    assert [str(p) for p in problems] == []
    assert spec is not None and spec.steps


def test_node_checks_are_skipped_without_a_catalog():
    text = "id: w\nsteps:\n  - id: a\n    node: nothing.here@9\n"
    spec, problems = validate_text(text, "w.yaml", None)
    assert problems == [] and spec is not None
    _, problems = validate_text(text, "w.yaml", AVAILABLE)
    assert "unknown node 'nothing.here'" in str(problems[0])


def test_problem_format_and_order():
    text = (
        "id: w\n"
        "steps:\n"
        "  - id: b\n"
        "    node: htp.request@1\n"
        "    neds: [a]\n"
        "  - id: a\n"
        "    node: core.transform@3\n"
    )
    _, problems = validate_text(text, "flows/w.yaml", AVAILABLE)
    assert [str(p) for p in problems] == [
        "flows/w.yaml:4:11: steps[0].node: unknown node 'htp.request'; "
        "did you mean 'http.request'?",
        "flows/w.yaml:5:5: steps[0].neds: unknown key 'neds'; did you mean 'needs'?",
        "flows/w.yaml:7:11: steps[1].node: no version of core.transform matches "
        "'core.transform@3' (known: 1.0.0)",
    ]


def test_many_problems_are_collected_in_one_pass():
    text = """\
id: Bad Id
inputs:
  order_id: {type: integer, required: true}
steps:
  - id: fetch
    node: http.request@1
    timeout: 3x
    with:
      url: "{{ inputs.ordr_id }}"
  - id: fetch
    node: core.transform@1
    needs: [fetc]
    concurrency: 2
"""
    _, problems = validate_text(text, "w.yaml", AVAILABLE)
    messages = [p.message for p in problems]
    assert len(problems) == 6, messages
    assert any("bad id 'Bad Id'" in m for m in messages)
    assert any("bad duration '3x'" in m for m in messages)
    assert any("undefined input 'ordr_id'; did you mean 'order_id'?" in m for m in messages)
    assert any("duplicate step id 'fetch'" in m for m in messages)
    assert any("needs unknown step 'fetc'" in m for m in messages)
    assert any("concurrency only applies" in m for m in messages)


def test_missing_key_is_not_repeated_when_an_unknown_key_suggests_it():
    _, problems = validate_text("id: w\nstep:\n  - {id: a, node: n}\n", "w.yaml")
    assert [p.message for p in problems] == ["unknown key 'step'; did you mean 'steps'?"]


def test_required_input_with_default_is_a_problem():
    text = "id: w\ninputs:\n  x: {required: true, default: 1}\nsteps:\n  - {id: a, node: n}\n"
    _, problems = validate_text(text, "w.yaml")
    assert "required input can't have a default" in problems[0].message
    assert (problems[0].line, problems[0].col) == (3, 32)


def test_step_reading_its_own_result():
    text = 'id: w\nsteps:\n  - id: a\n    node: n\n    with: {x: "{{ steps.a.output }}"}\n'
    _, problems = validate_text(text, "w.yaml")
    assert [p.message for p in problems] == ["step 'a' reads its own result"]


def test_computed_step_ids_are_refused_in_steps_but_fine_in_outputs():
    text = (
        "id: w\ninputs: {which: {type: string}}\nsteps:\n  - id: a\n    node: n\n"
        '    with: {x: "{{ steps[inputs.which].output }}"}\n'
        'outputs:\n  everything: "{{ steps }}"\n'
    )
    _, problems = validate_text(text, "w.yaml")
    assert len(problems) == 1
    assert problems[0].path == "steps[0].with.x"
    assert "literal id" in problems[0].message


def test_outputs_may_read_any_step_but_not_item():
    text = (
        "id: w\nsteps:\n  - {id: a, node: n}\n  - {id: b, node: n}\n"
        'outputs:\n  both: "{{ [steps.a.output, steps.b.status] }}"\n  bad: "{{ item }}"\n'
    )
    _, problems = validate_text(text, "w.yaml")
    assert [str(p) for p in problems] == [
        "w.yaml:7:8: outputs.bad: 'item' is only defined inside a step with for_each"
    ]


def test_unreadable_file_is_a_problem(tmp_path):
    _, problems = validate_file(tmp_path / "nope.yaml")
    assert "cannot read file" in str(problems[0])
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"id: \xff\xfe\n")
    _, problems = validate_file(binary)
    assert "not UTF-8" in str(problems[0])


def test_parse_spec_raises_with_every_problem():
    with pytest.raises(SpecError) as info:
        parse_spec("id: w\nsteps: []\n", "w.yaml")
    assert "w.yaml:2:8: steps: a workflow needs at least one step" in str(info.value)
    spec = parse_spec((HERE / "valid" / "minimal.yaml").read_text())
    assert spec.id == "hello"


def test_dependencies_join_needs_and_template_reads():
    spec = parse_spec((HERE / "valid" / "branching.yaml").read_text())
    assert dependencies(spec) == {
        "route": set(),
        "cool-off": {"route"},
        "ask": {"cool-off"},
        "approve": {"route"},
    }
    refs = step_references(spec.step("ask"))
    assert refs.steps == {"cool-off": {"status"}}
    assert refs.item and refs.index and refs.run
    assert refs.secrets == {"HOOK_TOKEN"}


def test_meta_steps_count_as_served():
    text = "id: w\nsteps:\n  - id: wait\n    node: core.delay@1\n    with: {duration: 1s}\n"
    spec, problems = validate_text(text, "w.yaml", AVAILABLE)
    assert problems == [] and spec is not None
    _, problems = validate_text(text.replace("@1", "@2"), "w.yaml", AVAILABLE)
    assert "core.delay@2" in problems[0].message
