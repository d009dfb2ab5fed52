"""Graph mutations: parsed and checked as data, applied to a spec and validated as a push is
(a cycle, a dangling reference or an unknown step is refused, saying where)."""

from __future__ import annotations

import json

import pytest

from infra import SpecError
from nodes import builtin_catalog
from orchestrator.mutations import (
    MAX_MUTATIONS,
    AddStep,
    RemoveStep,
    ReplaceNode,
    SetPolicy,
    UpdateParams,
    dump_mutations,
    merge_sets,
    parse_mutations,
    parse_pin,
    parse_set,
)
from orchestrator.mutations import (
    apply_mutations as apply,
)
from orchestrator.mutations import (
    describe_mutations as describe,
)
from orchestrator.validate import parse_spec
from registry import Catalog

CATALOG = Catalog.from_manifests([n.manifest() for n in builtin_catalog().nodes()])

CHAIN = parse_spec(
    """
id: chain
inputs:
  n: {type: integer, default: 1}
steps:
  - {id: a, node: core.transform@1, with: {value: "{{ inputs.n }}", keep: yes}}
  - {id: b, node: core.transform@1, with: {value: "{{ steps.a.output.value }}"}}
  - {id: c, node: core.transform@1, with: {value: "{{ steps.b.output.value }}"}}
  - {id: d, node: core.transform@1, needs: [c], timeout: 20s,
     retry: {max_attempts: 5, backoff: 3}, cache: {ttl: 1h, allow_secrets: true},
     with: {value: {deep: {x: 1, y: 2}, other: 3}}}
  - {id: e, node: core.transform@1, with: {value: 5}}
outputs:
  last: "{{ steps.d.output.value }}"
""",
    catalog=CATALOG,
)


def mutated(*mutations: dict) -> object:
    return apply(CHAIN, parse_mutations(list(mutations)), CATALOG, "chain@1")


def refused(*mutations: dict) -> list[str]:
    with pytest.raises(SpecError) as raised:
        mutated(*mutations)
    return [str(p) for p in raised.value.problems]


def parse_problems(data: object) -> list[str]:
    with pytest.raises(SpecError) as raised:
        parse_mutations(data)
    return [str(p) for p in raised.value.problems]


# ---------------------------------------------------------------------------- each op


def test_update_params_merges_into_with_and_a_null_removes_a_key():
    spec = mutated(
        {"op": "update_params", "step": "a", "params": {"value": 7, "keep": None, "new": "x"}},
        {"op": "update_params", "step": "d", "params": {"value": {"deep": {"x": 9, "y": None}}}},
    )
    assert spec.step("a").with_ == {"value": 7, "new": "x"}
    assert spec.step("d").with_ == {"value": {"deep": {"x": 9}, "other": 3}}
    assert CHAIN.step("a").with_ == {"value": "{{ inputs.n }}", "keep": True}  # untouched


def test_update_params_removing_every_param_leaves_no_with():
    spec = mutated({"op": "update_params", "step": "e", "params": {"value": None}})
    assert spec.step("e").with_ == {}


def test_set_policy_merges_retry_and_replaces_timeout_and_cache():
    spec = mutated(
        {
            "op": "set_policy",
            "step": "d",
            "retry": {"max_attempts": 7, "backoff": None, "initial_interval": "250ms"},
            "timeout": "10s",
            "cache": {"ttl": "10m"},
        }
    )
    step = spec.step("d")
    assert (step.retry.max_attempts, step.retry.backoff, step.retry.initial_interval) == (
        7,
        2.0,
        0.25,
    )
    assert step.timeout == 10.0
    assert step.cache is not None and step.cache.ttl == 600 and not step.cache.allow_secrets
    assert CHAIN.step("d").retry.max_attempts == 5


def test_set_policy_null_removes_timeout_cache_and_retry():
    spec = mutated(
        {"op": "set_policy", "step": "d", "retry": None, "timeout": None, "cache": None},
        {"op": "set_policy", "step": "a", "retry": {"max_attempts": 2}, "cache": {"ttl": 30}},
    )
    assert spec.step("d").timeout is None and spec.step("d").cache is None
    assert spec.step("d").retry.max_attempts == 3  # the default
    assert spec.step("a").retry.max_attempts == 2 and spec.step("a").cache.ttl == 30


