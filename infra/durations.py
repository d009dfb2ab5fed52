"""Durations as workflow authors write them: ``500ms``, ``30s``, ``10m``, ``1h``, ``1d``, ``1h30m``.

Stored everywhere as float seconds; plain numbers already are seconds. The error text is
shown to authors verbatim by `validate`, so it says what to write instead.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "format_duration"]

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# "ms" must come before "m" and "s" in the alternation or "500ms" would split as 500m + s.
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_WHOLE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+")
_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")

_HINT = "use e.g. 500ms, 30s, 10m, 1h"


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; raise ValueError saying what is accepted otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r}: {_HINT}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"bad duration {text!r}: must be a finite number of seconds ≥ 0")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"bad duration {text!r}: {_HINT}")
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"bad duration {text!r}: {_HINT}")
    seen: set[str] = set()
    total = 0.0
    for amount, unit in _PART.findall(text):
        if unit in seen:
            raise ValueError(f"bad duration {text!r}: unit '{unit}' appears twice")
        seen.add(unit)
        total += float(amount) * _UNIT_SECONDS[unit]
    return total


def format_duration(seconds: float) -> str:
    """The shortest spelling `parse_duration` reads back, e.g. 5400 -> "1h30m", 0.5 -> "500ms"."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format duration {seconds!r}")
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    if millis % 1000:
        if millis < 1000:
            return f"{millis}ms"
        return f"{seconds:g}s"
    whole = millis // 1000
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
