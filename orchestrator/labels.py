"""Run labels: what a run is part of, on the run ledger and on every trace event.

Keys are `[a-z][a-z0-9_.-]*`, values short strings, at most `MAX_LABELS` pairs. The engine
sets `shadow` (a shadow replay) and `rollout` (`ID@N`, the version a workflow rollout
chose) itself: a person may filter by them but not set them, so neither can lie.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra import SpecError

KEY = re.compile(r"[a-z][a-z0-9_.-]*")
MAX_LABELS = 16
MAX_KEY = 63
MAX_VALUE = 200
MAX_BYTES = 1024
"""All of a run's labels together: they travel on every activity input and trace event."""
ENGINE_LABELS = ("rollout", "shadow")
SHADOW = "shadow"


def check_labels(labels: Mapping[str, Any] | None, where: str = "labels") -> dict[str, str]:
    """Labels a person gave, checked: SpecError with one line naming the bad one."""
    found: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not KEY.fullmatch(key) or len(key) > MAX_KEY:
            raise SpecError([f"{where}: label key {key!r} must match [a-z][a-z0-9_.-]* (at most"
                             f" {MAX_KEY} characters)"])  # fmt: skip
        if key in ENGINE_LABELS:
            raise SpecError([f"{where}: label '{key}' is set by the engine, not by hand"])
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str | int | float | bool) or len(text) > MAX_VALUE:
            raise SpecError([f"{where}: label '{key}' needs a short text value (at most"
                             f" {MAX_VALUE} characters)"])  # fmt: skip
        if not text.isprintable():
            raise SpecError([f"{where}: label '{key}': no control characters (newlines, tabs)"])
        found[key] = text
    if len(found) > MAX_LABELS:
        raise SpecError([f"{where}: at most {MAX_LABELS} labels, got {len(found)}"])
    if sum(len(k.encode()) + len(v.encode()) for k, v in found.items()) > MAX_BYTES:
        raise SpecError([f"{where}: at most {MAX_BYTES} bytes of labels in all"])
    return found


def parse_pairs(
    items: Iterable[str], separator: str = "=", where: str = "--label"
) -> dict[str, str]:
    """`["experiment=try1", …]` (or `key:value` with `separator=":"`) as a mapping; for
    filters, so engine labels are allowed here."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(separator)
        key = key.strip()
        if not sep or not KEY.fullmatch(key):
            raise SpecError([f"{where}: {item!r} is not KEY{separator}VALUE (keys match"
                             " [a-z][a-z0-9_.-]*)"])  # fmt: skip
        pairs[key] = value.strip()
    if len(pairs) > MAX_LABELS:
        raise SpecError([f"{where}: at most {MAX_LABELS} labels, got {len(pairs)}"])
    return pairs
