"""A proposal: one suggested change with its evidence, as every `--json` and the API return
it (EVOLUTION.md's contract), and `Finding`, what a detector files as one.

A proposal's `status` moves only forward along `TRANSITIONS`, and only its lifecycle
workflow moves it (`evolution.proposals.lifecycle`); people and the Critic ask it to.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal[
    "retry", "timeout", "params", "node_version", "cache", "new_node", "finding", "revert"
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
Status = Literal[
    "open",
    "validating",
    "validated",
    "failed_validation",
    "inconclusive",
    "accepted",
    "applied",
    "reverted",
    "rejected",
    "superseded",
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
Source = Literal["critic", "person", "optimizer", "forge", "watch"]
Mode = Literal["shadow", "canary"]
Result = Literal["pass", "fail", "inconclusive"]

JUDGED = ("validated", "failed_validation", "inconclusive")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("validating", "accepted", "rejected", "superseded"),
    "validating": (*JUDGED, "rejected", "superseded"),
    "validated": ("validating", "accepted", "rejected", "superseded"),
    "failed_validation": ("validating", "accepted", "rejected", "superseded"),
    "inconclusive": ("validating", "accepted", "rejected", "superseded"),
    "accepted": ("applied", "rejected"),
    "applied": ("reverted",),
    "reverted": (),
    "rejected": (),
    "superseded": (),
}
"""Where each status may go. `accepted` from anything but `validated` needs an admin's
force (the lifecycle checks who); `accepted → rejected` is an apply that failed."""
FINAL = tuple(status for status, onward in TRANSITIONS.items() if not onward)
OPEN = ("open", "validating", *JUDGED)
"""Statuses a later scan of the Critic may still update or supersede."""
NODE_OPS = ("rollout", "deprecate")
"""Node-level mutations (`{op, node, version, percent?}`), applied to the registry rather
than to a workflow version."""
WORKFLOW_OPS = ("promote",)
"""`{op: promote, workflow, version}`: make a stored version live again (what a revert
does)."""


def new_id() -> str:
    return f"prop-{secrets.token_hex(4)}"


def signature_of(*parts: Any) -> str:
    """A finding's identity across scans: the same problem found again has the same one."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Query(BaseModel):
    """A query the evidence rests on, re-runnable with `reflux sql` (params bound)."""

    sql: str
    params: dict[str, Any] = Field(default_factory=dict)


class ContrastRow(BaseModel):
    """One attribute value's share of the failing attempts beside its share of the ok
    ones (BubbleUp): a value far more common among failures points at the cause."""

    attribute: str
    value: str
    share_failing: float
    share_ok: float


class HistoryMatch(BaseModel):
    pattern_id: str
    similarity: float
    config: dict[str, Any] = Field(default_factory=dict)
    outcome: str = ""


class Evidence(BaseModel):
    queries: list[Query] = Field(default_factory=list)
    figures: dict[str, Any] = Field(default_factory=dict)
    contrast: list[ContrastRow] = Field(default_factory=list)
    runs: list[str] = Field(default_factory=list)
    """Example run ids."""
    history: list[HistoryMatch] = Field(default_factory=list)


class Expected(BaseModel):
    """The gain the proposal expects, and the number it is based on."""

    metric: str
    current: float | None = None
    expected: float | None = None
    basis: str = ""
    """In words: what the expectation was computed from ("p = 0.48 per attempt, 212
    attempts")."""


class MetricVerdict(BaseModel):
    name: str
    baseline: float | None = None
    candidate: float | None = None
    p_value: float | None = None
    effect: float | None = None
    verdict: Literal["better", "same", "worse"] = "same"
    samples: dict[str, int] = Field(default_factory=dict)


class Validation(BaseModel):
    mode: Mode
    result: Result | None = None
    """None while samples are collected."""
    reason: str = ""
    samples: dict[str, int] = Field(default_factory=lambda: {"baseline": 0, "candidate": 0})
    metrics: list[MetricVerdict] = Field(default_factory=list)
    runs: dict[str, list[str]] = Field(default_factory=lambda: {"baseline": [], "candidate": []})
    """The ledger ids of each arm's runs: what the judge compared."""
    target: int = 0
    """Samples wanted per arm."""
    key: str = ""
    """This validation's part of its runs' ids (a retried start launches nothing twice)."""
    base_version: int | None = None
    """The live version the change was tried against (the baseline arm's)."""
    sources: list[str] = Field(default_factory=list)
    """Shadow: the live runs whose inputs the arms replay."""
    candidate_version: int | None = None
    """Canary: the stored candidate version live runs were sent to."""
    looks: int = 0
    """Canary: the interim looks for harm taken so far."""
    metric: str | None = None
    """The metric the judge targets, fixed when the validation began (a later scan may
    refresh the proposal's expectation, not what this validation is judged on)."""
    node_arms: dict[str, str] = Field(default_factory=dict)
    """A node-level change: `{node, baseline, candidate}`, the node versions whose live
    runs (by their pins) make each arm."""
    started_at: datetime | None = None
    ended_at: datetime | None = None


class Applied(BaseModel):
    workflow_version: int | None = None
    """The new live version (workflow mutations), or None for a node-level change."""
    previous_version: int | None = None
    node: str | None = None
    """`name@version` a node-level change touched."""
    at: datetime | None = None
    by: str = ""
    undo: list[dict[str, Any]] = Field(default_factory=list)
    """The operations that put things back as they were (what a revert applies)."""
    watch: dict[str, Any] = Field(default_factory=dict)
    """After apply: the watch's state and, once done, its judgement."""


class Transition(BaseModel):
    at: datetime
    actor: str
    status: str
    previous: str | None = None
    note: str = ""


class Finding(BaseModel):
    """What a detector (or a person, or the watch) proposes; a proposal is a finding plus
    its life. `signature` dedupes: the same problem found again updates the open proposal."""

    kind: Kind
    workflow_id: str
    workflow_version: int | None = None
    namespace: str = "default"
    step_id: str | None = None
    node: str | None = None
    """`name@version` of the step's node, when one step is concerned."""
    title: str
    diagnosis: str = ""
    mutation: list[dict[str, Any]] = Field(default_factory=list)
    evidence: Evidence = Field(default_factory=Evidence)
    expected: Expected | None = None
    signature: str = ""


class Proposal(Finding):
    id: str
    status: Status = "open"
    source: Source = "critic"
    validation: Validation | None = None
    applied: Applied | None = None
    created_by: str = ""
    created_at: datetime
    updated_at: datetime
    history: list[Transition] = Field(default_factory=list)

    def contract(self) -> dict[str, Any]:
        """The JSON of EVOLUTION.md (every CLI `--json`, every API answer)."""
        return self.model_dump(mode="json")
