"""Jinja's filters, tests and the str/bytes/int/dict methods a template can call, bounded.

Why it looks like this:
- Each builtin that can grow a value (`center`, `indent`, `format`, `replace`, `join`,
  `str.zfill`, `int.to_bytes`, …) works out the size of its result from its arguments and
  refuses before building it; each one that walks its input (`map`, `sort`, `sum`, `list`, …)
  pays for the items it walks. The estimates live in `expression_limits`; this module only
  knows which builtin takes which argument.
- The originals do the real work, so behaviour stays Jinja's; a wrapper keeps the original's
  `pass_context`/`pass_environment` marker so Jinja passes it the same first argument.
- Builtins that neither grow nor walk (`length`, `first`, `default`, `abs`, …) stay as they
  are, and the checks on method calls happen only for receivers that are text, bytes, numbers,
  types or dict views, not on the hot path of reading data.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from temporalio import workflow

from orchestrator.expression_limits import (
    CALL_COST,
    ITER_FILTER,
    MAX_INT_DIGITS,
    SPEND_FILTER,
    STAR_FILTER,
    STARSTAR_FILTER,
    Budget,
    check_int,
    checked_add,
    checked_mod,
    compare,
    counted,
    current,
    iterate,
    number_too_big,
    spend,
    star,
    starstar,
    text_size,
    walk_cost,
)

with workflow.unsafe.imports_passed_through():
    from jinja2 import filters as jf
    from jinja2.filters import make_attrgetter
    from jinja2.runtime import LoopContext
    from jinja2.utils import Namespace, pass_environment, pass_eval_context

__all__ = ["bounded_dumps", "bounded_filters", "bounded_tests", "check_call", "measure"]

Filter = Callable[..., Any]
_TEXT = (str, bytes)
_SEQ = (list, tuple)
_SEQ_OR_MAP = (list, tuple, dict)


def _keep_marker(original: Filter, wrapper: Filter) -> Filter:
    functools.update_wrapper(wrapper, original)
    return wrapper


def _value_at(original: Filter) -> int:
    """Where the filtered value sits in the arguments: after context/environment, if any."""
    return 1 if getattr(original, "jinja_pass_arg", None) is not None else 0


def _walking(original: Filter) -> Filter:
    at = _value_at(original)

    def bounded(*args: Any, **kwargs: Any) -> Any:
        return original(*args[:at], counted(args[at]), *args[at + 1 :], **kwargs)

    return _keep_marker(original, bounded)


def _text(original: Filter) -> Filter:
    """Filters whose result is at most a few times their input: paid and measured."""
    at = _value_at(original)

    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        value = args[at] if len(args) > at else None
        if isinstance(value, _TEXT):
            budget.spend(len(value) >> 10)
        else:
            budget.build(text_size(value, budget))
        result = original(*args, **kwargs)
        if isinstance(result, str):
            budget.build(len(result))
        return result

    return _keep_marker(original, bounded)


def _replaced_size(s: Any, old: Any, new: Any, count: Any, budget: Budget) -> int:
    budget.spend(len(s) >> 10)
    found = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * max(len(new) - len(old), 0)


def _wordwrap_size(s: str, width: int, wrapstring: str, budget: Budget) -> int:
    width = max(width, 1)
    lines = min(len(s) + 1, 2 * len(s) // width + s.count("\n") + 1)
    # textwrap re-slices a word longer than the width on every line it breaks off.
    copied = sum(len(w) ** 2 // width for w in re.findall(rf"\S{{{width + 1},}}", s))
    budget.spend(lines + (copied >> 10))
    return len(s) + lines * len(wrapstring)


_WALKING = {
    "map": jf.sync_do_map,
    "select": jf.sync_do_select,
    "reject": jf.sync_do_reject,
    "selectattr": jf.sync_do_selectattr,
    "rejectattr": jf.sync_do_rejectattr,
    "unique": jf.sync_do_unique,
    "sort": jf.do_sort,
    "dictsort": jf.do_dictsort,
    "groupby": jf.sync_do_groupby,
    "list": jf.sync_do_list,
    "min": jf.do_min,
    "max": jf.do_max,
    "items": jf.do_items,
}
_TEXT_FILTERS = (
    "capitalize",
    "lower",
    "upper",
    "title",
    "trim",
    "striptags",
    "escape",
    "e",
    "forceescape",
    "string",
    "pprint",
    "truncate",
    "wordcount",
    "safe",
)


def _center(value: Any, width: Any = 80) -> Any:
    if isinstance(width, int):
        budget = current()
        budget.build(max(width, text_size(value, budget)))
    return jf.do_center(value, width)


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if isinstance(s, str):
        current().build(len(s) + max(unit, 0) * (s.count("\n") + 2))
    return jf.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(env: Any, s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> Any:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    if isinstance(s, str) and isinstance(width, int):
        budget = current()
        newline = wrapstring if wrapstring is not None else env.newline_sequence
        budget.build(_wordwrap_size(s, width, str(newline), budget))
    return jf.do_wordwrap(env, s, width, *args, **kwargs)


def _format(value: Any, *args: Any, **kwargs: Any) -> Any:
    if args and kwargs:
        return jf.do_format(value, *args, **kwargs)  # Jinja's own error
    return checked_mod(str(value), kwargs or args)


@pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
    budget = current()
    budget.build(_replaced_size(str(s), str(old), str(new), count, budget))
    return jf.do_replace(eval_ctx, s, old, new, count)


def _joined_size(items: list[Any], separator: Any, budget: Budget) -> int:
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        size += text_size(item, budget)
        if size > budget.max_bytes:
            break
    return size


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
    budget = current()
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = list(counted(value))
    budget.build(_joined_size(items, str(d), budget))
    return jf.sync_do_join(eval_ctx, items, d)


@pass_environment
def _sum(env: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if attribute is not None:
        iterable = map(make_attrgetter(env, attribute), iterable)
    if isinstance(start, str):
        raise TypeError("sum() can't sum strings [use ''.join(seq) instead]")
    total = start
    for item in counted(iterable):
        total = checked_add(total, item)
    return total


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> Any:
    if fill_with is not None and isinstance(linecount, int):
        current().spend(max(linecount, 0))
    return jf.do_batch(counted(value), linecount, fill_with)


def _slice(value: Any, slices: Any, fill_with: Any = None) -> Any:
    if isinstance(slices, int):
        current().spend(max(slices, 0))
    return jf.sync_do_slice(counted(value), slices, fill_with)


def _reverse(value: Any) -> Any:
    if isinstance(value, str):
        current().build(len(value))
        return value[::-1]
    return jf.do_reverse(counted(value))


@pass_eval_context
def _urlize(eval_ctx: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
    names = ("trim_url_limit", "nofollow", "target", "rel", "extra_schemes")
    given = {**dict(zip(names, args, strict=False)), **kwargs}
    budget = current()
    if isinstance(value, str):
        links = min(len(value) // 2 + 1, sum(map(value.count, (".", "@", ":"))))
        escaped = len(value) + sum(map(value.count, "&\"'<>")) * 4
        extra = sum(len(str(given.get(k) or "")) for k in ("target", "rel")) + 64
        budget.build((2 if links else 1) * escaped + links * extra)
        if given.get("extra_schemes") is not None:
            schemes = list(counted(given["extra_schemes"]))
            given["extra_schemes"] = schemes
            budget.spend(len(schemes) * (len(value) // 32 + 1))
    result = jf.do_urlize(eval_ctx, value, **given)
    budget.build(len(result))
    return result


def _round(value: Any, precision: Any = 0, method: Any = "common") -> Any:
    if isinstance(precision, int) and abs(precision) > MAX_INT_DIGITS:
        raise number_too_big(int(abs(precision) / 0.30103))
    return jf.do_round(value, precision, method)


@pass_eval_context
def _tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
    result = jf.do_tojson(eval_ctx, value, indent)  # json.dumps is `bounded_dumps`
    current().build(len(result))
    return result


def bounded_filters(filters: Mapping[str, Filter]) -> dict[str, Filter]:
    """Jinja's filters with every one that can grow a value or walk its input bounded."""
    bounded = dict(filters)
    bounded.update({name: _walking(original) for name, original in _WALKING.items()})
    bounded.update({name: _text(filters[name]) for name in _TEXT_FILTERS})
    bounded["xmlattr"] = _text(filters["xmlattr"])
    bounded["urlencode"] = _text(filters["urlencode"])
    bounded.update(
        center=_center,
        indent=_indent,
        wordwrap=_wordwrap,
        format=_format,
        replace=_replace,
        join=_join,
        sum=_sum,
        batch=_batch,
        slice=_slice,
        reverse=_reverse,
        urlize=_urlize,
        round=_round,
        tojson=_tojson,
    )
    bounded[ITER_FILTER] = iterate
    bounded[SPEND_FILTER] = spend
    bounded[STAR_FILTER] = star
    bounded[STARSTAR_FILTER] = starstar
    return bounded


