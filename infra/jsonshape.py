"""Bounds on the shape of JSON that comes in from outside (run inputs at the CLI, the API,
webhooks and event triggers): how deeply it nests and how large it is.

Why before parsing too: Python's json and pydantic recurse, so a body nested a few thousand
levels deep is a RecursionError (a 500, or a traceback) before any check on the parsed
value could run. `check_text` counts brackets in one pass over the raw text; `check_value`
walks a parsed value with an explicit stack. Both refuse with one `InputShapeError` line
that says where.
"""

from __future__ import annotations

import json
from typing import Any

from infra.errors import InputShapeError

__all__ = ["check_text", "check_value", "loads"]


def check_text(text: str | bytes, max_depth: int, max_bytes: int, where: str = "input") -> None:
    """Refuse JSON text over `max_bytes` or nested deeper than `max_depth`, without parsing."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > max_bytes:
        raise InputShapeError(
            f"{where}: {len(data)} bytes is over the limit of {max_bytes} (REFLUX_INPUT_MAX_BYTES)"
        )
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                raise _too_deep(where, max_depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1


def check_value(value: Any, max_depth: int, max_bytes: int, where: str = "input") -> None:
    """Refuse a parsed value nested deeper than `max_depth` or whose JSON is over
    `max_bytes`. Iterative: any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth + 1 > max_depth:
                raise _too_deep(where, max_depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    if size > max_bytes:
        raise InputShapeError(
            f"{where}: {size} bytes is over the limit of {max_bytes} (REFLUX_INPUT_MAX_BYTES)"
        )


def loads(text: str | bytes, max_depth: int, max_bytes: int, where: str = "input") -> Any:
    """`json.loads` after `check_text`; a syntax error is an InputShapeError too."""
    check_text(text, max_depth, max_bytes, where)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputShapeError(f"{where}: not JSON: {exc}") from None


def _too_deep(where: str, max_depth: int) -> InputShapeError:
    return InputShapeError(
        f"{where}: nested deeper than {max_depth} levels (REFLUX_INPUT_MAX_DEPTH)"
    )
