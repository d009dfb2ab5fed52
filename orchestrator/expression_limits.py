"""Bounds on what one template rendering may build and how long it may run.

Why it looks like this:
- Templates render inside the Temporal workflow. An expression that builds a gigabyte string
  or loops 10**10 times holds the workflow task for ever: the deadlock detector fires on every
  retry, the worker's memory grows, and a cancel can never land. So every operation that can
  grow a value works out the size it *would* build and refuses before building it, and every
  loop step, item walked and recursive call spends from an iteration budget.
- Counting, not timing: workflow code must replay identically, so the budget counts operations
  (deterministic) rather than measuring wall-clock time.
- Building a value spends iterations too, one per 512 bytes built (scanning one: per KiB
  scanned), so a loop doing a 1 MiB operation on each step is bounded in time, and all the
  values one rendering builds come to at most about 50 MiB at the default budget, however
  many of them a list keeps. (Smaller would refuse ordinary accumulation loops such as
  `{% set ns.items = ns.items + [x] %}` over a few thousand items.)
- A loop step costs one iteration, plus one per four operations in its body; a call of a
  macro, `caller()`, block or recursive `loop()` costs CALL_COST: a heavy body or a
  recursion cannot make the budget's iterations take seconds.
- The budget of the rendering in progress lives in a ContextVar: workflows render on several
  worker threads at once through this one module. Outside a rendering (Jinja folds constant
  expressions when it compiles) the bounded operations refuse, so folding leaves them to
  render time, where the budget applies; `validate` never evaluates `'a' | center(10**9)`.
- Sizes are estimates made without building anything: characters for text, 8 bytes per list
  item, JSON-like sizes for structures. A refusal raises LimitExceeded, which `render` turns
  into a one-line ExpressionError.
"""

from __future__ import annotations

import contextvars
import dataclasses
import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator, Frame, operators, optimizeconst
    from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

__all__ = [
    "BoundedCodeGenerator",
    "BoundedEscapeFormatter",
    "BoundedFormatter",
    "Budget",
    "CALL_COST",
    "ExpressionLimits",
    "ITER_FILTER",
    "LimitExceeded",
    "MAX_INT_DIGITS",
    "SPEND_FILTER",
    "STARSTAR_FILTER",
    "STAR_FILTER",
    "check_int",
    "checked_add",
    "checked_concat",
    "checked_mod",
    "checked_mul",
    "checked_pow",
    "checked_slice",
    "close_budget",
    "compare",
    "compared",
    "counted",
    "current",
    "iterate",
    "no_budget",
    "number_too_big",
    "open_budget",
    "spend",
    "star",
    "starstar",
    "text_size",
    "walk_cost",
]

BYTES_SETTING = "REFLUX_EXPRESSION_MAX_BYTES"
ITERATIONS_SETTING = "REFLUX_EXPRESSION_MAX_ITERATIONS"
MAX_INT_DIGITS = 4300
"""Python's own int-to-text limit: a larger number cannot be written out as JSON."""
_MAX_INT_BITS = int(MAX_INT_DIGITS / 0.30103)
_ITEM_BYTES = 8  # what one list item (a reference) costs
BYTES_PER_ITERATION = 512
"""Building this many bytes costs one iteration (scanning costs one per KiB)."""
_HUGE = 1 << 62
# isinstance with a tuple is about three times faster than with `A | B`: these are hot.
_TEXT = (str, bytes)
_SEQ = (list, tuple)
_SEQ_OR_MAP = (list, tuple, dict)
_SEQ_OR_TEXT = (str, bytes, list, tuple)
_TEXT_OR_STRUCT = (str, bytes, list, tuple, dict)
_COLLECTION = (list, tuple, set, frozenset)
_STRUCT = (list, tuple, dict, set, frozenset)
_NUMBER = (int, float)


@dataclasses.dataclass(frozen=True)
class ExpressionLimits:
    """How much one rendering may build (`max_bytes`, per value and for the rendered whole)
    and how many iterations it may run (`max_iterations`, nested loops multiplied)."""

    max_bytes: int = 1024 * 1024
    max_iterations: int = 100_000


