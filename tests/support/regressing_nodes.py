"""A node whose newer version fails more, for the Critic's `node_version` tests: served by
the test itself with `reflux nodes serve --catalog tests.support.regressing_nodes:catalog`.

`test.lookup@1.0.0` always answers; `@1.1.0` fails a call whose `key` hashes into its
`failing` share (deterministic per key, so a replay of the same call fails the same way)."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from infra.errors import NodeError
from nodes import NodeCatalog, NodeContext, NodeGroup

CATALOG = "tests.support.regressing_nodes:catalog"

regressing = NodeGroup("regressing", "a node whose newer version regressed")


class LookupParams(BaseModel):
    key: str
    failing: float = 0.6
    """The share of keys version 1.1.0 fails."""


class LookupOutput(BaseModel):
    found: str
    version: str


def lookup_node(version: str, broken: bool) -> None:
    @regressing.node("test.lookup", version, params=LookupParams, output=LookupOutput,
                     effects="read")  # fmt: skip
    async def lookup(params: LookupParams, ctx: NodeContext) -> LookupOutput:
        """Look a key up (1.1.0 has a bug that fails a share of keys)."""
        share = int(hashlib.sha256(params.key.encode()).hexdigest()[:8], 16) / 2**32
        if broken and share < params.failing:
            raise NodeError(f"lookup of {params.key} failed: index corrupt", retryable=False,
                            error_class="LookupError")  # fmt: skip
        return LookupOutput(found=params.key.upper(), version=version)


lookup_node("1.0.0", broken=False)
lookup_node("1.1.0", broken=True)

catalog = NodeCatalog([regressing])
