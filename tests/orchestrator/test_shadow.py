"""The shadow rule for one call (`orchestrator.shadow.decide`): reads run, writes take the
source run's output only when their params hash the same, and anything unknown is a write."""

import pytest

from orchestrator import SKIP_REASON
from orchestrator.plan import PlannedStep, ReplayedStep
from orchestrator.shadow import ShadowSkip, decide, may_write
from reflection import inputs_hash

GET_IS_READ = [{"path": "method", "values": ["GET"], "effect": "read", "if_absent": True}]


def step(effects: str = "write", rules=GET_IS_READ) -> PlannedStep:
    return PlannedStep(id="s", node="http.request", version="1.1.0", effects=effects,
                       effects_when=rules)  # fmt: skip


def recorded(params: dict) -> dict[str, ReplayedStep]:
    digest = inputs_hash("http.request", "1.1.0", params, "default")
    return {"s": ReplayedStep(inputs_hash=digest, output={"status": 201})}


def test_reads_run_and_writes_take_the_recorded_output_or_skip():
    assert decide(step(), {"url": "u"}, "default", {}).run
    post = {"method": "POST", "url": "u"}
    taken = decide(step(), post, "default", recorded(post))
    assert not taken.run and taken.output == {"status": 201}
    with pytest.raises(ShadowSkip, match=SKIP_REASON):
        decide(step(), {**post, "json": {"n": 2}}, "default", recorded(post))
    with pytest.raises(ShadowSkip):  # another namespace hashes differently
        decide(step(), post, "acme", recorded(post))
    with pytest.raises(ShadowSkip):  # no recorded call
        decide(step(), post, "default", {})


@pytest.mark.parametrize("effects, rules", [
    ("Write", []), ("writes", []), ("", []),
    ("read", [{"path": "method", "values": ["POST"], "effect": "WRITE"}]),
])  # fmt: skip
def test_an_effect_nobody_knows_is_a_write(effects, rules):
    odd = step(effects, rules)
    assert may_write(odd)
    with pytest.raises(ShadowSkip):
        decide(odd, {"method": "POST"}, "default", {})


def test_a_for_each_item_runs_only_when_the_node_never_writes():
    with pytest.raises(ShadowSkip):
        decide(step(), {"method": "GET"}, "default", {}, item=0)
    assert decide(step("read", []), {"method": "GET"}, "default", {}, item=0).run
