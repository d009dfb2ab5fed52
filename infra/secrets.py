"""Secrets by name: `REFLUX_SECRET_<NAME>` in the environment of the process that needs
one (the API for webhook keys). Values never go to logs, traces or errors."""

from __future__ import annotations

import os

__all__ = ["secret_value"]


def secret_value(name: str) -> str | None:
    return os.environ.get(f"REFLUX_SECRET_{name}") or None
