"""Templates: native types, errors in the author's words, the sandbox, and references."""

from __future__ import annotations

import pytest

from infra.errors import ExpressionError
from orchestrator.expressions import (
    compile_template,
    is_truthy,
    iter_templates,
    references,
    render,
    secret_placeholder,
)

CONTEXT = {
    "inputs": {"order_id": 42, "items": [1, 2, 3], "name": "ada"},
    "steps": {
        "fetch": {
            "output": {"json": {"amount": 100, "items": ["x"], "none": None}},
            "status": "completed",
        },
        "my-step": {"output": 5, "status": "failed"},
    },
    "run": {"id": "r-1", "workflow": "w", "version": 3},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.order_id }}", 42),
        ("  {{ inputs.items }}\n", [1, 2, 3]),
        ("{{- inputs.items -}}", [1, 2, 3]),
        ("{{ steps.fetch.output.json.amount * 1.2 }}", 120.0),
        ("{{ steps.fetch.output }}", {"json": {"amount": 100, "items": ["x"], "none": None}}),
        ("{{ steps.fetch.output.json.none }}", None),
        ("{{ inputs.order_id > 10 }}", True),
        ("{{ inputs.items | map('string') }}", ["1", "2", "3"]),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ steps['my-step'].output + 1 }}", 6),
        ("{{ run.id }}", "r-1"),
    ],
)
def test_single_expression_keeps_native_type(template, expected):
    assert render(template, CONTEXT) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("order {{ inputs.order_id }}", "order 42"),
        ("{{ inputs.order_id }}{{ inputs.order_id }}", "4242"),
        ("{% if inputs.order_id > 1 %}big{% endif %}", "big"),
        ("{{ inputs.items | tojson }}", "[1, 2, 3]"),
        ("no template {here}", "no template {here}"),
    ],
)
def test_mixed_strings_render_to_text(template, expected):
    result = render(template, CONTEXT)
    assert result == expected
    assert type(result) is str


def test_dict_key_wins_over_dict_method():
    # JSON with an "items" field is common; `.items` must not give dict.items.
    assert render("{{ steps.fetch.output.json.items }}", CONTEXT) == ["x"]


def test_render_walks_containers_and_leaves_other_values_alone():
    value = {"url": "/o/{{ inputs.order_id }}", "list": ["{{ inputs.name }}", 3, None], "n": 1.5}
    assert render(value, CONTEXT) == {"url": "/o/42", "list": ["ada", 3, None], "n": 1.5}
    assert render(7, CONTEXT) == 7
    assert render(True, CONTEXT) is True


def test_item_and_index_come_from_the_context():
    context = {**CONTEXT, "item": {"sku": "a"}, "index": 2}
    assert render({"sku": "{{ item.sku }}", "i": "{{ index }}"}, context) == {"sku": "a", "i": 2}


def test_secret_renders_to_a_placeholder():
    assert render("Bearer {{ secret('TOKEN') }}", CONTEXT) == "Bearer " + secret_placeholder(
        "TOKEN"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ steps.fetch.outptu }}",
            "'steps.fetch' has no attribute 'outptu'; did you mean 'output'?",
        ),
        (
            "x {{ steps.fetch.output.json.amont }}",
            "'steps.fetch.output.json' has no attribute 'amont'",
        ),
        ("{{ stps.fetch }}", "'stps' is undefined; did you mean 'steps'?"),
        ("{{ inputs.nope }}", "'inputs' has no attribute 'nope'"),
        ("{{ steps.fetch.output.json.items[3] }}", "has no item 3 (it has 1)"),
        ("{{ steps.fetch.output.json.none.x }}", "'steps.fetch.output.json.none' is null"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ inputs.name + 1 }}", "TypeError"),
    ],
)
def test_render_errors_name_the_path(template, message):
    with pytest.raises(ExpressionError) as info:
        render(template, CONTEXT)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs.__class__ }}",
        "{{ inputs.items.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ inputs.items.append(4) }}",
        "{{ 'a' * 100000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ range(10 ** 9) | list }}",
    ],
)
def test_sandbox_refuses_escapes_and_blowups(template):
    with pytest.raises(ExpressionError):
        render(template, CONTEXT)
    assert CONTEXT["inputs"]["items"] == [1, 2, 3]


@pytest.mark.parametrize(
    "template",
    ["{{ a", "{{ x | nofilter }}", "{% if %}", "{{ inputs.items | random }}", "{{ lipsum() }}"],
)
def test_compile_errors_are_expression_errors(template):
    with pytest.raises(ExpressionError):
        compile_template({"a": [template]}).render(CONTEXT)


def test_syntax_error_message_includes_jinja_message():
    with pytest.raises(ExpressionError, match="template syntax error: No filter named 'nofilter'"):
        compile_template("{{ x | nofilter }}")


def test_compiled_template_renders_many_times():
    compiled = compile_template({"v": "{{ item * 2 }}"})
    assert [compiled.render({"item": i})["v"] for i in range(3)] == [0, 2, 4]
    assert compiled.references.item


def test_references_read_the_ast():
    refs = references(
        {
            "a": "{{ inputs.a + inputs['b'] }} {{ steps.fetch.output.json.x }}",
            "b": ["{{ steps['my-step'].status }} {{ steps.bare }} {{ item }}"],
            "c": "{% for index in inputs.items %}{{ index }}{% endfor %} {{ secret('K') }}",
        }
    )
    assert refs.inputs == {"a", "b", "items"}
    assert refs.steps == {
        "fetch": {"output"},
        "my-step": {"status"},
        "bare": {"output"},
    }
    assert refs.item and not refs.index, "a loop variable named index is not the index name"
    assert refs.secrets == {"K"}
    assert not refs.dynamic_steps and not refs.dynamic_inputs
    assert refs.unknown_names == frozenset()


def test_references_flag_computed_ids_and_unknown_names():
    refs = references("{{ steps[name].output }} {{ inputs[key] }} {{ foo.bar }} {{ range(3) }}")
    assert refs.dynamic_steps and refs.dynamic_inputs
    assert refs.unknown_names == {"name", "key", "foo"}
    assert references("{{ steps }}").dynamic_steps


def test_references_ignore_plain_strings():
    refs = references(["plain", 3, {"k": "inputs.x"}])
    assert refs.inputs == frozenset() and refs.steps == {}


def test_iter_templates_gives_paths():
    value = {"a": "x", "b": ["{{ y }}", {"c": "{% if z %}{% endif %}"}]}
    assert list(iter_templates(value)) == [
        (("b", 0), "{{ y }}"),
        (("b", 1, "c"), "{% if z %}{% endif %}"),
    ]


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (True, True),
        (False, False),
        (None, False),
        (0, False),
        (1, True),
        ([], False),
        ([0], True),
        ({}, False),
        ("", False),
        ("false", False),
        ("False", False),
        (" 0 ", False),
        ("none", False),
        ("yes", True),
        ("true", True),
        ("anything", True),
    ],
)
def test_is_truthy(value, truthy):
    assert is_truthy(value) is truthy


def test_rendered_if_is_truthy():
    assert is_truthy(render("{{ inputs.order_id > 100 }}", CONTEXT)) is False
    assert is_truthy(render("big={{ inputs.order_id > 100 }}", CONTEXT)) is True
    assert is_truthy(render("{{ inputs.order_id > 100 }}  ", CONTEXT)) is False
