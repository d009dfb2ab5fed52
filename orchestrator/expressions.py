"""Templates in workflow values: sandboxed Jinja2, rendered inside the Temporal workflow.

Why it looks like this:
- Rendering happens in workflow code on every step, so it must be deterministic and cheap:
  no I/O, no threads, no clock, no `random` filter or `lipsum` global; compiled templates
  are cached by source text (the only module state).
- A string that is exactly one `{{ … }}` keeps the expression's native type, so
  `"{{ inputs.count }}"` gives an int and `"{{ steps.a.output }}"` a dict.
- `references()` reads the Jinja AST, not the text, so `validate` can name unknown inputs
  and steps, and the engine can derive the dependency graph from templates alone.
- On a dict, `x.key` prefers the key over a dict method: JSON with an `items` or `keys` field
  is common in node outputs.
- Errors name the path the author wrote ("'steps.fetch' has no attribute 'outptu'"); that
  explanation is worked out only after a render failed, never on the hot path.
- Every rendering is bounded (`ExpressionLimits`: bytes built, iterations run), because a
  template that builds a gigabyte or loops 10**10 times would hold the workflow task for
  ever. The bounds live in `expression_limits` (budget, operators, code generator) and
  `expression_builtins` (filters, tests, methods); this module wires them into the sandbox.
  Any failure while rendering, of any kind, leaves as one ExpressionError line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from temporalio import workflow

# jinja2 makes a threading.Lock at import, which the workflow sandbox forbids: load it
# passed through, so this module imports inside a workflow even when not passed through.
with workflow.unsafe.imports_passed_through():
    from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
    from jinja2.exceptions import SecurityError, UndefinedError
    from jinja2.parser import Parser
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace
    from markupsafe import Markup

from infra import ExpressionError
from nodes import placeholder
from orchestrator import expression_limits as limits_
from orchestrator.expression_builtins import (
    bounded_dumps,
    bounded_filters,
    bounded_tests,
    check_call,
    measure,
)
from orchestrator.expression_limits import (
    BoundedCodeGenerator,
    BoundedEscapeFormatter,
    BoundedFormatter,
    Budget,
    ExpressionLimits,
    LimitExceeded,
    close_budget,
    current,
    no_budget,
    open_budget,
)

__all__ = [
    "CONTEXT_NAMES",
    "CompiledTemplate",
    "ExpressionLimits",
    "References",
    "compile_template",
    "is_template",
    "is_truthy",
    "iter_templates",
    "references",
    "render",
    "secret_placeholder",
]

CONTEXT_NAMES = frozenset({"inputs", "steps", "item", "index", "run", "secret"})
"""Top-level names a template may read (plus Jinja's globals such as `range`)."""

STEP_ATTRIBUTES = ("output", "status")

_FALSE_STRINGS = frozenset({"", "false", "0", "none", "null"})
_RENDERABLE = (str, dict, list, tuple)
_SEQ = (list, tuple)
_LISTLIKE = (list, tuple, set, frozenset, range)
_NUMBER = (int, float)
_DEFAULT_LIMITS = ExpressionLimits()


def secret_placeholder(name: str) -> str:
    """What `secret('NAME')` renders to outside a run (a run renders its own nonce in, see
    `nodes.secrets.placeholder`); the node runtime swaps in the value at call time."""
    return placeholder(name)


_BINOPS = {
    "+": limits_.checked_add,
    "*": limits_.checked_mul,
    "**": limits_.checked_pow,
    "%": limits_.checked_mod,
}


_SHORT_OUTPUT = frozenset({str, float, bool, type(None)})
_METHODS = (types.MethodType, types.BuiltinMethodType)


def _finalize(value: Any) -> Any:
    """What a `{{ … }}` writes that is not yet text (a list, a long number) is about to be
    turned into text: count that against the output limit first. Text itself is only
    referenced until the join, which _concat measures; a float or a short int prints short."""
    kind = type(value)
    if kind in _SHORT_OUTPUT or (kind is int and value.bit_length() < 64):
        return value
    budget = current()
    budget.write(_output_size(value, budget))
    return value


def _output_size(value: Any, budget: Budget) -> int:
    if type(value) is int:
        return (value.bit_length() >> 1) + 2  # at least the digits it has
    return limits_.text_size(value, budget)


def _concat(parts: Any) -> str:
    """Join what a template (or a macro, a block) wrote, refusing before the join. Holding
    the parts first is safe: each `{{ … }}` output was measured in _finalize, the rest are
    the template's own literal text, referenced, not copied."""
    kept = parts if type(parts) is list else list(parts)
    size = sum(map(len, kept))
    if size > current().max_bytes:
        raise current().too_big(size, "output")
    return "".join(kept)


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset(_BINOPS)
    concat = staticmethod(_concat)  # type: ignore[assignment]
    checked_concat = staticmethod(limits_.checked_concat)
    checked_slice = staticmethod(limits_.checked_slice)
    compare = staticmethod(limits_.compare)
    compared = staticmethod(limits_.compared)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        if type(obj) is Namespace and attribute[:1] != "_":
            # What a template stored with `{% set ns.x = … %}`: the sandbox's checks (ABC
            # isinstance tests) made reading it most of the cost of a namespace loop.
            try:
                return getattr(obj, attribute)
            except AttributeError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        return _BINOPS[operator_](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = current()
        args, measured = check_call(budget, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return measure(budget, result) if measured else result

    def wrap_str_format(self, value: Any) -> Any:
        """`str.format`/`format_map`, with each field's width, precision and value measured."""
        if not isinstance(value, _METHODS) or value.__name__ not in ("format", "format_map"):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            budget = current()
            if isinstance(text, Markup):
                formatter: Any = BoundedEscapeFormatter(self, budget, escape=text.escape)
            else:
                formatter = BoundedFormatter(self, budget)
            return type(text)(formatter.vformat(text, args, kwargs))

        return functools.update_wrapper(bounded_format, value)


_ENV = _Environment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_finalize,
)
_ENV.filters = bounded_filters(_ENV.filters)
_ENV.filters.pop("random", None)
_ENV.tests = bounded_tests(_ENV.tests)
_ENV.globals.pop("lipsum", None)
_ENV.globals["range"] = range  # lazy; iterating it is what is paid for
_ENV.globals["secret"] = secret_placeholder
_ENV.policies["json.dumps_function"] = bounded_dumps
_ALLOWED_NAMES = CONTEXT_NAMES | frozenset(_ENV.globals)


def is_template(text: str) -> bool:
    """Whether `text` holds template syntax at all; plain strings are returned as they are."""
    return "{{" in text or "{%" in text or "{#" in text


# ---------------------------------------------------------------------------------- compile


@dataclasses.dataclass(frozen=True)
class _Compiled:
    source: str
    ast: nodes.Template
    native: bool  # the string is one `{{ … }}`: `template` sets `result` to its value
    template: Any  # jinja2 Template
    passthrough: bool = False  # one `{{ a.b['c'] }}`: gives a value that exists already


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> _Compiled:
    with no_budget():
        return _compile_now(source)


def _compile_now(source: str) -> _Compiled:
    try:
        ast = _ENV.parse(source)
        inner = _single_expression(source, ast)
        if inner is not None:
            through = _is_path(next(n for n in ast.body[0].nodes if not _is_blank_data(n)))
            return _Compiled(source, ast, True, _expression_template(inner), through)
        return _Compiled(source, ast, False, _template(ast))
    except TemplateSyntaxError as exc:
        where = f" (line {exc.lineno} of the template)" if "\n" in source.strip() else ""
        raise ExpressionError(
            f"template syntax error: {_clean(exc.message)}{where} in {_snippet(source)}"
        ) from None
    except Exception as exc:  # RecursionError on deep nesting, MemoryError, SyntaxError…
        reason = _reason(exc)
        raise ExpressionError(f"template cannot compile: {reason} in {_snippet(source)}") from None


def _expression_template(inner: str) -> Any:
    """What `Environment.compile_expression` builds, kept as the Template it wraps so that
    rendering reads `result` off the context without copying the context twice."""
    parser = Parser(_ENV, inner, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    expr.set_environment(_ENV)
    body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    return _template(nodes.Template(body, lineno=1))


def _template(ast: nodes.Template) -> Any:
    template = _ENV.from_string(ast)
    # Jinja layers a template's globals over the environment's in a ChainMap so that later
    # changes show through; ours never change, and copying a ChainMap into every new render
    # context was most of the cost of a render.
    template.globals = dict(template.globals)
    return template


def _single_expression(source: str, ast: nodes.Template) -> str | None:
    """The expression inside `source` when it is exactly one `{{ … }}`, give or take spaces."""
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    body = ast.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts = [n for n in body[0].nodes if not _is_blank_data(n)]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    inner = stripped[2:-2]
    # Whitespace control markers belong to the delimiters, not to the expression.
    if inner[:1] in "-+":
        inner = inner[1:]
    if inner[-1:] in "-+":
        inner = inner[:-1]
    return inner


def _is_path(node: nodes.Node) -> bool:
    """`a.b['c'][0]`: reads a value that exists, builds nothing. A step passing another's
    output on as it is may pass any size (payloads over a few KiB go by reference): the byte
    limit is on what expressions build."""
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            return False
        node = node.node
    return isinstance(node, nodes.Name)


def _ignore(size: int) -> None:
    pass


def _is_blank_data(node: nodes.Node) -> bool:
    return isinstance(node, nodes.TemplateData) and not node.data.strip()


class CompiledTemplate:
    """A YAML value with every template inside it compiled; `render` fills it in."""

    def __init__(self, value: Any) -> None:
        self.value = value
        for _, source in iter_templates(value):
            _compile(source)

    def render(self, context: Mapping[str, Any], *, limits: ExpressionLimits | None = None) -> Any:
        return render(self.value, context, limits=limits)

    @property
    def references(self) -> References:
        return references(self.value)


def compile_template(value: Any) -> CompiledTemplate:
    """Compile every template in `value` (any YAML value); ExpressionError on syntax errors."""
    return CompiledTemplate(value)


def iter_templates(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, source) of every string holding template syntax inside `value`."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_templates(item, (*path, key))
    elif isinstance(value, _SEQ):
        for index, item in enumerate(value):
            yield from iter_templates(item, (*path, index))


# ----------------------------------------------------------------------------------- render


def render(
    value: Any, context: Mapping[str, Any], *, limits: ExpressionLimits | None = None
) -> Any:
    """Fill in the templates inside `value`; see the module docstring for the typing rule.
    `limits` bound the whole call: bytes per value and for the result, iterations in all."""
    if not isinstance(value, _RENDERABLE):
        return value
    budget, token = open_budget(limits or _DEFAULT_LIMITS)
    try:
        return _render(value, context, budget)
    finally:
        close_budget(token)


def _render(value: Any, context: Mapping[str, Any], budget: Budget) -> Any:
    if isinstance(value, str):
        return _render_string(value, context, budget) if is_template(value) else value
    if isinstance(value, dict):
        return {key: _render(item, context, budget) for key, item in value.items()}
    if isinstance(value, _SEQ):
        return [_render(item, context, budget) for item in value]
    return value


def _render_string(source: str, context: Mapping[str, Any], budget: Budget) -> Any:
    compiled = _compile(source)
    try:
        # Template.render, without its traceback rewriting: errors become one line anyway.
        template = compiled.template
        jinja_context = template.new_context(context)
        written = template.root_render_func(jinja_context)
        if compiled.native:
            for _ in written:
                pass
            result = jinja_context.vars["result"]
        else:
            result = _concat(written)
        return _to_plain(result, budget, _ignore if compiled.passthrough else budget.give)
    except LimitExceeded as exc:
        raise ExpressionError(f"{exc} in {_snippet(source)}") from None
    except UndefinedError as exc:
        reason = _explain(compiled, context, exc) or _clean(exc.message or str(exc))
        raise ExpressionError(f"{reason} in {_snippet(source)}") from None
    except SecurityError as exc:
        raise ExpressionError(
            f"not allowed in templates: {_clean(str(exc))} in {_snippet(source)}"
        ) from None
    except ExpressionError as exc:
        raise ExpressionError(f"{exc} in {_snippet(source)}") from None
    except Exception as exc:
        raise ExpressionError(f"{_reason(exc)} in {_snippet(source)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "expression nests or recurses too deeply"
    if isinstance(exc, MemoryError):
        return "expression ran out of memory"
    return f"{type(exc).__name__}: {_clean(str(exc))}"


_JSON_KEYS = (str, int, float, bool, type(None))


def _to_plain(value: Any, budget: Budget, give: Callable[[int], None]) -> Any:
    """Plain JSON-like data: an Undefined fails here, generators and tuples become lists.
    `give` measures what the template gives back (about its JSON size) against the byte
    limit: references to one big value cost what writing them out would."""
    kind = type(value)
    if kind is str:
        give(len(value))
        return value
    if kind is int:
        limits_.check_int(value)  # a bigger number cannot be written as JSON
        give(8)
        return value
    if kind is float or kind is bool or value is None:
        give(8)
        return value
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        text = str.__str__(value)
        give(len(text))
        return text
    if isinstance(value, dict):
        give(2 + 2 * len(value))
        plain = {}
        for key, item in value.items():
            if not isinstance(key, _JSON_KEYS):
                raise ExpressionError(f"expression gives a map with a {_kind(key)} key")
            give(limits_.text_size(key, budget) + 2)
            plain[key] = _to_plain(item, budget, give)
        return plain
    if isinstance(value, _LISTLIKE):
        give(2 + 2 * (len(value) if not isinstance(value, range) else _range_size(value)))
        return [_to_plain(item, budget, give) for item in value]
    if isinstance(value, _NUMBER):  # subclasses
        plain = value.__index__() if isinstance(value, int) else float(value)
        return _to_plain(plain, budget, give)
    if _is_iterator(value) or isinstance(value, _VIEWS):
        return [_to_plain(item, budget, give) for item in limits_.counted(value)]
    raise ExpressionError(f"expression gives {_kind(value)}, which is not JSON data")


def _range_size(value: range) -> int:
    try:
        return len(value)
    except OverflowError:
        return 1 << 62


_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))


def _is_iterator(value: Any) -> bool:
    return hasattr(value, "__next__") and hasattr(value, "__iter__")


def _clean(message: str | None) -> str:
    return (message or "").strip().rstrip(".")


def _snippet(source: str) -> str:
    text = " ".join(source.split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def is_truthy(value: Any) -> bool:
    """Whether an `if` result lets the step run: Jinja truthiness, and the strings
    "false", "0", "none", "null" and "" (any case, spaces ignored) are false too."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    if isinstance(value, Undefined):
        return False
    return bool(value)


# ------------------------------------------------------------------------------- references


@dataclasses.dataclass(frozen=True)
class References:
    """What templates read. `steps` maps a step id to the attributes read after it
    ("output", "status", or a misspelling `validate` reports); a bare `steps.x` is "output"."""

    inputs: frozenset[str] = frozenset()
    steps: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    item: bool = False
    index: bool = False
    run: bool = False
    names: frozenset[str] = frozenset()
    """Every free top-level name read, known or not."""
    dynamic_inputs: bool = False
    """`inputs[expr]` with a computed key."""
    dynamic_steps: bool = False
    """`steps` read whole or by a computed key: the step ids read are not all known."""
    secrets: frozenset[str] = frozenset()

    @property
    def step_ids(self) -> frozenset[str]:
        return frozenset(self.steps)

    @property
    def unknown_names(self) -> frozenset[str]:
        return self.names - _ALLOWED_NAMES

    def merge(self, other: References) -> References:
        steps = {k: v | other.steps.get(k, frozenset()) for k, v in self.steps.items()}
        steps.update({k: v for k, v in other.steps.items() if k not in steps})
        return References(
            inputs=self.inputs | other.inputs,
            steps=steps,
            item=self.item or other.item,
            index=self.index or other.index,
            run=self.run or other.run,
            names=self.names | other.names,
            dynamic_inputs=self.dynamic_inputs or other.dynamic_inputs,
            dynamic_steps=self.dynamic_steps or other.dynamic_steps,
            secrets=self.secrets | other.secrets,
        )


def references(value: Any) -> References:
    """What every template inside `value` reads; ExpressionError on a syntax error."""
    found = References()
    for _, source in iter_templates(value):
        found = found.merge(_references_of(source))
    return found


@functools.lru_cache(maxsize=4096)
def _references_of(source: str) -> References:
    ast = _compile(source).ast
    free = frozenset(meta.find_undeclared_variables(ast))
    walk = _ReferenceWalk(free)
    walk.visit(ast)
    return References(
        inputs=frozenset(walk.inputs),
        steps={k: frozenset(v) for k, v in walk.steps.items()},
        item="item" in free,
        index="index" in free,
        run="run" in free,
        names=free,
        dynamic_inputs=walk.dynamic_inputs,
        dynamic_steps=walk.dynamic_steps,
        secrets=frozenset(walk.secrets),
    )


Accessor = tuple[str, Any]  # ("attr" | "item", key); key None when computed at run time


def _chain(node: nodes.Node) -> tuple[nodes.Node, list[Accessor], list[nodes.Node]]:
    """`a.b['c'][x]` -> (Name a, [attr b, item c, item None], [x])."""
    accessors: list[Accessor] = []
    computed: list[nodes.Node] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            accessors.append(("attr", node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            accessors.append(("item", node.arg.value))
        else:
            accessors.append(("item", None))
            computed.append(node.arg)
        node = node.node
    accessors.reverse()
    return node, accessors, computed


class _ReferenceWalk:
    def __init__(self, free: frozenset[str]) -> None:
        self.free = free
        self.inputs: set[str] = set()
        self.steps: dict[str, set[str]] = {}
        self.secrets: set[str] = set()
        self.dynamic_inputs = False
        self.dynamic_steps = False

    def visit(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            base, accessors, computed = _chain(node)
            if isinstance(base, nodes.Name) and base.ctx == "load":
                self._read(base.name, accessors)
            else:
                self.visit(base)
            for child in computed:
                self.visit(child)
            return
        if isinstance(node, nodes.Name) and node.ctx == "load":
            self._read(node.name, [])
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            if node.node.name == "secret" and node.args and isinstance(node.args[0], nodes.Const):
                self.secrets.add(str(node.args[0].value))
        for child in node.iter_child_nodes():
            self.visit(child)

    def _read(self, name: str, accessors: list[Accessor]) -> None:
        if name not in self.free:
            return
        keys = [key for _, key in accessors]
        if name == "inputs" and keys:
            if isinstance(keys[0], str):
                self.inputs.add(keys[0])
            else:
                self.dynamic_inputs = True
        elif name == "steps":
            if not keys or not isinstance(keys[0], str):
                self.dynamic_steps = True
                return
            attribute = keys[1] if len(keys) > 1 and isinstance(keys[1], str) else "output"
            self.steps.setdefault(keys[0], set()).add(attribute)


# ----------------------------------------------------------------------- error explanation


def _explain(compiled: _Compiled, context: Mapping[str, Any], exc: UndefinedError) -> str | None:
    """Re-walk the chains the template reads to say which path failed, in the author's words."""
    jinja_message = exc.message or ""
    first: str | None = None
    free = meta.find_undeclared_variables(compiled.ast)
    for node in compiled.ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        base, accessors, _ = _chain(node)
        if not isinstance(base, nodes.Name) or base.name not in free:
            continue
        reason, failed_key = _walk_chain(base.name, accessors, context)
        if reason is None:
            continue
        if f"'{failed_key}'" in jinja_message:
            return reason
        first = first or reason
    return first


def _walk_chain(
    name: str, accessors: list[Accessor], context: Mapping[str, Any]
) -> tuple[str | None, Any]:
    if name not in context:
        if name in _ENV.globals:
            return None, None
        return f"'{name}' is undefined{_suggest(name, [*context, *_ENV.globals])}", name
    value: Any = context[name]
    path = name
    for kind, key in accessors:
        if key is None:
            return None, None
        if isinstance(value, dict):
            if key in value:
                value = value[key]
            else:
                noun = "attribute" if kind == "attr" else "key"
                keys = [k for k in value if isinstance(k, str)]
                return f"'{path}' has no {noun} '{key}'{_suggest(str(key), keys)}", key
        elif isinstance(value, _SEQ) and isinstance(key, int):
            if -len(value) <= key < len(value):
                value = value[key]
            else:
                return f"'{path}' has no item {key} (it has {len(value)})", key
        elif value is None:
            return f"'{path}' is null, so it has no attribute '{key}'", key
        else:
            found = _ENV.getattr(value, key) if kind == "attr" else _ENV.getitem(value, key)
            if isinstance(found, Undefined):
                kind_name = _kind(value)
                return f"'{path}' ({kind_name}) has no attribute '{key}'", key
            value = found
        path += f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
    return None, None


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, _NUMBER):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _SEQ):
        return "list"
    if isinstance(value, bytes):
        return "bytes"
    return type(value).__name__