def test_replace_node_pins_another_version():
    spec = mutated({"op": "replace_node", "step": "b", "node": "core.transform@1.1.0"})
    assert spec.step("b").node == "core.transform@1.1.0"


def test_replace_node_with_an_unknown_node_is_refused_by_the_catalog():
    shown = refused({"op": "replace_node", "step": "b", "node": "my.ranker@0.2.0"})
    assert len(shown) == 1 and shown[0].startswith("chain@1 with mutations: steps[1].node: ")
    assert "my.ranker" in shown[0]


def test_add_step_goes_after_its_anchor_or_at_the_end():
    new = {"id": "x", "node": "core.transform@1", "with": {"value": "{{ steps.b.output }}"}}
    spec = mutated({"op": "add_step", "step": new, "after": "b"})
    assert [s.id for s in spec.steps] == ["a", "b", "x", "c", "d", "e"]
    spec = mutated({"op": "add_step", "step": {**new, "id": "y"}})
    assert [s.id for s in spec.steps] == ["a", "b", "c", "d", "e", "y"]
    assert spec.step("y").with_ == {"value": "{{ steps.b.output }}"}


def test_add_step_refuses_an_id_in_use_and_an_unknown_anchor():
    shown = refused(
        {"op": "add_step", "step": {"id": "c", "node": "core.transform@1"}},
        {"op": "add_step", "step": {"id": "z", "node": "core.transform@1"}, "after": "q"},
    )
    assert shown == [
        "chain@1 with mutations: mutation[0].step.id: a step 'c' exists already in chain@1",
        "chain@1 with mutations: mutation[1].after: no step 'q' in chain@1 (steps: a, b, c, d, e)",
    ]


def test_add_step_with_a_bad_shape_is_refused_with_its_path():
    shown = refused({"op": "add_step", "step": {"id": "z", "node": "core.transform@1", "tries": 3}})
    assert len(shown) == 1
    assert shown[0].startswith("chain@1 with mutations: steps[5].tries: unknown key 'tries'")


def test_remove_step_of_a_step_nobody_reads():
    spec = mutated({"op": "remove_step", "step": "e"})
    assert [s.id for s in spec.steps] == ["a", "b", "c", "d"]


def test_mutations_apply_in_order_so_a_later_one_may_use_an_added_step():
    spec = mutated(
        {"op": "add_step", "step": {"id": "x", "node": "core.transform@1"}, "after": "e"},
        {"op": "update_params", "step": "x", "params": {"value": "{{ steps.e.output.value }}"}},
        {"op": "set_policy", "step": "x", "timeout": 3},
    )
    assert spec.step("x").with_ == {"value": "{{ steps.e.output.value }}"}
    assert spec.step("x").timeout == 3.0


# ----------------------------------------------------------------------- refusals


def test_an_added_step_that_makes_a_cycle_is_refused():
    shown = refused(
        {"op": "add_step", "after": "a",
         "step": {"id": "x", "node": "core.transform@1", "needs": ["c"]}},
        {"op": "update_params", "step": "a", "params": {"value": "{{ steps.x.output }}"}},
    )  # fmt: skip
    assert shown == ["chain@1 with mutations: steps[0].with.value: cycle: a -> x -> c -> b -> a"]


def test_an_added_step_reading_through_a_template_that_makes_a_cycle_is_refused():
    shown = refused(
        {"op": "add_step",
         "step": {"id": "x", "node": "core.transform@1", "with": {"v": "{{ steps.d.output }}"}}},
        {"op": "update_params", "step": "b", "params": {"extra": "{{ steps.x.output }}"}},
    )  # fmt: skip
    assert len(shown) == 1 and "cycle: " in shown[0], shown
    assert shown[0].startswith("chain@1 with mutations: steps[")
    assert "x" in shown[0].split("cycle: ")[1].split(" -> ")


