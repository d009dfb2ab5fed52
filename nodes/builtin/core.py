"""`core.*` nodes. `core.transform` does no work itself: the templating in `with` does.

`core.delay` and `core.switch` are engine meta-steps: the workflow runs them itself
(a durable timer, a branch pick), so their definitions here exist for the catalog and
validation; calling them over NATS still behaves sensibly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.sdk import NodeContext, NodeGroup

group = NodeGroup("core", "Data shaping and engine meta-steps")


class TransformParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None


class TransformOutput(BaseModel):
    value: Any = None


@group.node(
    "core.transform",
    "1.1.0",  # 1.1: declares its timeout, so its steps take the fast path
    params=TransformParams,
    output=TransformOutput,
    tags=("data",),
    timeout=5.0,
    effects="none",
)
async def transform(params: TransformParams, ctx: NodeContext) -> TransformOutput:
    """Return `value` as given; templates in `with` compute it."""
    return TransformOutput(value=params.value)


class DelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration: str | float = Field(description="how long to wait, e.g. 500ms, 30s, 10m")


class DelayOutput(BaseModel):
    waited_seconds: float


@group.node(
    "core.delay", "1.0.0", params=DelayParams, output=DelayOutput, tags=("engine",), effects="none"
)
async def delay(params: DelayParams, ctx: NodeContext) -> DelayOutput:
    """Wait for a duration (a durable timer when run as a step)."""
    from infra import parse_duration

    seconds = parse_duration(params.duration)
    await asyncio.sleep(seconds)
    return DelayOutput(waited_seconds=seconds)


class SwitchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = Field(
        default=True,
        description="compared with each case; default true, so cases can be conditions",
    )
    cases: dict[str, Any] = Field(
        default_factory=dict,
        description="branch name -> value to compare with `value`; the first equal one wins",
    )
    default: str = "default"


class SwitchOutput(BaseModel):
    branch: str


def pick_branch(params: SwitchParams) -> str:
    for name, expected in params.cases.items():
        if expected == params.value:
            return name
    return params.default


@group.node(
    "core.switch",
    "1.0.0",
    params=SwitchParams,
    output=SwitchOutput,
    tags=("engine",),
    effects="none",
)
async def switch(params: SwitchParams, ctx: NodeContext) -> SwitchOutput:
    """Pick a branch name: later steps test `steps.<id>.output.branch` in `if`."""
    return SwitchOutput(branch=pick_branch(params))
