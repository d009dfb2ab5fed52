"""The wire format between the step activity and node services (JSON over NATS)."""

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
    run_id: str = ""
    workflow_id: str = ""
    step_id: str = ""
    attempt: int = 1
    timeout: float | None = None


class WireError(BaseModel):
    class_: str = Field(alias="class")
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True}


class NodeReply(BaseModel):
    output: Any = None
    error: WireError | None = None
    node: str = ""
    version: str = ""
