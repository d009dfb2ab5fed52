"""Effects: what a node's calls may do, declared in its manifest and refined per call."""

import pytest
from pydantic import BaseModel, Field

from infra import ConfigError
from nodes import EffectRule, NodeGroup, builtin_catalog, call_effect
from registry import Catalog


class Limits(BaseModel):
    network: str = "off"


class Params(BaseModel):
    method: str = "GET"
    limits: Limits = Field(default_factory=Limits)
    body: str | None = None


class Out(BaseModel):
    ok: bool = True


async def handler(params: Params, ctx) -> Out:
    return Out()


def builtin(name: str):
    return next(n for n in builtin_catalog().nodes() if n.name == name)


def effect(node, params: dict) -> str:
    return call_effect(node.effects, node.effects_when, params)


def test_a_node_that_says_nothing_writes():
    group = NodeGroup("g")
    group.node("g.plain", "1.0.0", params=Params, output=Out)(handler)
    (node,) = group.nodes
    assert node.effects == "write" and node.manifest()["effects"] == "write"
    assert effect(node, {}) == "write"


def test_rules_refine_per_call_and_know_the_default():
    group = NodeGroup("g")
    group.node(
        "g.call", "1.0.0", params=Params, output=Out, effects="write",
        effects_when={"method": (["GET", "HEAD"], "read"), "limits.network": (["off"], "none")},
    )(handler)  # fmt: skip
    (node,) = group.nodes
    assert [r.if_absent for r in node.effects_when] == [True, True]
    assert effect(node, {}) == "read"  # the method's default is GET
    assert effect(node, {"method": " get "}) == "read"
    assert effect(node, {"method": "POST"}) == "none"  # its network defaults to off
    assert effect(node, {"method": "POST", "limits": {"network": "off"}}) == "none"
    assert effect(node, {"method": "POST", "limits": {"network": "limited"}}) == "write"


def test_rules_survive_the_manifest():
    rule = EffectRule("method", ("GET",), "read", True)
    assert EffectRule.from_manifest(rule.manifest()) == rule
    group = NodeGroup("g")
    group.node("g.call", "1.0.0", params=Params, output=Out,
               effects_when={"method": (["GET"], "read")})(handler)  # fmt: skip
    manifest = {"name": "g.call", **group.nodes[0].manifest()}
    catalog = Catalog.from_manifests([manifest])
    effects, rules = catalog.effects("g.call", "1.0.0")
    assert effects == "write" and rules[0]["path"] == "method"
    assert Catalog().effects("unknown", "1.0.0") == ("write", ())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"effects": "delete"}, "effects must be one of"),
        ({"effects_when": {"nope": (["x"], "read")}}, "must name a param"),
        ({"effects_when": {"method": (["GET"], "maybe")}}, "must name a param"),
    ],
)
def test_bad_declarations_are_refused(kwargs, message):
    group = NodeGroup("g")
    with pytest.raises(ConfigError, match=message):
        group.node("g.bad", "1.0.0", params=Params, output=Out, **kwargs)


def test_builtin_effects():
    http = builtin("http.request")
    assert effect(http, {"url": "https://x"}) == "read"
    assert effect(http, {"method": "HEAD"}) == "read"
    assert effect(http, {"method": "OPTIONS"}) == "read"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert effect(http, {"method": method}) == "write"
    for name in ("code.python", "code.shell"):
        code = builtin(name)
        assert effect(code, {}) == "none"
        assert effect(code, {"limits": {"network": False}}) == "none"  # YAML's bare `off`
        assert effect(code, {"limits": {"network": "limited"}}) == "write"
    for name in ("core.transform", "core.delay", "core.switch"):
        assert effect(builtin(name), {}) == "none"


def test_a_node_service_refuses_a_write_call_from_a_shadow_run():
    import asyncio

    from infra import Settings
    from nodes import CallIdentity, NodeRequest
    from nodes.runtime import call_handler

    calls = []
    group = NodeGroup("g")

    @group.node("g.send", "1.0.0", params=Params, output=Out,
                effects_when={"method": (["GET"], "read")})  # fmt: skip
    async def send(params: Params, ctx) -> Out:
        calls.append(params.method)
        return Out()

    (node,) = group.nodes

    def call(method: str, labels: dict) -> str | None:
        identity = CallIdentity(run_id="r", step_id="s", labels=labels)
        request = NodeRequest(params={"method": method}, identity=identity)
        reply = asyncio.run(call_handler(node, request, Settings()))
        return reply.error.message if reply.error else None

    assert (
        call("POST", {"shadow": "true"}) == "g.send@1.0.0: a shadow run may not make a write call"
    )
    assert call("GET", {"shadow": "true"}) is None
    assert call("POST", {"experiment": "x"}) is None
    assert calls == ["GET", "POST"]
