"""Mutations applied to YAML sources: only the changed lines differ (comments, order, quoting,
anchors and layout stay), and the edited text validates to the spec `mutations.apply` gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from infra import SpecError
from nodes import builtin_catalog
from orchestrator.mutations import apply_mutations as apply
from orchestrator.mutations import parse_mutations, parse_set
from orchestrator.validate import parse_spec, validate_text
from orchestrator.yamledit import diff_sources as diff
from orchestrator.yamledit import edit_source
from registry import Catalog

CATALOG = Catalog.from_manifests([n.manifest() for n in builtin_catalog().nodes()])
ROOT = Path(__file__).parents[2]
HELLO = (ROOT / "examples" / "hello.yaml").read_text()
VALID = Path(__file__).parent / "valid"
BRANCHING = (VALID / "branching.yaml").read_text()
ORDERS = (VALID / "order_enrichment.yaml").read_text()

# The other common layout: sequence dashes flush with their key, single quotes, no blank lines.
FLAT = """\
# flat layout
id: flat
steps:
- id: a
  node: core.transform@1
  with:
    value: 1   # one
- id: b
  node: core.transform@1
  # b reads a
  with: {value: '{{ steps.a.output.value }}'}
- {id: c, node: core.transform@1, with: {value: 3}}
outputs:
  b: '{{ steps.b.output.value }}'
