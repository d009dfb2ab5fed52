"""Workflow specs, plans, and running them on Temporal; graph mutations and variant runs."""

from infra import lazy
from orchestrator.labels import ENGINE_LABELS, check_labels, parse_pairs
from orchestrator.mutations import Mutation, dump_mutations, parse_mutations, parse_pin, parse_set
from orchestrator.mutations import apply as apply_mutations
from orchestrator.mutations import describe as describe_mutations
from orchestrator.plan import (
    Plan,
    PlannedStep,
    RunRequest,
    RunResult,
    StepResult,
    build_plan,
    resolve_pins,
)
from orchestrator.runs import (
    Launched,
    connect_temporal,
    launch,
    new_run_id,
    run_handle,
    start_run,
    submit,
    wait_run,
)
from orchestrator.spec import Spec, StepSpec
from orchestrator.validate import validate_file, validate_text
from orchestrator.yamledit import diff as diff_sources
from orchestrator.yamledit import edit_source
from orchestrator.yamlsource import Problem

__all__ = [
    "ENGINE_LABELS",
    "Launched",
    "Mutation",
    "Plan",
    "PlannedStep",
    "Problem",
    "Revision",
    "RunRequest",
    "RunResult",
    "SKIP_REASON",
    "Spec",
    "StepError",
    "StepResult",
    "StepSpec",
    "WebhookTrigger",
    "announce_change",
    "apply_mutations",
    "apply_overrides",
    "background_processes",
    "build_plan",
    "check_labels",
    "connect_temporal",
    "cron_ids",
    "describe_mutations",
    "diff_sources",
    "dump_mutations",
    "edit_source",
    "follow",
    "launch",
    "live_state",
    "load_version",
    "new_run_id",
    "original_request",
    "parse_mutations",
    "parse_pairs",
    "parse_pin",
    "parse_set",
    "parse_spec",
    "payload_sizes",
    "progress_line",
    "redrive_of",
    "replay_of",
    "resolve_pins",
    "revise",
    "run_handle",
    "run_json",
    "run_table",
    "run_worker",
    "source_too_large",
    "start_run",
    "submit",
    "sync_schedules",
    "table",
    "validate_file",
    "validate_text",
    "wait_run",
]

__getattr__ = lazy(
    __name__,
    globals(),
    {
        "orchestrator.events": ["follow"],
        "orchestrator.listener": ["announce_change"],
        "orchestrator.payloads": ["payload_sizes"],
        "orchestrator.plan": ["StepError"],
        "orchestrator.processes": ["background_processes"],
        "orchestrator.revise": ["Revision", "revise"],
        "orchestrator.shadow": ["SKIP_REASON", "replay_of"],
        "orchestrator.report": ["progress_line", "run_json", "run_table", "table"],
        "orchestrator.runs": [
            "apply_overrides",
            "live_state",
            "load_version",
            "original_request",
            "redrive_of",
        ],
        "orchestrator.spec": ["WebhookTrigger"],
        "orchestrator.triggers": ["cron_ids", "sync_schedules"],
        "orchestrator.validate": ["parse_spec", "source_too_large"],
        "orchestrator.worker": ["run_worker"],
    },
)
