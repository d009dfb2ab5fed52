"""Durations, positioned YAML loading, and the `Spec` models."""

from __future__ import annotations

import pydantic
import pytest

from infra.durations import format_duration, parse_duration
from infra.errors import SpecError
from orchestrator.spec import InputSpec, RetrySpec, Spec, StepSpec
from orchestrator.yamlsource import Problem, format_path, load_source

# ------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m 30s", 90.0),
        ("1.5s", 1.5),
        ("2h0m1s500ms", 7201.5),
        ("45", 45.0),
        (45, 45.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["3x", "", "s", "1h-30m", "ten minutes", "1s1s", "-5", "1 h 2"])
def test_parse_duration_rejects_with_a_hint(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_parse_duration_message_says_what_to_write():
    with pytest.raises(ValueError) as info:
        parse_duration("3x")
    assert str(info.value) == "bad duration '3x': use e.g. 500ms, 30s, 10m, 1h"


@pytest.mark.parametrize("value", [True, None, [1], -1, float("inf"), float("nan")])
def test_parse_duration_rejects_non_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("seconds", [0, 0.5, 1, 59, 90, 3600, 5400, 86400 + 61, 1.25])
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_is_short():
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.5) == "500ms"


# ----------------------------------------------------------------------------- yamlsource


def test_load_source_matches_safe_load_and_records_positions():
    text = "id: a\nsteps:\n  - id: fetch\n    node: http.request@1\n"
    source = load_source(text, "f.yaml")
    assert source.problems == []
    assert source.data == {"id": "a", "steps": [{"id": "fetch", "node": "http.request@1"}]}
    assert source.values[("id",)] == (1, 5)
    assert source.values[("steps", 0)] == (3, 5)
    assert source.values[("steps", 0, "node")] == (4, 11)
    assert source.keys[("steps", 0, "node")] == (4, 5)


def test_locate_falls_back_to_the_nearest_parent():
    source = load_source("a:\n  b: 1\n", "f.yaml")
    assert source.locate(("a", "missing", 3)) == (2, 3)
    assert source.locate(("nowhere",)) == (1, 1)


def test_duplicate_keys_are_problems_at_the_second_key():
    source = load_source("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert [str(p) for p in source.problems] == [
        "f.yaml:3:1: a: duplicate key 'a' (first at line 1)"
    ]


def test_syntax_error_is_a_problem_at_the_mark():
    source = load_source("a: b: c\n", "f.yaml")
    assert not source.syntax_ok
    (problem,) = source.problems
    assert (problem.line, problem.col) == (1, 5)
    assert "mapping values are not allowed" in problem.message


def test_merge_keys_are_not_duplicates():
    text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\n"
    source = load_source(text, "f.yaml")
    assert source.problems == []
    assert source.data["use"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x: &a [*a]\n", "alias refers to a node that contains it"),
        ("a: 1\n---\nb: 2\n", "one YAML document"),
        ("a: \x07\n", "unacceptable character"),
        ("a: !!python/object:os.system x\n", "could not determine a constructor"),
    ],
)
def test_unusable_yaml_is_reported_not_raised(text, fragment):
    source = load_source(text, "f.yaml")
    assert not source.syntax_ok
    assert fragment in source.problems[0].message


def test_alias_bombs_are_refused():
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for n in range(8):
        prev, cur = chr(ord("a") + n), chr(ord("b") + n)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    source = load_source("\n".join(lines), "f.yaml")
    assert "too many nodes" in source.problems[0].message


def test_problem_str_and_paths():
    assert format_path(("steps", 2, "node")) == "steps[2].node"
    assert format_path(("inputs", "order_id", "type")) == "inputs.order_id.type"
    assert format_path(()) == "<root>"
    problem = Problem("flows/a.yaml", 12, 5, "steps[2].node", "unknown node 'htp.request'")
    assert str(problem) == "flows/a.yaml:12:5: steps[2].node: unknown node 'htp.request'"
    assert str(Problem("", 0, 0, "inputs.x", "required input is missing")) == (
        "inputs.x: required input is missing"
    )


# ---------------------------------------------------------------------------------- spec