"""


def edited(source: str, *mutations: dict) -> str:
    return edit_source(source, parse_mutations(list(mutations)))


def changes(old: str, new: str) -> list[str]:
    """The lines a diff of the two sources removes (-) and adds (+)."""
    lines = diff(old, new).splitlines()[2:]
    return [line for line in lines if line[:1] in "+-"]


def test_a_param_changed_and_one_added_change_only_their_lines():
    new = edited(HELLO, {"op": "update_params", "step": "greet",
                         "params": {"value": "Hi, {{ inputs.name }}!", "shout": True}})  # fmt: skip
    assert changes(HELLO, new) == [
        '-      value: "Hello, {{ inputs.name }}!"',
        '+      value: "Hi, {{ inputs.name }}!"',
        "+      shout: true",
    ]


def test_the_diff_has_two_lines_of_context_and_the_names():
    new = edited(HELLO, {"op": "set_policy", "step": "greet", "retry": {"max_attempts": 7},
                         "timeout": "10s"})  # fmt: skip
    assert diff(HELLO, new, "hello@1", "hello@2") == (
        "--- hello@1\n"
        "+++ hello@2\n"
        "@@ -12,4 +12,6 @@\n"
        "     with:\n"
        '       value: "Hello, {{ inputs.name }}!"\n'
        "+    timeout: 10s\n"
        "+    retry: {max_attempts: 7}\n"
        " \n"
        "   - id: total\n"
    )


def test_a_node_replaced_keeps_its_comment_and_every_other_comment():
    new = edited(HELLO, {"op": "replace_node", "step": "spread", "node": "code.python@1.0.0"})
    assert changes(HELLO, new) == [
        "-    node: code.python@1        # in the sandbox: no network, nothing of the host's files",
        "+    node: code.python@1.0.0    # in the sandbox: no network, nothing of the host's files",
    ]
    assert new.startswith("# A first workflow that needs no network")


def test_a_nested_param_removed_and_added():
    new = edited(HELLO, {"op": "update_params", "step": "summary",
                         "params": {"value": {"level": None, "note": "x y"}}})  # fmt: skip
    assert changes(HELLO, new) == [
        '-        level: "{{ steps.level.output.branch }}"',
        "+        note: x y",
    ]


def test_policy_on_a_step_with_a_flow_last_value_and_cache_removed():
    new = edited(HELLO, {"op": "set_policy", "step": "pause", "cache": {"ttl": "10m"}})
    assert changes(HELLO, new) == ["+    cache: {ttl: 10m}"]
    policy = {"retry": {"max_attempts": 7, "backoff": None}, "cache": None}
    new = edited(ORDERS, {"op": "set_policy", "step": "fetch", **policy})
    assert changes(ORDERS, new) == [
        "-    retry: {max_attempts: 5, initial_interval: 1s, backoff: 2.0, max_interval: 30s, "
        "non_retryable: [ValidationError]}",
        "-    cache: {ttl: 10m}",
        "+    retry: {max_attempts: 7, initial_interval: 1s, max_interval: 30s, "
        "non_retryable: [ValidationError]}",
    ]


def test_an_added_step_keeps_the_blank_lines_between_steps():
    step = {"id": "extra", "node": "core.transform@1",
            "with": {"value": "{{ steps.total.output.value }}"}}  # fmt: skip
    added = [
        "+",
        "+  - id: extra",
        "+    node: core.transform@1",
        '+    with: {value: "{{ steps.total.output.value }}"}',
    ]
    for after in ("total", "grade"):  # the gap hangs on the step before, or on the next one
        new = edited(HELLO, {"op": "add_step", "step": step, "after": after})
        assert changes(HELLO, new) == added
        assert new.index("  - id: extra") > new.index(f"  - id: {after}")
    new = edited(HELLO, {"op": "add_step", "step": step})
    assert changes(HELLO, new) == [*added[1:], "+"]
    assert new.index("  - id: extra") < new.index("outputs:")


def test_a_removed_step_takes_its_lines_and_one_blank_line():
    new = edited(
        HELLO,
        {"op": "remove_step", "step": "celebrate"},
        {"op": "update_params", "step": "summary", "params": {"value": {"celebrated": None}}},
    )
    assert changes(HELLO, new) == [
        "-  - id: celebrate",
        "-    node: core.transform@1",
        "-    if: \"{{ steps.level.output.branch == 'high' }}\"",
        "-    with:",
        '-      value: "Well done, {{ inputs.name }}"',
        "-",
        "-        celebrated: \"{{ steps.celebrate.status == 'completed' }}\"",
    ]
    for first_or_last in ("greet", "summary"):
        new = edited(HELLO, {"op": "remove_step", "step": first_or_last})
        gone = [line for line in changes(HELLO, new)]
        assert all(line.startswith("-") for line in gone) and gone[-1] == "-"
        assert "\n\n\n" not in new


def test_the_flat_layout_and_single_quotes_are_kept():
    new = edited(
        FLAT,
        {"op": "set_policy", "step": "a", "retry": {"max_attempts": 2}},
        {"op": "update_params", "step": "b", "params": {"x": "{{ inputs }}"}},
        {"op": "set_policy", "step": "c", "timeout": "1s"},
        {"op": "add_step", "step": {"id": "d", "node": "core.transform@1",
                                    "with": {"value": "{{ steps.c.output.value }}"}}, "after": "a"},
    )  # fmt: skip
    assert changes(FLAT, new) == [
        "+  retry: {max_attempts: 2}",
        "+- id: d",
        "+  node: core.transform@1",
        "+  with: {value: '{{ steps.c.output.value }}'}",
        "-  with: {value: '{{ steps.a.output.value }}'}",
        "-- {id: c, node: core.transform@1, with: {value: 3}}",
        "+  with: {value: '{{ steps.a.output.value }}', x: '{{ inputs }}'}",
        "+- {id: c, node: core.transform@1, with: {value: 3}, timeout: 1s}",
    ]


def test_removing_the_last_param_drops_with_and_the_comment_on_it():
    new = edited(FLAT, {"op": "update_params", "step": "a", "params": {"value": None}})
    assert changes(FLAT, new) == ["-  with:", "-    value: 1   # one"]


def test_changing_an_aliased_value_leaves_the_anchor_for_its_other_users():
    new = edited(BRANCHING, {"op": "set_policy", "step": "approve", "retry": {"max_attempts": 5}})
    assert changes(BRANCHING, new) == [
        "-    retry: *quick",
        "+    retry: {max_attempts: 5, initial_interval: 500ms}",
    ]
    spec = parse_spec(new)
    assert spec.step("ask").retry.max_attempts == 2
    new = edited(BRANCHING, {"op": "set_policy", "step": "ask", "retry": {"max_attempts": 5}})
    spec = parse_spec(new)
    assert (spec.step("ask").retry.max_attempts, spec.step("approve").retry.max_attempts) == (5, 2)
    new = edited(BRANCHING, {"op": "remove_step", "step": "approve"})
    assert all(line.startswith("-") for line in changes(BRANCHING, new))  # &quick stays


def test_a_multi_line_param_is_a_literal_block():
    new = edited(HELLO, {"op": "update_params", "step": "spread",
                         "params": {"code": "def run(inputs):\n    return 1\n"}})  # fmt: skip
    assert "      code: |\n        def run(inputs):\n            return 1\n" in new
    assert parse_spec(new).step("spread").with_["code"] == "def run(inputs):\n    return 1\n"


def test_a_mutation_that_cannot_apply_is_refused():
    with pytest.raises(SpecError) as raised:
        edited(HELLO, {"op": "remove_step", "step": "nope"})
    assert str(raised.value).startswith("<source> with mutations: mutation[0].step: no step 'nope'")
    with pytest.raises(SpecError):
        edit_source("id: [", [parse_set("a.timeout=1s")])
    with pytest.raises(SpecError):
        edit_source("- just\n- a list\n", [parse_set("a.timeout=1s")])


# The caller contract: the text stored as the new version validates to what `apply` gives.
CASES = [
    (HELLO, [{"op": "update_params", "step": "greet", "params": {"value": "Hi", "n": {"a": 1}}},
             {"op": "set_policy", "step": "total", "retry": {"max_attempts": 4},
              "timeout": "2s", "cache": {"ttl": "1m"}}]),
    (HELLO, [{"op": "add_step", "after": "total", "step": {"id": "double",
              "node": "core.transform@1", "with": {"value": "{{ steps.total.output.value * 2 }}"},
              "retry": {"max_attempts": 2}}},
             {"op": "update_params", "step": "level",
              "params": {"cases": {"high": "{{ steps.double.output.value >= 30 }}"}}}]),
    (HELLO, [{"op": "remove_step", "step": "celebrate"},
             {"op": "update_params", "step": "summary", "params": {"value": {"celebrated": None}}},
             {"op": "replace_node", "step": "spread", "node": "code.python@1"}]),
    (BRANCHING, [{"op": "set_policy", "step": "approve", "retry": {"backoff": 3}},
                 {"op": "update_params", "step": "ask", "params": {"json": {"run": None}}}]),
    (BRANCHING, [{"op": "set_policy", "step": "ask", "retry": None, "timeout": None}]),
    (ORDERS, [{"op": "set_policy", "step": "fetch", "cache": None,
               "retry": {"non_retryable": ["HttpStatusError"], "max_interval": None}},
              {"op": "set_policy", "step": "total", "timeout": 4.5}]),
    (FLAT, [{"op": "remove_step", "step": "c"},
            {"op": "add_step", "step": {"id": "c2", "node": "core.transform@1", "needs": ["b"]}}]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "mutations"), CASES)
def test_the_edited_source_validates_to_the_spec_apply_gives(source, mutations):
    parsed = parse_mutations(mutations)
    catalog = None if source is BRANCHING else CATALOG  # it names http.request@1.2 (not built in)
    spec = parse_spec(source, catalog=catalog)
    expected = apply(spec, parsed, catalog, "w@1")
    text = edit_source(source, parsed)
    got, problems = validate_text(text, "w@2", catalog)
    assert problems == []
    assert got is not None and got.model_dump() == expected.model_dump()
    assert got.model_dump() != spec.model_dump()


@pytest.mark.parametrize("source", [HELLO, BRANCHING, ORDERS, FLAT])
def test_the_sources_come_back_unchanged_when_loaded_and_dumped(source):
    # a mutation that changes nothing visible: set a param to the value it has
    spec = parse_spec(source)
    first = spec.steps[0]
    value = {"node": first.node}
    text = edited(source, {"op": "replace_node", "step": first.id, **value})
    assert text == source


EDGE = """\
---
id: edge
steps:
  - id: a
    node: core.transform@1
    with:
    retry:
      max_attempts: 4

  # b is next
  - id: b
    needs: a
    node: core.transform@1
    with: {value: 1}