class LimitExceeded(Exception):
    """A rendering went over a limit. Never leaves the expressions package: `render` turns it
    into ExpressionError. Not a ValueError, so no Jinja or builtin code swallows it."""


class Budget:
    """What is left of one rendering's limits."""

    __slots__ = ("max_bytes", "max_iterations", "left", "written", "rendered")

    def __init__(self, limits: ExpressionLimits) -> None:
        self.max_bytes = limits.max_bytes
        self.max_iterations = limits.max_iterations
        self.left = limits.max_iterations
        self.written = 0  # text that `{{ … }}` outputs wrote, macros and blocks included
        self.rendered = 0  # size of the template results given back so far

    def spend(self, iterations: int) -> None:
        self.left -= iterations
        if self.left < 0:
            raise LimitExceeded(
                f"expression would run at least {self.max_iterations - self.left} iterations,"
                f" over the limit of {self.max_iterations} ({ITERATIONS_SETTING})"
            )

    def build(self, size: int, what: str = "a string") -> None:
        """Refuse to build a value of `size` bytes over the limit; pay for building it."""
        if size > self.max_bytes:
            raise self.too_big(size, what)
        if size >= BYTES_PER_ITERATION:
            self.spend(size // BYTES_PER_ITERATION)

    def too_big(self, size: int, what: str) -> LimitExceeded:
        shown = size if size < _HUGE else f"more than {_HUGE}"
        return LimitExceeded(
            f"expression would build {what} of {shown} bytes, over the limit of"
            f" {self.max_bytes} ({BYTES_SETTING})"
        )

    def write(self, size: int) -> None:
        self.written += size
        if self.written > self.max_bytes:
            raise self.too_big(self.written, "output")

    def give(self, size: int) -> None:
        self.rendered += size
        if self.rendered > self.max_bytes:
            raise self.too_big(self.rendered, "a value")


def number_too_big(bits: int) -> LimitExceeded:
    digits = int(bits * 0.30103) + 1
    return LimitExceeded(
        f"expression would build a number of {digits} digits, over the limit of"
        f" {MAX_INT_DIGITS} digits"
    )


def check_int(value: int) -> int:
    if value.bit_length() > _MAX_INT_BITS:
        raise number_too_big(value.bit_length())
    return value


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "reflux_expression_budget", default=None
)


def current() -> Budget:
    budget = _CURRENT.get()
    if budget is None:
        # Jinja is folding constants at compile time: leave this to render time.
        raise LimitExceeded("bounded operation outside a rendering")
    return budget


def open_budget(limits: ExpressionLimits) -> tuple[Budget, contextvars.Token[Budget | None]]:
    """Make a fresh budget the current one; give the token to `close_budget` after."""
    budget = Budget(limits)
    return budget, _CURRENT.set(budget)


def close_budget(token: contextvars.Token[Budget | None]) -> None:
    _CURRENT.reset(token)


class no_budget:  # noqa: N801 - a context manager, reads like one
    """For compiling: Jinja folds constant expressions then, and no bounded operation may run
    during that, so the compiled code is the same whichever rendering compiled it first."""

    def __enter__(self) -> None:
        self._token = _CURRENT.set(None)

    def __exit__(self, *_: object) -> None:
        _CURRENT.reset(self._token)


# ------------------------------------------------------------------------------ measuring


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None
    except OverflowError:  # range(10**100)
        return _HUGE


def counted(iterable: Any) -> Any:
    """`iterable`, paid for: a sized one is paid up front (len), a lazy one item by item."""
    budget = current()
    size = _length(iterable)
    if size is None:
        return _counting(iter(iterable), budget)
    budget.spend(size)
    return iterable


def _counting(iterator: Iterator[Any], budget: Budget) -> Iterator[Any]:
    for item in iterator:
        budget.left -= 1
        if budget.left < 0:
            budget.spend(0)
        yield item