def test_removing_a_step_another_reads_is_refused_with_the_reader_and_path():
    shown = refused({"op": "remove_step", "step": "b"})
    assert shown == [
        "chain@1 with mutations: steps[1].with.value: unknown step 'b' (removed by mutation[0])"
    ]


def test_removing_a_step_another_needs_or_an_output_reads_is_refused():
    shown = refused({"op": "remove_step", "step": "c"}, {"op": "remove_step", "step": "a"})
    assert shown == [
        "chain@1 with mutations: steps[0].with.value: unknown step 'a' (removed by mutation[1])",
        "chain@1 with mutations: steps[1].needs[0]: needs unknown step 'c' (removed by "
        "mutation[0])",
    ]
    shown = refused({"op": "remove_step", "step": "d"})
    assert shown[0].startswith("chain@1 with mutations: outputs.last: unknown step 'd'"), shown


def test_a_mutation_breaking_a_template_is_refused():
    shown = refused({"op": "update_params", "step": "e", "params": {"value": "{{ inputs.m }}"}})
    assert len(shown) == 1
    assert shown[0].startswith("chain@1 with mutations: steps[4].with.value: undefined input 'm'")


def test_a_mutation_of_an_unknown_step_is_refused_with_a_hint():
    shown = refused(
        {"op": "set_policy", "step": "dd", "timeout": "1s"},
        {"op": "remove_step", "step": "zzz"},
    )
    assert shown == [
        "chain@1 with mutations: mutation[0].step: no step 'dd' in chain@1; did you mean 'd'?",
        "chain@1 with mutations: mutation[1].step: no step 'zzz' in chain@1 (steps: a, b, c, d, e)",
    ]


def test_removing_the_only_step_is_refused():
    spec = parse_spec("id: one\nsteps:\n  - {id: a, node: core.transform@1}\n")
    with pytest.raises(SpecError) as raised:
        apply(spec, parse_mutations([{"op": "remove_step", "step": "a"}]))
    assert [str(p) for p in raised.value.problems] == [
        "one with mutations: steps: a workflow needs at least one step"
    ]


# ------------------------------------------------------------------- list validation


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([{"op": "nope", "step": "a"}], ["mutation[0].op: unknown op 'nope' (one of: add_step, "
                                         "remove_step, replace_node, set_policy, update_params)"]),
        ([{"step": "a"}], ["mutation[0].op: missing 'op' (one of: add_step, remove_step, "
                           "replace_node, set_policy, update_params)"]),
        ([{"op": "set_policy", "step": "a", "retry": {"max_attempts": 0}}],
         ["mutation[0].retry.max_attempts: Input should be greater than or equal to 1"]),
        ([{"op": "set_policy", "step": "a", "retry": {"tries": 2}}],
         ["mutation[0].retry.tries: unknown field (allowed: max_attempts, initial_interval, "
          "backoff, max_interval, non_retryable)"]),
        ([{"op": "set_policy", "step": "a"}],
         ["mutation[0]: set_policy needs at least one of retry, timeout, cache"]),
        ([{"op": "set_policy", "step": "a", "timeout": "soon"}],
         ["mutation[0].timeout: bad duration 'soon': use e.g. 500ms, 30s, 10m, 1h"]),
        ([{"op": "set_policy", "step": "a", "cache": {"allow_secrets": True}}],
         ["mutation[0].cache.ttl: missing"]),
        ([{"op": "replace_node", "step": "a", "node": "Bad Node"}],
         ["mutation[0].node: malformed node reference 'Bad Node': write name@version"]),
        ([{"op": "update_params", "step": "a", "params": {}}],
         ["mutation[0].params: Dictionary should have at least 1 item after validation, not 0"]),
        ([{"op": "update_params", "step": "a", "params": [1]}],
         ["mutation[0].params: expected a mapping, got a list"]),
        ([{"op": "add_step", "step": {"node": "core.transform@1"}}],
         ["mutation[0].step: a step needs an id, got null"]),
        ([{"op": "remove_step", "step": "a", "why": "x"}, "text"],
         ["mutation[0].why: unknown field (allowed: step)",
          "mutation[1]: expected a mapping, got string 'text'"]),
        ("[{", ["mutation: not JSON: Expecting property name enclosed in double quotes: "
                "line 1 column 3 (char 2)"]),
        (5, ["mutation: expected a list of mutations, got integer 5"]),
    ],
)  # fmt: skip
def test_a_bad_mutation_list_is_one_line_per_mistake_naming_index_and_field(data, expected):
    assert parse_problems(data) == expected


