"""Workflow specs, plans, and running them on Temporal."""

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
    "StepResult",
    "StepSpec",
    "build_plan",
    "connect_temporal",
    "new_run_id",
    "resolve_pins",
    "run_handle",
    "start_run",
    "submit",
    "validate_file",
    "validate_text",
    "wait_run",
]
