"""Workflow specs, plans, and running them on Temporal."""

from infra import lazy
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
    connect_temporal,
    new_run_id,
    run_handle,
    start_run,
    submit,
    wait_run,
)
from orchestrator.spec import Spec, StepSpec
from orchestrator.validate import validate_file, validate_text
from orchestrator.yamlsource import Problem

__all__ = [
    "Plan",
    "PlannedStep",
    "Problem",
    "RunRequest",
    "RunResult",
    "Spec",
    "StepError",
    "StepResult",
    "StepSpec",
    "WebhookTrigger",
    "announce_change",
    "apply_overrides",
    "background_processes",
    "build_plan",
    "connect_temporal",
    "cron_ids",
    "follow",
    "live_state",
    "load_version",
    "new_run_id",
    "original_request",
    "parse_spec",
    "payload_sizes",
    "progress_line",
    "redrive_of",
    "resolve_pins",
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
