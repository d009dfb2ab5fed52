"""Templates are bounded by construction: size and iteration limits, refused before allocating.

Every template renders inside the Temporal workflow, so an expression that builds a huge value
or loops for ever would hang the worker. Each case here must fail fast with a one-line
ExpressionError naming the limit, and never allocate much on the way.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

from infra.errors import ExpressionError
from orchestrator.expressions import ExpressionLimits, compile_template, render

pytestmark = pytest.mark.timeout(60)

BYTES = "REFLUX_EXPRESSION_MAX_BYTES"
ITERATIONS = "REFLUX_EXPRESSION_MAX_ITERATIONS"
DIGITS = "digits"
PEAK_BYTES = 50 * 1024 * 1024

CONTEXT = {
    "inputs": {"n": 3, "big": "x" * 1_000_000, "half": "y" * 600_000, "deep": [[0] * 200_000]},
    "steps": {"fetch": {"output": {"json": {"blob": "z" * 2_000_000}}, "status": "completed"}},
    "run": {"id": "r-1", "workflow": "w", "version": 1},
}


def refused(template, limit, *, limits=None, context=CONTEXT) -> str:
    """Render `template`; it must raise ExpressionError naming `limit`, quickly and lean."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ExpressionError) as info:
            render(template, context, limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "\n" not in message, message
    assert limit in message, message
    assert peak < PEAK_BYTES, f"peak {peak} bytes for {template!r}"
    assert elapsed < 10, f"{elapsed:.1f}s for {template!r}"
    return message


GROWTH = [
    # filters
    "{{ 'a' | center(1000000000) }}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ '%-999999999s' | format('x') }}",
    "{{ '%(a)999999999s' | format(a=1) }}",
    "{{ ('a\n' * 1000) | indent(100000) }}",
    "{{ ('a\n' * 1000) | indent('x' * 100000) }}",
    "{{ ('a ' * 1000) | wordwrap(1, wrapstring='x' * 10000) }}",
    "{{ ('a' * 1000) | replace('a', 'b' * 1000000) }}",
    "{{ 'aaaa' | replace('', 'x' * 500000) }}",
    "{{ range(1000) | join('x' * 100000) }}",
    "{{ [inputs.big, inputs.big] | join }}",
    "{{ range(10) | list | tojson(indent=1000000) }}",
    "{{ ('a.com ' * 20000) | urlize(target='x' * 10000) }}",
    "{{ {'a': '&' * 500000} | xmlattr }}",
    "{{ ('&' * 500000) | escape }}",
    "{{ [inputs.big, inputs.big] | string }}",
    "{{ [inputs.big, inputs.big] | tojson }}",
    "{{ [inputs.big, inputs.big] | pprint }}",
    "{{ [[inputs.half], [inputs.half]] | sum(start=[]) | join }}",
    # str, bytes and int methods
    "{{ '{0:>999999999}'.format(1) }}",
    "{{ '{:.999999999f}'.format(1.5) }}",
    "{{ '{x:>{w}}'.format_map({'x': 1, 'w': 999999999}) }}",
    "{{ '{0}{0}{0}'.format(inputs.big) }}",
    "{{ 'a'.center(1000000000, '-') }}",
    "{{ 'a'.ljust(1000000000) }}",
    "{{ 'a'.rjust(1000000000) }}",
    "{{ 'a'.zfill(1000000000) }}",
    "{{ ('a\t' * 1000).expandtabs(1000000) }}",
    "{{ ('a' * 1000).replace('a', 'b' * 1000000) }}",
    "{{ 'x'.join(['y' * 600000, 'z' * 600000]) }}",
    "{{ ('x' * 100000).join(range(100)) }}",
    "{{ 'aaaa'.translate({97: 'x' * 1000000}) }}",
    "{{ 'a'.encode().center(1000000000) }}",
    "{{ 'a'.encode().zfill(1000000000) }}",
    "{{ (1).to_bytes(1000000000, 'big') }}",
    # %-formatting
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%.999999999f' % 1.5 }}",
    "{{ '%.*f' % (999999999, 1.5) }}",
    "{{ '%(a)999999999s' % {'a': 1} }}",
    "{{ ('%s' * 1000) % ((inputs.big,) * 1000) }}",
    # repetition and concatenation
    "{{ 'a' * 1000000000 }}",
    "{{ 1000000000 * 'a' }}",
    "{{ [0] * 1000000000 }}",
    "{{ (0,) * 1000000000 }}",
    "{{ inputs.big ~ inputs.big }}",
    "{{ inputs.big + inputs.big }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(l=[0]) %}{% for i in range(40) %}"
    "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
    # what a template writes and what it gives back
    "{% for i in range(100000) %}{{ inputs.big }}{% endfor %}",
    "{% set x %}{% for i in range(100000) %}{{ inputs.big }}{% endfor %}{% endset %}"
    "{{ x | length }}",
    "{% macro m() %}{% for i in range(1000) %}{{ inputs.big }}{% endfor %}{% endmacro %}"
    "{{ m() | length }}",
    "{% for i in range(100000) %}" + "w" * 1000 + "{% endfor %}",
    "{{ inputs.half }}{{ inputs.half }}",
    "{{ [inputs.half, inputs.half] }}",
    "{{ steps.fetch.output.json.blob ~ '' }}",
    "{{ [steps.fetch.output.json.blob] }}",
    "{{ {'a': steps.fetch.output.json} }}",
    "{{ [inputs.big] * 100 }}",
]


@pytest.mark.parametrize("template", GROWTH)
def test_growth_is_refused_before_it_allocates(template):
    message = refused(template, BYTES)
    assert "over the limit of 1048576" in message


NUMBERS = [
    "{{ 10 ** 5000 }}",
    "{{ ((10 ** 999) ** 999) ** 999 }}",
    "{% set ns = namespace(x=3) %}{% for i in range(40) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
    "{% set ns = namespace(x=1) %}{% for i in range(20000) %}"
    "{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x > 0 }}",
    "{{ 2 ** 20000 - 1 }}",
]


@pytest.mark.parametrize("template", NUMBERS)
def test_huge_numbers_are_refused(template):
    refused(template, DIGITS)


LOOPS = [
    "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for a in range(10000000000) %}{% endfor %}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
    "{% for a in range(100000) %}{% for b in inputs.big %}{% endfor %}{% endfor %}",
    "{% for a in range(10) recursive %}{{ loop(range(100000)) }}{% endfor %}",
    "{{ range(10 ** 9) | list }}",
    "{{ range(10 ** 10) | sum }}",
    "{{ range(10 ** 10) | join }}",
    "{{ range(10 ** 10) | map('string') | list }}",
    "{{ range(10 ** 10) | select('odd') | list }}",
    "{{ range(10 ** 10) | reject('number') | list }}",
    "{{ range(10 ** 10) | unique | list }}",
    "{{ range(10 ** 10) | sort }}",
    "{{ range(10 ** 10) | reverse | list }}",
    "{{ range(10 ** 10) | min }}",
    "{{ range(10 ** 10) | max }}",
    "{{ range(10 ** 10) | batch(3) | list }}",
    "{{ range(10 ** 10) | slice(3) | list }}",
    "{{ [1] | batch(1000000000, 'x') | list }}",
    "{{ [1] | slice(1000000000) | list }}",
    "{{ range(10 ** 10) | groupby('real') }}",
    "{{ range(10 ** 10) | map('string') | join(',') }}",
    "{{ {}.fromkeys(range(10 ** 10)) }}",
    "{{ {}.keys().isdisjoint(range(10 ** 10)) }}",
    "{{ ','.join(range(10 ** 10) | map('string')) }}",
    "{{ dict(range(10 ** 10) | map('string') | batch(2)) }}",
    "{{ dict.fromkeys(range(10 ** 10)) }}",
    "{{ range(200000) | list | length }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% for i in range(100000) %}{% set x = inputs.big[1:] %}{% endfor %}",
    "{% for i in range(100000) %}{% set x = inputs.big | upper %}{% endfor %}",
    "{% for i in range(100000) %}{% set x = 'q' in inputs.big %}{% endfor %}",
    "{% for i in range(100000) %}{% set x = inputs.deep == inputs.deep %}{% endfor %}",
    "{% for i in range(100000) %}{% set x = inputs.big.upper() %}{% endfor %}",
]


@pytest.mark.parametrize("template", LOOPS)
def test_iterations_are_budgeted(template):
    message = refused(template, ITERATIONS)
    assert "over the limit of 100000" in message


@pytest.mark.parametrize(
    "template",
    [
        "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "x {{ " + "[" * 5000 + "]" * 5000 + " }}",
        "{{ " + "-" * 5000 + "1 }}",
        "{% for x in range(2) recursive %}{{ loop(range(2)) }}{% endfor %}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ 'a'.center('x') }}",
        "{{ range(10 ** 100) | length }}",
        "{{ '%d %d' % (1,) }}",
        "{{ '%(a)s' % 1 }}",
        "{{ '{0:>{1}}'.format(1) }}",
        "{% block b %}{{ self.b() }}{{ self.b() }}{% endblock %}",
        "{{ (-8) ** 0.5 }}",
        "{{ 'a'.encode() }}",
        "{{ cycler(1, 2) }}",
        "{{ 'x'.center }}",
        "{{ (10 ** 4000) | filesizeformat }}",
        "{% set ns = namespace(a=1) %}{{ ns.__class__ }}",
    ],
)
def test_any_failure_while_rendering_is_one_expression_error(template):
    started = time.monotonic()
    with pytest.raises(ExpressionError) as info:
        render(template, CONTEXT)
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a' | center(1000000000) }}",
        "{{ '%0999999999d' | format(1) }}",
        "{{ 'a' | indent(1000000000, first=true) }}",
        "{{ 'ab' | replace('', 'x' * 1000000) | replace('', 'y' * 1000000) }}",
        "{{ range(10 ** 9) | list | length }}",
        "{{ 'a' * 1000000000 }}",
    ],
)
def test_compiling_does_not_evaluate_growth(template):
    # `validate` compiles every template; Jinja folds constant filters at compile time.
    tracemalloc.start()
    try:
        compile_template(template)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES


