"""A version registered before nodes declared effects takes its declaration once, on the
next registration; a declared effect never changes under the same version."""

import asyncpg
import pytest

from infra import ManifestConflictError, RegistryError
from registry import NodeRegistry

pytestmark = pytest.mark.timeout(60)

BEFORE = {"name": "demo.call", "version": "1.0.0", "description": "", "tags": [],
          "params": {"type": "object"}, "output": {"type": "object"}}  # fmt: skip


async def test_an_old_manifest_takes_its_effects_once(db: asyncpg.Pool):
    registry = NodeRegistry(db, "alice")
    await registry.register([BEFORE])
    declared = {**BEFORE, "effects": "write",
                "effects_when": [{"path": "method", "values": ["GET"], "effect": "read",
                                  "if_absent": True}]}  # fmt: skip
    (again,) = await registry.register([declared])
    assert not again.new
    catalog = await registry.catalog()
    assert catalog.effects("demo.call", "1.0.0")[1][0]["effect"] == "read"
    node = await registry.show("demo.call")
    assert [e.action for e in node.events] == ["registered", "effects declared"]
    with pytest.raises(ManifestConflictError):  # declared once: no change after that
        await registry.register([{**declared, "effects": "none"}])
    with pytest.raises(ManifestConflictError):  # nor anything else with it
        await registry.register([{**BEFORE, "description": "changed", "effects": "none"}])
    assert (await registry.catalog()).effects("demo.call", "1.0.0")[0] == "write"


async def test_an_effect_nobody_knows_is_refused(db: asyncpg.Pool):
    registry = NodeRegistry(db, "alice")
    for manifest in (
        {**BEFORE, "name": "demo.odd", "effects": "Write"},
        {
            **BEFORE,
            "name": "demo.odd",
            "effects_when": [{"path": "m", "values": [], "effect": "x"}],
        },
        {**BEFORE, "name": "demo.odd", "effects_when": "read"},
    ):
        with pytest.raises(RegistryError, match="demo.odd@1.0.0: effects"):
            await registry.register([manifest])
    assert "demo.odd" not in (await registry.catalog()).versions