def test_at_most_max_mutations():
    many = [{"op": "remove_step", "step": "a"}] * (MAX_MUTATIONS + 1)
    assert parse_problems(many) == [
        f"mutation: {MAX_MUTATIONS + 1} mutations, over the limit of {MAX_MUTATIONS}"
    ]
    assert len(parse_mutations(many[:MAX_MUTATIONS])) == MAX_MUTATIONS


def test_json_text_and_a_single_mapping_parse_and_dump_back_as_given():
    data = [
        {"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 7}, "cache": None},
        {"op": "update_params", "step": "rank", "params": {"k": 5, "old": None}},
        {"op": "add_step", "step": {"id": "x", "node": "core.transform@1"}, "after": "rank"},
        {"op": "remove_step", "step": "y"},
        {"op": "replace_node", "step": "rank", "node": "my.ranker@0.2.0"},
    ]
    parsed = parse_mutations(json.dumps(data))
    assert [type(m) for m in parsed] == [SetPolicy, UpdateParams, AddStep, RemoveStep, ReplaceNode]
    assert dump_mutations(parsed) == data
    assert parse_mutations(data[0]) == parsed[:1]
    assert parse_mutations(parsed) == parsed


def test_describe_gives_one_line_per_mutation():
    parsed = parse_mutations(
        [
            {"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 7}, "timeout": "10s"},
            {"op": "set_policy", "step": "fetch", "cache": None},
            {"op": "update_params", "step": "rank", "params": {"k": 5, "o": {"p": None}}},
            {"op": "replace_node", "step": "rank", "node": "my.ranker@0.2.0"},
            {"op": "add_step", "step": {"id": "x", "node": "core.transform@1"}, "after": "rank"},
            {"op": "add_step", "step": {"id": "y", "node": "core.transform@1"}},
            {"op": "remove_step", "step": "old"},
        ]
    )
    assert describe(parsed).splitlines() == [
        "fetch: retry.max_attempts = 7, timeout = 10s",
        "fetch: cache removed",
        "rank: with.k = 5, with.o.p removed",
        "rank: node = my.ranker@0.2.0",
        "add step 'x' (core.transform@1) after 'rank'",
        "add step 'y' (core.transform@1) at the end",
        "remove step 'old'",
    ]


# ------------------------------------------------------------------------ --set, --pin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rank.with.k=5", {"op": "update_params", "step": "rank", "params": {"k": 5}}),
        ("rank.with.opts.deep.flag=true",
         {"op": "update_params", "step": "rank", "params": {"opts": {"deep": {"flag": True}}}}),
        ("rank.with.model=large", {"op": "update_params", "step": "rank",
                                   "params": {"model": "large"}}),
        ("rank.with.tags=[a, b]", {"op": "update_params", "step": "rank",
                                   "params": {"tags": ["a", "b"]}}),
        ("rank.with.old=", {"op": "update_params", "step": "rank", "params": {"old": None}}),
        ("rank.with.q={{ inputs.q }}", {"op": "update_params", "step": "rank",
                                        "params": {"q": "{{ inputs.q }}"}}),
        ("rank.with.q='{{ inputs.q }}'", {"op": "update_params", "step": "rank",
                                          "params": {"q": "{{ inputs.q }}"}}),
        ("rank.with.url=https://x/?a=b", {"op": "update_params", "step": "rank",
                                          "params": {"url": "https://x/?a=b"}}),
        ("fetch.retry.max_attempts=7",
         {"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 7}}),
        ("fetch.timeout=10s", {"op": "set_policy", "step": "fetch", "timeout": "10s"}),
        ("fetch.cache.ttl=10m", {"op": "set_policy", "step": "fetch", "cache": {"ttl": "10m"}}),
    ],
)  # fmt: skip
def test_set_forms(text, expected):
    assert parse_set(text).data() == expected


FORMS = (
    "expected STEP.with.KEY[.SUB…]=VALUE, STEP.retry.FIELD=VALUE, STEP.timeout=VALUE or "
    "STEP.cache.ttl=VALUE"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rank.node=x@1", f"--set: 'rank.node=x@1': {FORMS}"),
        ("rank=5", f"--set: 'rank=5': {FORMS}"),
        ("rank.with.k", f"--set: 'rank.with.k': {FORMS}"),
        ("rank.with=5", f"--set: 'rank.with=5': {FORMS}"),
        ("rank..k=1", f"--set: 'rank..k=1': {FORMS}"),
        ("fetch.retry.tries=2", "--set: 'fetch.retry.tries=2': retry.tries: unknown field "
                                "(allowed: max_attempts, initial_interval, backoff, max_interval, "
                                "non_retryable)"),
        ("fetch.timeout=soon", "--set: 'fetch.timeout=soon': timeout: bad duration 'soon': "
                               "use e.g. 500ms, 30s, 10m, 1h"),
        ("Fetch.timeout=1s", "--set: 'Fetch.timeout=1s': step: bad step id 'Fetch'"),
        ("rank.with.k=[1,", "--set: 'rank.with.k=[1,': bad value: while parsing a flow node"),
    ],
)  # fmt: skip
def test_bad_set_forms_say_what_is_accepted(text, expected):
    with pytest.raises(SpecError) as raised:
        parse_set(text)
    assert [str(p) for p in raised.value.problems] == [expected]


def test_pin():
    assert parse_pin("rank=my.ranker@0.2.0") == ReplaceNode(step="rank", node="my.ranker@0.2.0")
    for bad in ("rank", "rank=my.ranker", "=x@1"):
        with pytest.raises(SpecError) as raised:
            parse_pin(bad)
        assert str(raised.value) == f"--pin: {bad!r}: expected STEP=NODE@VERSION"


def test_sets_merge_into_one_mutation_per_step_and_kind():
    merged = merge_sets(
        [parse_set(t) for t in ("a.with.k=5", "a.with.o.x=1", "a.with.o.y=2", "a.timeout=3s",
                                "a.retry.max_attempts=2", "b.with.k=1", "a.with.z=0")]
    )  # fmt: skip
    assert dump_mutations(merged) == [
        {"op": "update_params", "step": "a", "params": {"k": 5, "o": {"x": 1, "y": 2}}},
        {"op": "set_policy", "step": "a", "timeout": "3s", "retry": {"max_attempts": 2}},
        {"op": "update_params", "step": "b", "params": {"k": 1}},
        {"op": "update_params", "step": "a", "params": {"z": 0}},
    ]


def test_set_mutations_apply():
    spec = apply(
        CHAIN,
        [parse_set("d.with.value.deep.x=10"), parse_set("d.retry.max_attempts=9"),
         parse_set("d.timeout=1m"), parse_set("e.cache.ttl=5m")],
        CATALOG,
    )  # fmt: skip
    assert spec.step("d").with_["value"] == {"deep": {"x": 10, "y": 2}, "other": 3}
    assert spec.step("d").retry.max_attempts == 9 and spec.step("d").retry.backoff == 3
    assert spec.step("d").timeout == 60 and spec.step("e").cache.ttl == 300


def test_values_the_mutations_do_not_touch_keep_their_type():
    """Validated as YAML the spec reads back as it is (JSON's `1e-07` is a string to YAML
    1.1), so a float, a date-like or a yes-like string elsewhere stays what it was."""
    source = """
id: typed
steps:
  - {id: a, node: core.transform@1, with: {value: 1.0e-7, day: "2024-01-01", word: "on"}}
  - {id: b, node: core.transform@1, with: {value: 1}}
"""
    spec = parse_spec(source, catalog=CATALOG)
    changed = apply(spec, parse_mutations([{"op": "update_params", "step": "b",
                                            "params": {"value": 2}}]), CATALOG)  # fmt: skip
    assert changed.step("a").with_ == {"value": 1e-07, "day": "2024-01-01", "word": "on"}
    assert changed.step("b").with_ == {"value": 2}
