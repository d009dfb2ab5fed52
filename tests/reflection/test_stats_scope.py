"""Stats scoped to a namespace count only that namespace's traces, whatever its name (even
"", which is no namespace at all and so sees nothing); no namespace counts every one."""

from __future__ import annotations

import pytest

from reflection import stats
from reflection.warehouse import Warehouse
from tests.reflection.test_stats import known_events, warehouse

__all__ = ["warehouse"]  # the fixture


def tenants_events():
    """The known events, runs r1 and m1 in namespace `acme` (each has a failure)."""
    return [
        event.model_copy(
            update={"namespace": "acme" if event.run_id in ("r1", "m1") else "default"}
        )
        for event in known_events()
    ]


@pytest.mark.parametrize("question", [stats.node_stats, stats.workflow_stats, stats.failing_steps])
def test_a_namespace_sees_only_its_own_traces(warehouse: Warehouse, question):
    warehouse.insert(tenants_events())

    def rows(namespace: str | None) -> list[dict]:
        return warehouse.query(*question(3600, namespace=namespace)).records()

    everything, acme, default = rows(None), rows("acme"), rows("default")
    assert everything and acme and default
    assert rows("") == []
    assert rows("nobody") == []
    if question is stats.node_stats:
        count = lambda found: sum(r["count"] for r in found)  # noqa: E731
        assert count(acme) + count(default) == count(everything)
