"""The evolution layer: proposals with evidence from the traces, validated against a fresh
baseline, judged, reviewed, applied and watched (`../shared/EVOLUTION.md`).

- `proposals`: the model (the contract JSON), the Postgres catalog, the lifecycle workflow
  (the one writer of a proposal's status) and the front doors' operations.
- `critic`: the scan over a window of traces and one detector per module.
- `judge`: the statistical comparison of two arms; `samples`: what it compares.
- `validation` (shadow, canary), `apply`, `watch`: the steps of a proposal's life.
- `worker`: the evolution worker on the `reflux-evolution` task queue.

Members load on first use (the worker pulls in Temporal's worker, the judge scipy).
"""

from infra import lazy

__all__ = [
    "DEFAULT_SAMPLES",
    "Finding",
    "Harm",
    "JudgeConfig",
    "Judgement",
    "KINDS",
    "Proposal",
    "ProposalStore",
    "Request",
    "STATUSES",
    "Series",
    "ask",
    "create",
    "critic",
    "interim",
    "judge",
    "proposal_report",
    "proposals_table",
    "required_samples",
    "run_critic",
    "run_evolution_worker",
    "start_lifecycle",
    "wait_for",
]

__getattr__ = lazy(
    __name__,
    globals(),
    {
        "evolution.proposals.model": ["Finding", "KINDS", "Proposal", "STATUSES"],
        "evolution.proposals.store": ["ProposalStore"],
        "evolution.proposals.lifecycle": ["Request"],
        "evolution.proposals.report": ["proposal_report", "proposals_table"],
        "evolution.proposals.service": [
            "ask",
            "create",
            "run_critic",
            "start_lifecycle",
            "wait_for",
        ],
        "evolution.judge": [
            "DEFAULT_SAMPLES",
            "Harm",
            "JudgeConfig",
            "Judgement",
            "Series",
            "interim",
            "required_samples",
        ],
        "evolution.worker": ["run_evolution_worker"],
    },
    modules=["critic", "judge"],
)