# the end
"""


def test_comments_about_the_next_step_stay_with_it():
    new = edited(EDGE, {"op": "remove_step", "step": "a"}, parse_set("b.timeout=1s").data())
    assert new == (
        "---\nid: edge\nsteps:\n  # b is next\n  - id: b\n    needs: a\n"
        "    node: core.transform@1\n    with: {value: 1}\n    timeout: 1s\n# the end\n"
    )
    new = edited(EDGE, {"op": "add_step", "step": {"id": "c", "node": "core.transform@1"},
                        "after": "a"})  # fmt: skip
    assert changes(EDGE, new) == ["+  - id: c", "+    node: core.transform@1", "+"]
    assert new.index("  - id: c") < new.index("  # b is next") < new.index("  - id: b")


def test_an_emptied_retry_goes_and_the_blank_line_after_it_stays():
    new = edited(
        EDGE,
        {"op": "set_policy", "step": "a", "retry": {"max_attempts": None}},
        {"op": "update_params", "step": "a", "params": {"v": 1}},
    )
    assert changes(EDGE, new) == [
        "-    with:",
        "-    retry:",
        "-      max_attempts: 4",
        "+    with: {v: 1}",
    ]
    assert "    with: {v: 1}\n\n  # b is next\n" in new


def test_line_endings_and_a_missing_final_newline_are_kept():
    crlf = HELLO.replace("\n", "\r\n")
    new = edit_source(crlf, [parse_set("greet.timeout=1s")])
    assert new == crlf.replace(
        '"Hello, {{ inputs.name }}!"\r\n', '"Hello, {{ inputs.name }}!"\r\n    timeout: 1s\r\n'
    )
    bare = HELLO.rstrip("\n")
    assert changes(bare, edit_source(bare, [parse_set("greet.timeout=1s")])) == ["+    timeout: 1s"]


def test_new_step_keys_go_where_the_format_puts_them():
    source = 'id: x\nsteps:\n  - id: a\n    node: core.transform@1\n    if: "{{ true }}"\n'
    source += "    timeout: 1s\n"
    new = edited(source, parse_set("a.with.k=1").data(), parse_set("a.cache.ttl=1m").data())
    assert new.splitlines()[4:] == ['    if: "{{ true }}"', "    with: {k: 1}", "    timeout: 1s",
                                    "    cache: {ttl: 1m}"]  # fmt: skip


def test_a_shared_nested_param_is_copied_before_it_changes():
    source = """\
