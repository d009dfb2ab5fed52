"""The wire format between the step activity and node services (JSON over NATS).

Params or an output whose JSON reaches the inline limit (256 KiB by default) do not travel
in the message: they go to the object store (`registry.offload`) and the message carries
the key (`params_ref`/`output_ref`), so NATS's message size limit never bites and handlers
still see whole values.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

SUBJECT_PREFIX = "reflux.node"
MANIFEST_KEY = "reflux.manifest"


def major_subject(name: str, major: int) -> str:
    """Every version with this major answers here, in one queue group: replicas share load."""
    return f"{SUBJECT_PREFIX}.{name}.v{major}"


def exact_subject(name: str, version: str) -> str:
    """One exact version answers here, so a pin to 1.2.3 reaches 1.2.3 even when 1.3.0 runs too."""
    return f"{SUBJECT_PREFIX}.{name}.v{version}"


class NodeRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict)
    params_ref: str | None = None
    """Set: the params are this object in the store (and `params` is empty)."""
    run_id: str = ""
    namespace: str = "default"
    """The run's namespace: only its secrets (and the default namespace's environment
    ones, for the default namespace) resolve."""
    workflow_id: str = ""
    step_id: str = ""
    item: int = -1
    attempt: int = 1
    idempotency_key: str = ""
    """`run/step[/item]/attempt`: every delivery of one attempt carries the same key."""
    timeout: float | None = None
    secrets: list[str] | None = None
    """The secret names the step's templates name: only these resolve (None: a caller
    that predates the list; then any name in a secret-bearing param does)."""
    secret_nonce: str | None = None
    """The run's nonce: only placeholders that carry it resolve, so a placeholder that
    arrives as data (an input, a response) cannot ask for a secret."""


def idempotency_key(run_id: str, step_id: str, item: int, attempt: int) -> str:
    """The key of one step attempt: `run/step/attempt`, with the `for_each` index as
    `run/step/item/attempt`."""
    parts = [run_id, step_id, *([str(item)] if item >= 0 else []), str(attempt)]
    return "/".join(parts)


class WireError(BaseModel):
    class_: str = Field(alias="class")
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True}


class NodeReply(BaseModel):
    output: Any = None
    output_ref: str | None = None
    """Set: the output is this object in the store (and `output` is None)."""
    replica: str = ""
    """The service instance that answered (host:pid), for traces."""
    error: WireError | None = None
    node: str = ""
    version: str = ""