def bounded_dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` for `tojson`, refusing before it builds: `indent` repeats per line."""
    budget = current()
    size = text_size(value, budget)
    indent = kwargs.get("indent")
    if indent is not None and isinstance(value, _SEQ_OR_MAP):
        unit = len(indent) if isinstance(indent, str) else max(int(indent), 0)
        lines, depth = _lines_and_depth(value, budget)
        size += lines * (unit * depth + 1)
    budget.build(size)
    text = json.dumps(value, **kwargs)
    budget.build(len(text))
    return text


def _lines_and_depth(value: Any, budget: Budget) -> tuple[int, int]:
    lines, deepest, stack = 0, 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        lines += 1
        if isinstance(item, dict):
            budget.spend(len(item))
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
            lines += 1
        elif isinstance(item, _SEQ):
            budget.spend(len(item))
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
            lines += 1
    return lines, deepest


_COMPARISON_TESTS = {
    "in": "in",
    "eq": "eq",
    "equalto": "eq",
    "==": "eq",
    "ne": "ne",
    "!=": "ne",
    "lt": "lt",
    "lessthan": "lt",
    "<": "lt",
    "le": "lteq",
    "<=": "lteq",
    "gt": "gt",
    "greaterthan": "gt",
    ">": "gt",
    "ge": "gteq",
    ">=": "gteq",
}


def bounded_tests(tests: Mapping[str, Filter]) -> dict[str, Filter]:
    bounded = dict(tests)
    for name, op in _COMPARISON_TESTS.items():
        if name in tests:
            bounded[name] = functools.partial(compare, op)
    return bounded


# ------------------------------------------------------------------------------- methods


def _width(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str, default: Any) -> Any:
    return args[0] if args else kwargs.get(name, default)


def _check_text_method(
    budget: Budget, receiver: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    budget.spend(len(receiver) >> 10)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _width(args, kwargs, "width", 0)
        if isinstance(width, int):
            budget.build(max(width, len(receiver)))
    elif name == "expandtabs":
        tabsize = _width(args, kwargs, "tabsize", 8)
        if isinstance(tabsize, int):
            tab = "\t" if isinstance(receiver, str) else b"\t"
            budget.build(len(receiver) + receiver.count(tab) * max(tabsize, 0))
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if type(old) is type(new) and isinstance(old, type(receiver)):
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            budget.build(_replaced_size(receiver, old, new, count, budget))
    elif name == "join" and args:
        items = list(counted(args[0]))
        budget.build(_joined_size(items, receiver, budget))
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], dict):
        widest = 1
        for value in counted(args[0].values()):
            if isinstance(value, _TEXT):
                widest = max(widest, len(value))
        budget.build(len(receiver) * widest)
    return args


def check_call(budget: Budget, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Check a call before it runs; gives (args, measure) where `measure` says whether to
    measure what the call built."""
    if isinstance(obj, LoopContext):  # a recursive loop walks the iterable it is given
        budget.spend(CALL_COST)
        return (counted(args[0]), *args[1:]) if args else args, False
    if obj is dict or obj is Namespace:
        return (counted(args[0]), *args[1:]) if args else args, True
    receiver = getattr(obj, "__self__", None)
    if receiver is None:
        return args, False
    name = getattr(obj, "__name__", "")
    if isinstance(receiver, _TEXT):
        return _check_text_method(budget, receiver, name, args, kwargs), True
    if isinstance(receiver, int):
        if name == "to_bytes":
            length = _width(args, kwargs, "length", 1)
            if isinstance(length, int):
                budget.build(length, "a byte string")
        return args, True
    if isinstance(receiver, type):  # dict.fromkeys, int.from_bytes, bytes.fromhex, …
        if name == "fromkeys" and args:
            return (counted(args[0]), *args[1:]), True
        return args, True
    if isinstance(receiver, _SEQ_OR_MAP):
        if name in ("index", "count", "copy"):
            walk_cost(receiver, budget)
        return args, name == "copy"
    if isinstance(receiver, range) and name in ("index", "count") and args:
        if type(args[0]) is not int and type(args[0]) is not bool:
            budget.spend(len(receiver))  # a non-int is searched item by item
        return args, False
    if isinstance(receiver, LoopContext) and name == "changed":
        for value in args:
            walk_cost(value, budget)
        return args, False
    if name == "isdisjoint" and args:  # dict views
        return (counted(args[0]), *args[1:]), False
    return args, False


def measure(budget: Budget, result: Any) -> Any:
    """Refuse what a call built if it is over the limit."""
    if isinstance(result, _TEXT):
        budget.build(len(result))
    elif isinstance(result, _SEQ_OR_MAP):
        budget.build(len(result) * 8, "a list")
    elif type(result) is int:
        check_int(result)
    return result
