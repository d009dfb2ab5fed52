"""The watch after an apply: the next W live runs (`REFLUX_EVOLUTION_WATCH_RUNS`) are
judged against the W live runs before it; if the judge finds them worse, the change is
reverted (a `revert` proposal, applied at once, explains why).

For a workflow change the runs after are those of the new version, and the runs before
those of the version it replaced; for a node-level change, the workflow's runs either side
of the moment it was applied.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from evolution.judge import interim, judge
from evolution.proposals.model import Evidence, Finding, Proposal
from evolution.samples import arm_series
from evolution.validation import LOOKS, due_look, judge_config
from infra import Settings


async def begin(pool: asyncpg.Pool, settings: Settings, proposal: Proposal) -> dict[str, Any]:
    """The watch's state, begun now unless it was before: the baseline runs' ids, the
    deadline. `{"done": True, ...}` when there is nothing to watch."""
    from registry import runs as ledger

    applied = proposal.applied
    if applied is None or applied.at is None or proposal.kind == "revert":
        return {"done": True, "reason": "nothing to watch"}
    if applied.watch:
        return applied.watch
    wanted = settings.evolution.watch_runs
    before = await ledger.live_runs(
        pool, proposal.workflow_id, started_before=applied.at,
        version=applied.previous_version if applied.workflow_version else None, limit=wanted,
    )  # fmt: skip
    deadline = applied.at + settings.evolution.watch_wait
    return {
        "done": False,
        "runs": wanted,
        "baseline": [r.id for r in before],
        "deadline": deadline.isoformat(),
        "result": None,
    }


async def look(
    pool: asyncpg.Pool, settings: Settings, proposal: Proposal
) -> tuple[bool, bool, dict[str, Any]]:
    """(done, harmful, watch state). Done once W runs after the apply ended (or the
    deadline passed): then judged. Harmful: judged worse, or the interim look says stop."""
    from registry import runs as ledger

    applied = proposal.applied
    assert applied is not None and applied.at is not None
    watch = dict(applied.watch)
    after = await ledger.live_runs(
        pool, proposal.workflow_id, started_after=applied.at, version=applied.workflow_version,
        oldest_first=True, limit=watch["runs"],
    )  # fmt: skip
    arms = {"baseline": await ledger.runs_by_id(pool, watch["baseline"]), "candidate": after}
    watch["candidate"] = [r.id for r in after]
    full = len(after) >= watch["runs"]
    late = datetime.now(UTC) >= datetime.fromisoformat(watch["deadline"])
    watch["samples"] = {"baseline": len(arms["baseline"]), "candidate": len(after)}
    if not (full or late):
        look = due_look(len(after), watch["runs"], watch.get("looks", 0))
        if look is None:
            return False, False, watch
        watch["looks"] = look
        series = await arm_series(settings, arms, proposal.step_id)
        harm = interim(series, look, LOOKS - 1, judge_config(settings))
        if harm is None:
            return False, False, watch
        watch.update(done=True, result="fail", reason=harm.reason,
                     metrics=[m.model_dump() for m in harm.metrics],
                     ended_at=datetime.now(UTC).isoformat())  # fmt: skip
        return True, True, watch
    series = await arm_series(settings, arms, proposal.step_id)
    verdict = judge(series, None, judge_config(settings))
    watch.update(
        done=True,
        result=verdict.result,
        reason=verdict.reason,
        samples=verdict.samples.model_dump(),
        metrics=[m.model_dump() for m in verdict.metrics],
        ended_at=datetime.now(UTC).isoformat(),
    )
    return True, verdict.result == "fail", watch


def revert_finding(proposal: Proposal) -> Finding | None:
    """The `revert` proposal the watch files when it found the change worse (None: there
    is nothing to undo automatically, e.g. a deprecation)."""
    applied = proposal.applied
    if applied is None or not applied.undo:
        return None
    watch = applied.watch
    worse = [m["name"] for m in watch.get("metrics", []) if m.get("verdict") == "worse"]
    what = ", ".join(worse) or "the judgement"
    return Finding(
        kind="revert",
        workflow_id=proposal.workflow_id,
        workflow_version=applied.workflow_version,
        namespace=proposal.namespace,
        step_id=proposal.step_id,
        node=proposal.node,
        title=f"Revert {proposal.id}: {what} got worse after it was applied"[:300],
        diagnosis=(
            f"After {proposal.id} ({proposal.title}) was applied, the watch compared"
            f" {watch.get('samples', {}).get('candidate', 0)} live runs with"
            f" {watch.get('samples', {}).get('baseline', 0)} before it: {watch.get('reason', '')}"
        ),
        mutation=list(applied.undo),
        evidence=Evidence(
            figures={"reverts": proposal.id, "watch": watch},
            runs=list(watch.get("candidate", []))[:10],
        ),
    )
