"""Overrides of step params (rerun, redrive): the workflow they make is validated as a push
is, and a re-drive runs again every step an override changes the inputs of."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import SpecError
from orchestrator.plan import StepResult
from orchestrator.runs import apply_overrides, redrive_of
from orchestrator.validate import parse_spec, validate_file
from registry.versions import Catalog

VALID = sorted((Path(__file__).parent / "valid").glob("*.yaml"))
AVAILABLE = Catalog.of({"http.request": ["1.0.0", "1.2.0"], "core.transform": ["1.0.0"]})

CHAIN = parse_spec(
    """
id: chain
inputs:
  n: {type: integer, default: 1}
steps:
  - {id: a, node: core.transform@1, with: {value: "{{ inputs.n }}", keep: yes}}
  - {id: b, node: core.transform@1, with: {value: "{{ steps.a.output.value }}"}}
  - {id: c, node: core.transform@1, with: {value: "{{ steps.b.output.value }}"}}
  - {id: d, node: core.transform@1, with: {value: "{{ steps.c.output.value }}"}}
  - {id: e, node: core.transform@1, with: {value: 5}}
""",
    catalog=AVAILABLE,
)


def problems(raised: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(p) for p in raised.value.problems]


def test_an_override_sets_params_and_leaves_the_spec_it_came_from_alone():
    changed = apply_overrides(CHAIN, {"a": {"value": 7}, "e": {"extra": "{{ inputs.n }}"}},
                              AVAILABLE, "chain@1")  # fmt: skip
    assert changed.step("a").with_ == {"value": 7, "keep": True}
    assert changed.step("e").with_ == {"value": 5, "extra": "{{ inputs.n }}"}
    assert CHAIN.step("a").with_ == {"value": "{{ inputs.n }}", "keep": True}
    assert "extra" not in CHAIN.step("e").with_


def test_an_override_making_a_cycle_is_refused():
    with pytest.raises(SpecError) as raised:
        apply_overrides(CHAIN, {"a": {"value": "{{ steps.d.output.value }}"}}, AVAILABLE, "chain@1")
    shown = problems(raised)
    assert len(shown) == 1
    assert shown[0] == ("chain@1 with overrides: steps[0].with.value: cycle: a -> d -> c -> b -> a")


def test_an_override_reading_what_does_not_exist_is_refused():
    with pytest.raises(SpecError) as raised:
        apply_overrides(CHAIN, {"b": {"value": "{{ inputs.m }}", "x": "{{ steps.zz.output }}"}},
                        AVAILABLE, "chain@1")  # fmt: skip
    shown = problems(raised)
    assert any("undefined input 'm'" in p for p in shown), shown
    assert any("unknown step 'zz'" in p for p in shown), shown
    assert all(p.startswith("chain@1 with overrides: steps[1].with.") for p in shown), shown


def test_an_override_of_an_unknown_step_is_refused():
    with pytest.raises(SpecError) as raised:
        apply_overrides(CHAIN, {"nope": {"value": 1}}, AVAILABLE, "chain@1")
    assert problems(raised) == ["overrides.nope: no step 'nope' in chain@1"]


def test_an_override_that_is_not_a_mapping_is_refused():
    with pytest.raises(SpecError) as raised:
        apply_overrides(CHAIN, {"a": ["value", 1]}, AVAILABLE, "chain@1")  # type: ignore[dict-item]
    assert problems(raised) == ["overrides.a: expected a mapping of params, got a list"]


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_no_overrides_give_the_same_workflow(path):
    spec, found = validate_file(path)  # node checks are validate's, tested there
    assert spec is not None, found
    assert apply_overrides(spec, {}) == spec


def test_a_redrive_runs_again_what_an_overridden_step_feeds():
    steps = {
        "a": StepResult(status="completed", output={"value": 1}),
        "b": StepResult(status="completed", output={"value": 1}),
        "c": StepResult(status="failed"),
        "d": StepResult(status="cancelled"),
        "e": StepResult(status="completed", output={"value": 5}),
    }
    assert set(redrive_of("r1", steps, CHAIN, {}).done) == {"a", "b", "e"}
    again = redrive_of("r1", steps, CHAIN, {"a": {"value": 2}})
    assert again.run_id == "r1"
    assert set(again.done) == {"e"}  # b reads a: its output would be stale
