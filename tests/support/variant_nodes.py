"""A node whose versions stay drafts (nothing promotes them), served by the variant-run
tests themselves: `reflux nodes serve --catalog tests.support.variant_nodes:catalog`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from nodes import NodeCatalog, NodeContext, NodeGroup

CATALOG = "tests.support.variant_nodes:catalog"

drafts = NodeGroup("drafts", "versions that stay drafts")


class RankParams(BaseModel):
    items: list[Any] = []
    k: int = 3


class RankOutput(BaseModel):
    top: list[Any]
    version: str


def rank_node(version: str) -> None:
    @drafts.node("test.ranker", version, params=RankParams, output=RankOutput, effects="none")
    async def rank(params: RankParams, ctx: NodeContext) -> RankOutput:
        """The first `k` items, and the version that answered."""
        return RankOutput(top=params.items[: params.k], version=version)


for _v in ("0.1.0", "0.2.0"):
    rank_node(_v)

catalog = NodeCatalog([drafts])