def test_limits_can_be_set_per_render():
    tight = ExpressionLimits(max_bytes=100, max_iterations=10)
    assert render("{% for i in range(10) %}{% endfor %}ok", {}, limits=tight) == "ok"
    refused("{% for i in range(11) %}{% endfor %}", ITERATIONS, limits=tight, context={})
    assert "over the limit of 10 " in refused(
        "{% for i in range(11) %}{% endfor %}", ITERATIONS, limits=tight, context={}
    )
    assert render("{{ 'x' * 100 }}", {}, limits=tight) == "x" * 100
    assert "over the limit of 100 " in refused("{{ 'x' * 101 }}", BYTES, limits=tight, context={})
    assert render("{{ 'x' * 2000 }}", {}) == "x" * 2000
    assert ExpressionLimits() == ExpressionLimits(max_bytes=1024 * 1024, max_iterations=100_000)


def test_a_rendered_value_is_measured_as_a_whole():
    value = {"a": "{{ inputs.half ~ '' }}", "b": ["{{ inputs.half[1:] }}"]}
    refused(value, BYTES)
    assert render({"a": "{{ inputs.half ~ '' }}"}, CONTEXT) == {"a": CONTEXT["inputs"]["half"]}


def test_a_value_read_as_it_is_passes_through_whatever_its_size():
    # One step handing another's output on: payloads over a few KiB already go by reference,
    # and reading a value builds nothing. Only what an expression builds is limited.
    blob = CONTEXT["steps"]["fetch"]["output"]["json"]["blob"]
    assert render("{{ steps.fetch.output.json.blob }}", CONTEXT) is blob
    assert render(
        {"a": "{{ steps.fetch.output.json }}", "b": "{{ steps['fetch'].output }}"}, CONTEXT
    )
    assert render("{{ steps.fetch.output.json.blob[:3] }}", CONTEXT) == "zzz"


