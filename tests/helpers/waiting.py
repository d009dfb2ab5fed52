"""Poll with a deadline instead of sleeping: `eventually` in plain code, `eventually_async` in
coroutines. A check answers "not yet" by returning something falsy or by failing an
assertion; the last failed assertion is what a timeout reports."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["eventually", "eventually_async", "wait_for"]


def eventually(
    check: Callable[[], T], timeout: float = 30.0, every: float = 0.05, what: str = ""
) -> T:
    """`check()` again every `every` seconds until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            failed: AssertionError | None = None
        except AssertionError as exc:
            value, failed = None, exc  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what or check, failed)
        time.sleep(every)


async def eventually_async(
    check: Callable[[], Awaitable[T] | T],
    timeout: float = 30.0,
    every: float = 0.05,
    what: str = "",
) -> T:
    """The same in a coroutine: `check` may be a coroutine function or a plain one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: Any = check()
            if inspect.isawaitable(value):
                value = await value
            failed: AssertionError | None = None
        except AssertionError as exc:
            value, failed = None, exc
        if value:
            return value  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what or check, failed)
        await asyncio.sleep(every)


wait_for = eventually
"""The older name of `eventually`."""


def _timed_out(timeout: float, what: object, failed: AssertionError | None) -> AssertionError:
    name = what if isinstance(what, str) else getattr(what, "__name__", repr(what))
    message = f"timed out after {timeout}s waiting for {name}"
    if failed is not None:
        message += f": {failed}"
    return AssertionError(message)
