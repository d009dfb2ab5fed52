"""`secret('NAME')` at call time: resolved only in the params a node marks, only for the
names the step asked for, only from the run's namespace; masked in all that goes back."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import BaseModel

from infra.errors import NodeError, ValidationError
from infra.settings import Settings
from nodes.protocol import NodeRequest
from nodes.runtime import call_handler
from nodes.sdk import NodeContext, NodeGroup
from nodes.secrets import SecretResolver
from orchestrator.expressions import secret_placeholder as ph

VALUES = {("acme", "API_KEY"): "k-acme-123456", ("default", "API_KEY"): "k-default-98765"}


async def lookup(namespace: str, name: str) -> str | None:
    return VALUES.get((namespace, name))


async def resolve(params: dict[str, Any], namespace: str = "acme", **kw: Any) -> Any:
    marked = kw.pop("secret_params", {"headers": "value", "url": "query"})
    return await SecretResolver(lookup).resolve(
        params, namespace=namespace, secret_params=marked, node="n@1", **{"allowed": None, **kw}
    )


async def test_only_marked_params_resolve_and_others_stay_as_data() -> None:
    params = {"headers": {"x": f"Key {ph('API_KEY')}"}, "body": ph("API_KEY")}
    resolved, values = await resolve(params)
    assert resolved == {"headers": {"x": "Key k-acme-123456"}, "body": ph("API_KEY")}
    assert values == {"API_KEY": "k-acme-123456"}


async def test_the_run_namespace_decides_which_value() -> None:
    resolved, _ = await resolve({"headers": {"x": ph("API_KEY")}}, namespace="default")
    assert resolved["headers"]["x"] == "k-default-98765"
    with pytest.raises(ValidationError, match="not set in namespace 'other'"):
        await resolve({"headers": {"x": ph("API_KEY")}}, namespace="other")


async def test_a_name_the_step_did_not_ask_for_is_not_resolved() -> None:
    # e.g. a header that echoes an input whose value is "${secret:API_KEY}"
    resolved, values = await resolve({"headers": {"x": ph("API_KEY")}}, allowed=[])
    assert resolved == {"headers": {"x": ph("API_KEY")}} and values == {}


async def test_query_params_take_a_secret_only_after_the_question_mark() -> None:
    resolved, _ = await resolve({"url": f"https://a.example/x?key={ph('API_KEY')}"})
    assert resolved["url"] == "https://a.example/x?key=k-acme-123456"
    with pytest.raises(ValidationError, match="only in the query string"):
        await resolve({"url": f"https://{ph('API_KEY')}.a.example/?q=1"})


async def test_environment_secrets_are_the_default_namespace_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nodes.runtime import _environment_only

    monkeypatch.setenv("REFLUX_SECRET_FROM_ENV", "env-value-1")
    assert await _environment_only("default", "FROM_ENV") == "env-value-1"
    assert await _environment_only("acme", "FROM_ENV") is None


group = NodeGroup("leaky")


class EchoParams(BaseModel):
    headers: dict[str, str] = {}
    fail: bool = False


class EchoOut(BaseModel):
    seen: str
    encoded: str


@group.node(
    "leaky.echo", "1.0.0", params=EchoParams, output=EchoOut, secret_params={"headers": "value"}
)
async def echo(params: EchoParams, ctx: NodeContext) -> EchoOut:
    value = params.headers["auth"]
    if params.fail:
        raise NodeError(f"server said: bad key {value}", details={"body": {"echo": value}})
    return EchoOut(seen=value, encoded=base64.b64encode(f"user:{value}".encode()).decode())


@group.node(
    "leaky.crash", "1.0.0", params=EchoParams, output=EchoOut, secret_params={"headers": "value"}
)
async def crash(params: EchoParams, ctx: NodeContext) -> EchoOut:
    raise RuntimeError(f"bug with {params.headers['auth']}")


async def call(node_name: str, **params: Any) -> Any:
    node = next(n for n in group.nodes if n.name == node_name)
    request = NodeRequest(params=params, namespace="acme", secrets=["API_KEY"])
    return await call_handler(node, request, Settings(), SecretResolver(lookup))


async def test_output_error_and_details_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    done = await call("leaky.echo", headers={"auth": ph("API_KEY")})
    assert done.output == {"seen": "[secret:API_KEY]", "encoded": done.output["encoded"]}
    assert "[secret:API_KEY]" in done.output["encoded"]  # base64 inside base64 text
    failed = await call("leaky.echo", headers={"auth": ph("API_KEY")}, fail=True)
    assert failed.error is not None
    assert failed.error.message == "server said: bad key [secret:API_KEY]"
    assert failed.error.details == {"body": {"echo": "[secret:API_KEY]"}}
    crashed = await call("leaky.crash", headers={"auth": ph("API_KEY")})
    assert crashed.error is not None and "k-acme" not in crashed.error.message
    assert "k-acme" not in caplog.text and "[secret:API_KEY]" in caplog.text


async def test_a_params_error_does_not_echo_the_value() -> None:
    done = await call("leaky.echo", headers={"auth": ph("API_KEY")}, fail="not-a-bool")
    assert done.error is not None and done.error.class_ == "ValidationError"
    assert "not-a-bool" not in str(done.error.model_dump())
