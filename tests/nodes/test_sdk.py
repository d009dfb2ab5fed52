"""Defining nodes: what a declared timeout does to the manifest, and bad definitions."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from infra.errors import ConfigError
from nodes.builtin import builtin_catalog
from nodes.sdk import NodeContext, NodeGroup


class Value(BaseModel):
    value: int = 0


def test_a_declared_timeout_is_in_the_manifest_and_only_then():
    group = NodeGroup("t")

    @group.node("t.fast", "1.0.0", params=Value, output=Value, timeout=2.5)
    @group.node("t.plain", "1.0.0", params=Value, output=Value)
    async def handler(params: Value, ctx: NodeContext) -> Value:
        return params

    fast, plain = sorted(group.nodes, key=lambda n: n.name)
    assert fast.manifest()["timeout"] == 2.5
    assert "timeout" not in plain.manifest()  # manifests of nodes that say nothing keep their hash
    transform = next(n for n in builtin_catalog().nodes() if n.name == "core.transform")
    assert (transform.version, transform.manifest()["timeout"]) == ("1.1.0", 5.0)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_a_timeout_must_be_positive(timeout: float):
    with pytest.raises(ConfigError, match=r"t.node@1.0.0: timeout must be > 0 seconds"):
        NodeGroup("t").node("t.node", "1.0.0", params=Value, output=Value, timeout=timeout)
