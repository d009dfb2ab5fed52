"""`secret('NAME')` in a workflow renders to a placeholder (`${secret:NAME}`, see
`orchestrator.expressions`); the node service swaps in the value, from its own
environment (`REFLUX_SECRET_NAME`), just before the handler runs. So values never enter
Temporal history, traces, the step cache key or logs; only the serving process holds them.
"""

from __future__ import annotations

import re
from typing import Any

from infra.errors import ValidationError
from infra.secrets import secret_value

__all__ = ["resolve_secrets"]

_PLACEHOLDER = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_secrets(value: Any) -> Any:
    """`value` with every placeholder replaced, at any depth; an unset secret is a
    ValidationError naming the variable (never a value)."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(_lookup, value) if "${secret:" in value else value
    if isinstance(value, dict):
        return {k: resolve_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v) for v in value]
    return value


def _lookup(match: re.Match[str]) -> str:
    name = match.group(1)
    found = secret_value(name)
    if found is None:
        raise ValidationError(
            f"secret '{name}' is not set where this node runs (REFLUX_SECRET_{name})"
        )
    return found