def test_the_message_says_what_and_where():
    message = refused("{{ 'a' | center(1000000000) }}", BYTES)
    assert message == (
        "expression would build a string of 1000000000 bytes, over the limit of 1048576"
        " (REFLUX_EXPRESSION_MAX_BYTES) in \"{{ 'a' | center(1000000000) }}\""
    )
    message = refused(
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        ITERATIONS,
    )
    assert message.startswith("expression would run at least 200000 iterations, over the limit")


LEGITIMATE = [
    ("{% for i in range(1000) %}{{ i }},{% endfor %}", ",".join(map(str, range(1000))) + ","),
    ("{% for a in range(300) %}{% for b in range(300) %}{% endfor %}{% endfor %}ok", "ok"),
    ("{{ range(100) | join(',') }}", ",".join(map(str, range(100)))),
    ("{{ range(100) | map('string') | join('-') }}", "-".join(map(str, range(100)))),
    ("{{ '%05d' | format(42) }}", "00042"),
    ("{{ '%-6s|' % 'ab' }}", "ab    |"),
    ("{{ '%*d|%.*f' % (5, 1, 2, 3.14159) }}", "    1|3.14"),
    ("{{ '%(a)s-%(b)05.1f %%' % {'a': 'x', 'b': 2.5} }}", "x-002.5 %"),
    ("{{ '%s' % [1, 2] }}", "[1, 2]"),
    ("{{ '{:>8}|{:.2f}|{!r}'.format(1, 3.14159, 'q') }}", "       1|3.14|'q'"),
    ("{{ '{a:0>{w}}'.format_map({'a': 7, 'w': 3}) }}", "007"),
    ("{{ '{0[0]}{0[1]}'.format('ab') }}", "ab"),
    ("{{ 'ab' | center(6) }}", "  ab  "),
    ("{{ 'a\nb' | indent(2) }}", "a\n  b"),
    ("{{ 'aaa bbb ccc' | wordwrap(4) }}", "aaa\nbbb\nccc"),
    ("{{ 'banana' | replace('a', 'oo') }}", "boonoonoo"),
    ("{{ 'banana' | replace('a', 'o', 2) }}", "bonona"),
    ("{{ 'x'.zfill(3) ~ 'y'.ljust(2) ~ 'z'.rjust(2) ~ 'w'.center(3, '*') }}", "00xy  z*w*"),
    ("{{ 'a\tb'.expandtabs(4) }}", "a   b"),
    ("{{ 'a-b-c'.split('-') }}", ["a", "b", "c"]),
    ("{{ 'a\nb'.splitlines() }}", ["a", "b"]),
    ("{{ 'abc'.translate({97: 'xy'}) }}", "xybc"),
    ("{{ 'é'.encode() | length }}", 2),
    ("{{ (258).to_bytes(2, 'big') | list }}", [1, 2]),
    ("{{ 'ab' * 3 ~ ([1] * 2) | string }}", "ababab[1, 1]"),
    ("{{ 3 * [1, 2] }}", [1, 2, 1, 2, 1, 2]),
    ("{{ 2 ** 100 }}", 2**100),
    ("{{ (10 ** 999) * 7 > 0 }}", True),
    ("{{ range(10 ** 10) | length }}", 10**10),
    ("{{ 5 in range(10 ** 10) }}", True),
    ("{{ range(10 ** 10)[-1] }}", 10**10 - 1),
    ("{{ range(5) | list }}", [0, 1, 2, 3, 4]),
    ("{{ range(5) }}", [0, 1, 2, 3, 4]),
    ("{{ [3, 1, 2] | sort | list }}", [1, 2, 3]),
    ("{{ [1, 1, 2] | unique | list }}", [1, 2]),
    ("{{ [1, 2, 3] | sum }}", 6),
    ("{{ [[1], [2]] | sum(start=[]) }}", [1, 2]),
    ("{{ [1, 2, 3] | min }}{{ [1, 2, 3] | max }}", "13"),
    ("{{ range(7) | batch(3, 0) | list }}", [[0, 1, 2], [3, 4, 5], [6, 0, 0]]),
    ("{{ range(7) | slice(3) | list }}", [[0, 1, 2], [3, 4], [5, 6]]),
    ("{{ {'b': 1, 'a': 2} | dictsort }}", [["a", 2], ["b", 1]]),
    ("{{ {'b': 1} | items | list }}", [["b", 1]]),
    ("{{ [{'k': 1}, {'k': 1}] | groupby('k') | map('first') | list }}", [1]),
    ("{{ [3, 1] | reverse | list }}", [1, 3]),
    ("{{ 'abc' | reverse }}", "cba"),
    ("{{ {'a': [1, 2]} | tojson(indent=2) }}", '{\n  "a": [\n    1,\n    2\n  ]\n}'),
    (
        "{{ 'see https://a.com' | urlize }}",
        'see <a href="https://a.com" rel="noopener">https://a.com</a>',
    ),
    ("{{ {'id': 'x&y'} | xmlattr }}", ' id="x&amp;y"'),
    ("{{ 'a&b' | escape }}", "a&amp;b"),
    ("{{ 'hello world' | truncate(8, end='', leeway=0) }}", "hello"),
    ("{{ 1000000 | filesizeformat }}", "1.0 MB"),
    ("{{ [1, 2] | pprint }}", "[1, 2]"),
    ("{{ 'abc' | list }}", ["a", "b", "c"]),
    ("{{ inputs.big | length }}", 1_000_000),
    ("{{ inputs.big[:3] }}", "xxx"),
    ("{{ 'x' in inputs.big }}", True),
    ("{{ inputs.deep[0] | length }}", 200_000),
    ("{{ {}.fromkeys(['a'], 1) }}", {"a": 1}),
    ("{{ dict(a=1) }}", {"a": 1}),
    ("{{ ','.join(['a', 'b']) }}", "a,b"),
    (
        "{% set ns = namespace(s='') %}{% for i in range(1000) %}"
        "{% set ns.s = ns.s ~ i ~ ',' %}{% endfor %}{{ ns.s | length }}",
        str(len("".join(f"{i}," for i in range(1000)))),
    ),
    (
        "{% macro m(x) %}<{{ x }}>{% endmacro %}{% for i in range(100) %}{{ m(i) }}{% endfor %}",
        "".join(f"<{i}>" for i in range(100)),
    ),
    (
        "{% for x in [[1, [2, [3]]]] recursive %}{% if x is iterable %}"
        "{{ loop(x) }}{% else %}{{ x }}{% endif %}{% endfor %}",
        "123",
    ),
    ("{% set x %}{% for i in range(3) %}{{ i }}{% endfor %}{% endset %}{{ x }}!", "012!"),
    ("{% filter upper %}ab{% endfilter %}", "AB"),
    ("{{ 'ab'[::-1] ~ 'abc'[1:] }}", "babc"),
    ("{{ [1, 2] == [1, 2] and 1 < 2 < 3 and 'a' not in 'b' }}", True),
    ("{{ 4 is divisibleby 2 }}", True),
    ("{{ [1, 2, 3] | select('in', [2, 3]) | list }}", [2, 3]),
    ("{{ 1.5 | round }}", 2.0),
    ("{{ '12' | int + 1 }}", 13),
]


@pytest.mark.parametrize(("template", "expected"), LEGITIMATE)
def test_legitimate_templates_still_work(template, expected):
    assert render(template, CONTEXT) == expected


def test_a_heavy_loop_body_pays_for_its_operations():
    light = "{% for i in range(90000) %}{{ i }}{% endfor %}"
    heavy = (
        "{% for i in range(90000) %}{{ i | abs | abs | abs | abs | abs | abs | abs }}{% endfor %}"
    )
    assert len(render(light, {})) > 90000
    refused(heavy, ITERATIONS, context={})
    assert len(render(heavy.replace("90000", "30000"), {})) > 30000


def test_building_values_pays_for_the_bytes_built():
    # A list that keeps what each step built: bounded by the budget, not only per value.
    refused("{{ ([inputs.big] * 100) | map('upper') | list | length }}", ITERATIONS)
    accumulate = (
        "{% set ns = namespace(items=[]) %}{% for i in range(2000) %}"
        "{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.items | length }}"
    )
    assert render(accumulate, {}) == "2000"


def test_the_budget_is_per_render_not_per_process():
    template = "{% for a in range(90000) %}{% endfor %}ok"
    for _ in range(3):
        assert render(template, {}) == "ok"