def test_step_defaults_and_aliases():
    step = StepSpec.model_validate({"id": "fetch", "node": "http.request@1.2", "if": "{{ x }}"})
    assert step.if_ == "{{ x }}"
    assert step.with_ == {}
    assert step.timeout is None and step.local is None  # the node and the plan decide
    assert step.retry == RetrySpec()
    assert step.node_name == "http.request"
    assert step.node_version_spec == "1.2"
    assert StepSpec(id="a", node="core.transform").node_version_spec is None
    dumped = step.model_dump()
    assert "if" in dumped and "with" in dumped


def test_step_parses_durations_and_shorthands():
    step = StepSpec.model_validate(
        {
            "id": "a",
            "node": "n",
            "timeout": "1h30m",
            "needs": "b",
            "with": None,
            "retry": {"initial_interval": "500ms", "max_interval": 10},
            "cache": {"ttl": "10m"},
        }
    )
    assert step.timeout == 5400.0
    assert step.needs == ["b"]
    assert step.with_ == {}
    assert step.retry.initial_interval == 0.5
    assert step.retry.max_interval == 10.0
    assert step.cache is not None and step.cache.ttl == 600.0


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("id", "Fetch", "bad step id"),
        ("id", "a.b", "no dots"),
        ("node", "http.request@v1", "malformed node reference"),
        ("node", "http.request@1.2.3.4", "malformed node reference"),
        ("timeout", "3x", "bad duration '3x'"),
        ("if", [1], "template string or a boolean"),
        ("for_each", "abc", "expected a list or a template"),
        ("concurrency", 0, "greater than or equal to 1"),
        ("bogus", 1, "Extra inputs"),
    ],
)
def test_step_rejects(field, value, fragment):
    data = {"id": "a", "node": "core.transform", field: value}
    with pytest.raises(pydantic.ValidationError, match=fragment):
        StepSpec.model_validate(data)


def test_yaml_must_use_the_alias_not_the_python_name():
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        StepSpec.model_validate({"id": "a", "node": "n", "if_": True}, by_name=False)


def test_spec_needs_steps_and_a_good_id():
    with pytest.raises(pydantic.ValidationError, match="at least 1"):
        Spec.model_validate({"id": "a", "steps": []})
    with pytest.raises(pydantic.ValidationError, match="bad id"):
        Spec.model_validate({"id": "Order Flow", "steps": [{"id": "a", "node": "n"}]})
    spec = Spec.model_validate({"id": "orders.v2", "steps": [{"id": "a", "node": "n"}]})
    assert spec.namespace == "default"
    assert spec.step("a").node == "n"


def _spec_with_inputs(inputs):
    return Spec.model_validate({"id": "w", "inputs": inputs, "steps": [{"id": "a", "node": "n"}]})


def test_bind_inputs_applies_defaults_and_fills_optional_inputs():
    spec = _spec_with_inputs(
        {
            "order_id": {"type": "integer", "required": True},
            "items": {"type": "array", "default": [1]},
            "note": {"type": "string"},
        }
    )
    bound = spec.bind_inputs({"order_id": 7})
    assert bound == {"order_id": 7, "items": [1], "note": None}
    bound["items"].append(2)
    assert spec.inputs["items"].default == [1], "defaults must be copied, not shared"


def test_bind_inputs_reports_every_problem():
    spec = _spec_with_inputs(
        {
            "order_id": {"type": "integer", "required": True},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
        }
    )
    with pytest.raises(SpecError) as info:
        spec.bind_inputs({"ratio": "high", "flag": 1, "ordr": 3})
    messages = [str(p) for p in info.value.problems]
    assert "inputs.ordr: unknown input 'ordr'; did you mean 'order_id'? (declared: " in messages[0]
    assert "inputs.order_id: required input is missing" in messages
    assert "inputs.ratio: expected a number, got string 'high'" in messages
    assert "inputs.flag: expected a boolean, got integer 1" in messages


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("string", "x", 1),
        ("integer", 3, 3.5),
        ("integer", -1, True),
        ("number", 2.5, "2.5"),
        ("number", 2, False),
        ("boolean", False, 0),
        ("array", [], {}),
        ("object", {}, []),
    ],
)
def test_input_types(kind, good, bad):
    spec = InputSpec(type=kind)
    assert spec.check(good) is None
    assert spec.check(bad) is not None
    assert InputSpec(type="any").check(bad) is None