def text_size(value: Any, budget: Budget) -> int:
    """About how long `str(value)` is, without building it; walking a structure is paid."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value)
    if kind is bool or value is None:
        return 5
    if kind is int:
        return int(value.bit_length() * 0.30103) + 2
    if kind is float:
        return 24
    if isinstance(value, _TEXT):
        return len(value)
    if not isinstance(value, _STRUCT):
        return 32
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            budget.spend(len(item))
            size += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _COLLECTION):
            budget.spend(len(item))
            size += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, _TEXT):
            size += len(item) + 2
        elif type(item) is int:
            size += int(item.bit_length() * 0.30103) + 1
        else:
            size += 8
        if size > budget.max_bytes:
            break
    return size


def walk_cost(value: Any, budget: Budget) -> None:
    """Pay for comparing `value` item by item (str: per KiB; structures: per item)."""
    if isinstance(value, _TEXT):
        budget.spend(len(value) >> 10)
    elif isinstance(value, _SEQ_OR_MAP):
        text_size(value, budget)


# ----------------------------------------------------------------------------- operators


def _is_seq(value: Any) -> bool:
    return isinstance(value, _SEQ_OR_TEXT)


def _seq_size(seq: Any, count: int) -> tuple[int, str]:
    if isinstance(seq, _TEXT):
        return len(seq) * count, "a string"
    return len(seq) * count * _ITEM_BYTES, "a list"


_FLOAT_MIX = frozenset({(float, float), (float, int), (int, float)})


def checked_add(left: Any, right: Any) -> Any:
    if (type(left), type(right)) in _FLOAT_MIX:
        return left + right
    if isinstance(left, _TEXT) and isinstance(right, _TEXT):
        current().build(len(left) + len(right))
    elif isinstance(left, _SEQ) and isinstance(right, _SEQ):
        current().build((len(left) + len(right)) * _ITEM_BYTES, "a list")
    result = left + right
    if type(result) is int and result.bit_length() > _MAX_INT_BITS:
        raise number_too_big(result.bit_length())
    return result


def checked_mul(left: Any, right: Any) -> Any:
    if (type(left), type(right)) in _FLOAT_MIX:
        return left * right
    if type(left) is int and type(right) is int:
        bits = left.bit_length() + right.bit_length()
        if bits > _MAX_INT_BITS + 1:
            raise number_too_big(bits - 1)
        return check_int(left * right)
    if isinstance(right, int) and _is_seq(left):
        current().build(*_seq_size(left, right))
    elif isinstance(left, int) and _is_seq(right):
        current().build(*_seq_size(right, left))
    return left * right


def checked_pow(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        at_least = (abs(left).bit_length() - 1) * right + 1
        if at_least > _MAX_INT_BITS:
            raise number_too_big(at_least)
        return check_int(left**right)
    return left**right


def checked_mod(left: Any, right: Any) -> Any:
    if not isinstance(left, _TEXT):
        return left % right
    budget = current()
    budget.build(_percent_size(left, right, budget))
    result = left % right
    budget.build(len(result))
    return result


def checked_concat(join: Any, parts: tuple[Any, ...]) -> Any:
    """`a ~ b ~ c`: measure the parts before joining them (`join` is Jinja's own)."""
    budget = current()
    size = 0
    for part in parts:
        size += text_size(part, budget)
    budget.build(size)
    return join(parts)


_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_HASHED = (dict, set, frozenset, type({}.keys()), type({}.items()))


def compare_cost(op: str, left: Any, right: Any, budget: Budget) -> None:
    if op == "in" or op == "notin":
        if isinstance(right, _TEXT):
            budget.spend(len(right) >> 10)
        elif isinstance(right, range):
            if type(left) is not int and type(left) is not bool:
                budget.spend(_length(right) or 0)  # a non-int is searched item by item
        elif not isinstance(right, _HASHED):
            size = _length(right)
            if size:
                budget.spend(size)
    elif isinstance(right, _TEXT_OR_STRUCT) and type(left) is type(right):
        walk_cost(right, budget)


def compare(op: str, left: Any, right: Any) -> Any:
    """One comparison `left <op> right`, paid for by what it scans."""
    if not (type(right) in _SCALARS and type(left) in _SCALARS):
        compare_cost(op, left, right, current())
    return _COMPARE[op](left, right)


def compared(op: str, right: Any) -> Any:
    """An operand of a chained comparison (`a < b < c`): paid for on its own."""
    if type(right) not in _SCALARS:
        compare_cost(op, None, right, current())
    return right


_SCALARS = frozenset({int, float, bool, type(None)})


def checked_slice(obj: Any, index: slice) -> Any:
    result = obj[index]
    if isinstance(result, _TEXT):
        current().build(len(result))
    elif isinstance(result, _SEQ):
        current().build(len(result) * _ITEM_BYTES, "a list")
    return result


# ---------------------------------------------------------------------------- formatting


def _digits_or_huge(text: str) -> int:
    return int(text) if len(text) <= 18 else _HUGE


def _number_size(value: Any) -> int:
    if isinstance(value, int):
        bits = abs(value).bit_length()
        return bits + bits // 3 + 8  # binary with grouping is the widest an int prints
    return 450  # the widest float, with grouping


def _percent_size(fmt: str | bytes, args: Any, budget: Budget) -> int:
    """The most `fmt % args` could hold, read off the conversion specs: width, precision
    (also `*`), and each value's own size. Bad specs raise before anything is built."""
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    if "%" not in text:
        return len(text)
    single = not isinstance(args, tuple)
    positional = (args,) if single else args
    is_map = single and hasattr(args, "__getitem__") and not isinstance(args, _TEXT)
    mapping = args if is_map else None
    size, index, i, end = len(text), 0, 0, len(text)

    def number(i: int, index: int) -> tuple[int, int, int]:
        if i < end and text[i] == "*":
            if index >= len(positional):
                raise TypeError("not enough arguments for format string")
            width = positional[index]
            if not isinstance(width, int):
                raise TypeError("* wants int")
            return abs(width), i + 1, index + 1
        j = i
        while j < end and "0" <= text[j] <= "9":
            j += 1
        return (_digits_or_huge(text[i:j]) if j > i else 0), j, index

    while size <= budget.max_bytes:
        i = text.find("%", i)
        if i < 0:
            break
        i += 1
        key = None
        if i < end and text[i] == "(":
            depth, j = 1, i + 1
            while j < end and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            key, i = text[i + 1 : j - 1], j
        while i < end and text[i] in "-+ #0":
            i += 1
        width, i, index = number(i, index)
        precision = 0
        if i < end and text[i] == ".":
            precision, i, index = number(i + 1, index)
        while i < end and text[i] in "hlL":
            i += 1
        conversion = text[i] if i < end else ""
        i += 1
        if conversion == "%":
            size += max(width, 1)
            continue
        if key is not None:
            if mapping is None:
                raise TypeError("format requires a mapping")
            value = mapping[key]
        else:
            if index >= len(positional):
                raise TypeError("not enough arguments for format string")
            value, index = positional[index], index + 1
        if conversion in "sra" and conversion:
            own = text_size(value, budget) + 2
            own = min(own, precision) if precision else own
        elif conversion == "c":
            own = 1
        else:
            own = _number_size(value) + precision
        size += max(width, own)
    return size


class _BoundedFields:
    """`str.format` that adds up each field's size (widths, precisions, values) first."""

    budget: Budget
    size: int

    def vformat(self, format_string: str, args: Any, kwargs: Mapping[str, Any]) -> str:
        self.size = len(format_string)
        self.budget.build(self.size)
        result = super().vformat(format_string, args, kwargs)  # type: ignore[misc]
        self.budget.build(len(result))
        return result

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion:
            self.budget.build(text_size(value, self.budget) + 2)
        return super().convert_field(value, conversion)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        extra = 0
        digits = ""
        for char in format_spec + " ":
            if "0" <= char <= "9":
                digits += char
            elif digits:
                extra += _digits_or_huge(digits)
                digits = ""
        own = _number_size(value) if _is_number(value) else text_size(value, self.budget)
        self.size += own + extra
        self.budget.build(self.size)
        return super().format_field(value, format_spec)  # type: ignore[misc]


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


class BoundedFormatter(_BoundedFields, SandboxedFormatter):
    def __init__(self, env: Any, budget: Budget) -> None:
        super().__init__(env)
        self.budget = budget


class BoundedEscapeFormatter(_BoundedFields, SandboxedEscapeFormatter):
    def __init__(self, env: Any, budget: Budget, escape: Any) -> None:
        super().__init__(env, escape=escape)
        self.budget = budget


# ------------------------------------------------------------------------- code generation

ITER_FILTER = "reflux iterate"
SPEND_FILTER = "reflux spend"
STAR_FILTER = "reflux star"
STARSTAR_FILTER = "reflux starstar"
"""Internal filters the code generator wraps around loop iterables and `*args`/`**kwargs`,
or calls at the top of a loop body or macro; their names are not identifiers, so a template
cannot spell them."""

CALL_COST = 10
"""Iterations a macro, `caller()`, block or recursive `loop()` call costs: calling one takes
about as long as ten simple loop steps."""
OPS_PER_ITERATION = 4
"""A loop step, or a call, pays one more iteration for each this many operations in its body,
so that a heavy body cannot make 100 000 steps take seconds."""

_FREE = (nodes.Const, nodes.TemplateData, nodes.Name, nodes.Keyword, nodes.Pair, nodes.Operand)
_CALLED = (nodes.Macro, nodes.CallBlock, nodes.Block)


def _wrap(node: nodes.Expr, name: str) -> nodes.Filter:
    if isinstance(node, nodes.Filter) and node.name == name:
        return node
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def _operations(body: list[nodes.Node]) -> int:
    """Operations one pass over `body` runs, leaving out nested loop bodies and macros,
    which pay for themselves."""
    count, stack = 0, list(body)
    while stack:
        node = stack.pop()
        if not isinstance(node, _FREE):
            count += 1
        if isinstance(node, nodes.For):
            stack.extend(node.iter_child_nodes(exclude=("body", "else_")))
        elif isinstance(node, nodes.CallBlock):
            stack.append(node.call)
        elif not isinstance(node, _CALLED):
            stack.extend(node.iter_child_nodes())
    return count


def _charge_at_top(body: list[nodes.Node], iterations: int, lineno: int) -> None:
    first = body[0] if body else None
    if isinstance(first, nodes.ExprStmt) and isinstance(first.node, nodes.Filter):
        if first.node.name == SPEND_FILTER:
            return
    if iterations > 0:
        charge = nodes.Filter(nodes.Const(iterations), SPEND_FILTER, [], [], None, None)
        body.insert(0, nodes.ExprStmt(charge, lineno=lineno))
        charge.set_lineno(lineno)


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with the few places Python would loop or build unchecked
    routed through the environment: `{% for %}` iterables, `*args`/`**kwargs`, `~`,
    comparisons (`in` scans) and slices."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = _wrap(loop.iter, ITER_FILTER)
            test = [loop.test] if loop.test is not None else []
            heavy = _operations([*loop.body, *test]) // OPS_PER_ITERATION
            _charge_at_top(loop.body, heavy, loop.lineno)
        for called in node.find_all(_CALLED):
            heavy = _operations(called.body) // OPS_PER_ITERATION
            _charge_at_top(called.body, CALL_COST + heavy, called.lineno)
        for call in list(node.find_all((nodes.Call, nodes.Filter, nodes.Test))):
            if call.dyn_args is not None:
                call.dyn_args = _wrap(call.dyn_args, STAR_FILTER)
            if call.dyn_kwargs is not None:
                call.dyn_kwargs = _wrap(call.dyn_kwargs, STARSTAR_FILTER)
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    @optimizeconst
    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        if len(node.ops) == 1:
            self.write(f"environment.compare({node.ops[0].op!r}, ")
            self.visit(node.expr, frame)
            self.write(", ")
            self.visit(node.ops[0].expr, frame)
            self.write(")")
            return
        self.write("(")
        self.visit(node.expr, frame)
        for op in node.ops:
            self.write(f" {operators[op.op]} environment.compared({op.op!r}, ")
            self.visit(op.expr, frame)
            self.write(")")
        self.write(")")

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.checked_slice(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")


def iterate(value: Iterable[Any]) -> Any:
    """A `{% for %}` iterable, paid for (the hot spelling of `counted`)."""
    budget = current()
    try:
        budget.spend(len(value))  # type: ignore[arg-type]
    except TypeError:
        return _counting(iter(value), budget)
    except OverflowError:
        budget.spend(_HUGE)
    return value


def spend(iterations: int) -> None:
    current().spend(iterations)


def star(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(counted(value))


def starstar(value: Any) -> Any:
    current().spend(_length(value) or 0)
    return value
