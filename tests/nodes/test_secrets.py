"""`secret('NAME')`: resolved by the node service from its own environment, at call time."""

from __future__ import annotations

import pytest

from infra.errors import ValidationError
from nodes.secrets import resolve_secrets
from orchestrator.expressions import secret_placeholder
from tests.helpers.stack import RunningStack


def test_the_node_gets_the_value_and_history_does_not(stack: RunningStack) -> None:
    result = stack.run(
        """
        id: uses-secret
        steps:
          - id: header
            node: core.transform@1
            with: {value: "Bearer {{ secret('TEST_HOOK') }}"}
          - id: missing
            node: core.transform@1
            needs: [header]
            with: {value: "{{ secret('NOT_SET_ANYWHERE') }}"}
        """
    )
    # core.transform returns what it was given: here the resolved value (REFLUX_SECRET_TEST_HOOK)
    assert result.steps["header"].output == {"value": "Bearer test-hook-secret"}
    error = result.steps["missing"].error
    assert error is not None and error.class_ == "ValidationError"
    assert error.message == (
        "secret 'NOT_SET_ANYWHERE' is not set where this node runs (REFLUX_SECRET_NOT_SET_ANYWHERE)"
    )


def test_placeholders_at_any_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUX_SECRET_API_KEY", "k-123")
    token = secret_placeholder("API_KEY")
    params = {"headers": {"x": f"Key {token}"}, "list": [token, 5], "plain": "${secret"}
    assert resolve_secrets(params) == {
        "headers": {"x": "Key k-123"},
        "list": ["k-123", 5],
        "plain": "${secret",
    }
    with pytest.raises(ValidationError, match="REFLUX_SECRET_OTHER"):
        resolve_secrets({"a": secret_placeholder("OTHER")})
