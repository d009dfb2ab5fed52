"""A node group that reports metrics and token costs (`NodeContext.metric`, `.cost`), served
by the tests that read them back from traces and stats (`nodes serve --catalog`)."""

from __future__ import annotations

from pydantic import BaseModel

from infra.errors import NodeError
from nodes.sdk import NodeCatalog, NodeContext, NodeGroup

metered = NodeGroup("metered", "nodes that report what they measured and cost")


class MeterParams(BaseModel):
    rows: float = 1.0
    tokens: list[int] = []
    """Reported with one `cost` call each (they add up)."""
    fail: bool = False
    """Raise after reporting: the failed attempt's trace still has the figures."""


class MeterOutput(BaseModel):
    rows: float
    key: str


@metered.node("test.meter", "1.0.0", params=MeterParams, output=MeterOutput)
async def meter(params: MeterParams, ctx: NodeContext) -> MeterOutput:
    """Report `rows` and `score` (rows / 10) as metrics and `tokens` as cost."""
    ctx.metric("rows", params.rows)
    ctx.metric("quality.score", params.rows / 10)
    for tokens in params.tokens:
        ctx.cost(tokens)
    if params.fail:
        raise NodeError(
            "failing after reporting, on purpose", retryable=True, error_class="MeterError"
        )
    return MeterOutput(rows=params.rows, key=ctx.idempotency_key)


catalog = NodeCatalog([metered])