id: x
steps:
  - id: a
    node: core.transform@1
    with:
      value: &v {x: 1, y: 2}
  - id: b
    node: core.transform@1
    with:
      value: *v
"""
    new = edited(source, parse_set("b.with.value.x=5").data())
    assert changes(source, new) == ["-      value: *v", "+      value: {x: 5, y: 2}"]
    spec = parse_spec(new)
    assert spec.step("a").with_ == {"value": {"x": 1, "y": 2}}


CODE_GONE = ["-      code: |", "-        def run(inputs):", "-            return 1"]
LITERAL = """\
id: lit
steps:
  - id: a
    node: code.python@1
    with:
      code: |
        def run(inputs):
            return 1

  # b next
  - id: b
    node: core.transform@1
    with: {value: 1}
"""


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (parse_set("a.timeout=5s"), ["+    timeout: 5s"]),
        (parse_set("a.with.extra=1"), ["+      extra: 1"]),
        (parse_set("a.with.code=x"), [*CODE_GONE, "+      code: x"]),
        (parse_mutations([{"op": "update_params", "step": "a",
                           "params": {"code": None, "v": 2}}])[0],
         [*CODE_GONE, "+      v: 2"]),
    ],
)  # fmt: skip
def test_a_literal_block_last_in_a_step_keeps_the_gap_and_comment_after_it(mutation, expected):
    new = edit_source(LITERAL, [mutation])
    assert changes(LITERAL, new) == expected
    assert "\n\n  # b next\n  - id: b\n" in new


def test_a_scalar_becoming_a_block_keeps_the_gap_after_it():
    new = edited(HELLO, {"op": "update_params", "step": "greet",
                         "params": {"value": "line1\nline2\n"}})  # fmt: skip
    assert changes(HELLO, new) == [
        '-      value: "Hello, {{ inputs.name }}!"',
        "+      value: |",
        "+        line1",
        "+        line2",
    ]
    new = edited(
        HELLO, {"op": "update_params", "step": "greet", "params": {"value": {"a": "x\ny"}}}
    )
    assert changes(HELLO, new)[1:] == [
        "+      value:",
        "+        a: |-",
        "+          x",
        "+          y",
    ]


def test_keys_and_values_yaml_1_1_would_misread_are_quoted():
    params = {"on": 1, "1": 2, "null": "yes", "a b": "x: y", "n": "5", "d": "2020-01-01"}
    mutation = {"op": "update_params", "step": "greet", "params": params}
    new = edited(HELLO, mutation)
    assert changes(HELLO, new) == [
        '+      "on": 1',
        '+      "1": 2',
        '+      "null": "yes"',
        '+      a b: "x: y"',
        '+      n: "5"',
        '+      d: "2020-01-01"',
    ]
    spec = parse_spec(HELLO)
    assert parse_spec(new).model_dump() == apply(spec, parse_mutations([mutation])).model_dump()


# Random mutation lists on every source above: whenever `apply` accepts one, the edited
# text must validate to the same spec (seeded, so a failure reproduces).
SOURCES = [HELLO, BRANCHING, ORDERS, FLAT, EDGE, LITERAL]
VALUES = [1, "on", "2020-01-01", "x y", "{{ inputs }}", True, None, {"a": 1}, {"a": None},
          [1, 2], "l1\nl2\n", "it's", 'say "hi"', "5", ""]  # fmt: skip


def random_mutation(rng: random.Random, ids: list[str]) -> dict:
    op = rng.choice(["update_params", "set_policy", "replace_node", "add_step", "remove_step"])
    step = rng.choice(ids)
    if op == "update_params":
        keys = rng.sample(["value", "k", "code", "on", "1"], rng.randint(1, 2))
        return {"op": op, "step": step, "params": {k: rng.choice(VALUES) for k in keys}}
    if op == "set_policy":
        policy = {
            "retry": rng.choice([None, {"max_attempts": 4}, {"backoff": None, "max_interval": 9}]),
            "timeout": rng.choice([None, "3s", 7]),
            "cache": rng.choice([None, {"ttl": "1m"}]),
        }
        return {"op": op, "step": step, **dict(rng.sample(sorted(policy.items()), 2))}
    if op == "replace_node":
        return {"op": op, "step": step, "node": rng.choice(["core.transform@1", "core.transform"])}
    if op == "add_step":
        new = {"id": f"n{rng.randint(0, 9)}", "node": "core.transform@1"}
        if rng.random() < 0.6:
            new["with"] = {"value": rng.choice([*VALUES[:5], f"{{{{ steps.{step}.status }}}}"])}
        ids.append(new["id"])
        return {"op": op, "step": new, **({"after": step} if rng.random() < 0.7 else {})}
    return {"op": op, "step": step}


@pytest.mark.parametrize("seed", range(4))
def test_random_mutations_mean_the_same_in_the_source_and_the_spec(seed):
    rng = random.Random(seed)
    for _ in range(15):
        source = rng.choice(SOURCES)
        spec = parse_spec(source)
        ids = [step.id for step in spec.steps]
        mutations = parse_mutations([random_mutation(rng, ids) for _ in range(rng.randint(1, 3))])
        try:
            expected = apply(spec, mutations)
        except SpecError:
            continue
        text = edit_source(source, mutations)
        got, problems = validate_text(text)
        assert problems == [], (mutations, diff(source, text))
        assert got is not None and got.model_dump() == expected.model_dump(), mutations
        assert "\n\n\n" not in text, diff(source, text)
