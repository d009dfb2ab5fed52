"""The workflow file format (v1) as pydantic models: `Spec`, `StepSpec`, `InputSpec`, …

These models check shape and field formats only. Whole-workflow rules (unknown steps in
`needs`, cycles, template references, node availability) live in `validate`, which also
maps every error to a line and column. Build a `Spec` from a file with
`validate.validate_text`/`validate_file`, not `Spec.model_validate`, unless the data is
already known good.

YAML keys that are Python keywords use an alias: `with` is `StepSpec.with_`, `if` is
`StepSpec.if_`. Durations are stored as float seconds.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core import ValidationError as PydanticValidationError

from infra import SpecError, parse_duration
from orchestrator.yamlsource import Problem
from registry import Definition

__all__ = [
    "CacheSpec",
    "Duration",
    "InputSpec",
    "InputType",
    "RetrySpec",
    "Spec",
    "StepSpec",
    "CronTrigger",
    "EventTrigger",
    "Trigger",
    "WebhookTrigger",
    "WORKFLOW_ID",
    "STEP_ID",
    "NODE_REF",
    "describe_value",
    "type_matches",
]

WORKFLOW_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
STEP_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")
SECRET_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
NODE_REF = re.compile(
    r"(?P<name>[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*)(?:@(?P<spec>\d+(?:\.\d+){0,2}))?"
)

DEFAULT_NAMESPACE = "default"
"""The namespace of a workflow that names none; the only one whose event triggers may listen
on any (unreserved) subject."""

InputType = Literal["string", "integer", "number", "boolean", "array", "object", "any"]


def _duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
"""A duration field: accepts "500ms", "30s", "1h30m", or seconds; holds float seconds."""


class _Model(BaseModel):
    # validate_by_name lets Python code pass `with_=`/`if_=`; `validate` reads YAML with
    # by_name=False so a file saying `if_:` is told the key is unknown.
    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


def _none_as(default: Any) -> Any:
    """An empty YAML key (`inputs:`) means "nothing here", not null."""

    def convert(value: Any) -> Any:
        return copy.copy(default) if value is None else value

    return convert


class InputSpec(_Model):
    type: InputType = "any"
    required: bool = False
    default: Any = None
    description: str = ""

    def check(self, value: Any) -> str | None:
        """Why `value` doesn't fit this input's type, or None when it does."""
        if value is None and not self.required:
            return None
        if type_matches(self.type, value):
            return None
        return f"expected {_TYPE_NOUNS[self.type]}, got {describe_value(value)}"


class RetrySpec(_Model):
    max_attempts: int = Field(default=3, ge=1)
    initial_interval: Duration = 1.0
    backoff: float = Field(default=2.0, ge=1.0)
    max_interval: Duration = 30.0
    non_retryable: list[str] = Field(default_factory=list)
    """Error classes (e.g. "ValidationError") that fail the step at once."""

    _empty = field_validator("non_retryable", mode="before")(_none_as([]))


class CacheSpec(_Model):
    ttl: Duration
    allow_secrets: bool = False
    """A step whose templates read `secret(...)` is cached only when this is true."""


class StepSpec(_Model):
    id: str
    node: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    if_: str | bool | None = Field(None, alias="if")
    for_each: str | list[Any] | None = None
    concurrency: int | None = Field(default=None, ge=1)
    timeout: Duration | None = None
    """Unset: the node's declared timeout, else 300 s."""
    local: bool | None = None
    """Run as a Temporal local activity (true) or a regular one (false). Unset: local when
    the timeout is short (see `orchestrator.plan.runs_local`)."""
    retry: RetrySpec = Field(default_factory=RetrySpec)
    cache: CacheSpec | None = None
    continue_on_error: bool = False
    description: str = ""

    _empty_with = field_validator("with_", mode="before")(_none_as({}))
    _empty_retry = field_validator("retry", mode="before")(
        lambda value: RetrySpec() if value is None else value
    )

    @field_validator("id")
    @classmethod
    def _id_format(cls, value: str) -> str:
        if not STEP_ID.fullmatch(value):
            raise ValueError(
                f"bad step id '{value}': use lowercase letters, digits, '_' and '-' "
                "(no dots), starting with a letter or digit"
            )
        return value

    @field_validator("node")
    @classmethod
    def _node_format(cls, value: str) -> str:
        if not NODE_REF.fullmatch(value):
            raise ValueError(
                f"malformed node reference '{value}': write name or name@version, "
                "e.g. http.request, http.request@1, http.request@1.2.3"
            )
        return value

    @field_validator("needs", mode="before")
    @classmethod
    def _needs_list(cls, value: Any) -> Any:
        # GitHub Actions lets `needs: build` stand for `needs: [build]`.
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("if_", mode="before")
    @classmethod
    def _if_kind(cls, value: Any) -> Any:
        if value is None or isinstance(value, str | bool):
            return value
        raise ValueError(f"expected a template string or a boolean, got {describe_value(value)}")

    @field_validator("for_each", mode="before")
    @classmethod
    def _for_each_kind(cls, value: Any) -> Any:
        if value is None or isinstance(value, list):
            return value
        if isinstance(value, str) and "{{" in value:
            return value
        raise ValueError(
            "expected a list or a template that gives one, e.g. "
            f'"{{{{ inputs.items }}}}"; got {describe_value(value)}'
        )

    @property
    def node_name(self) -> str:
        return self.node.partition("@")[0]

    @property
    def node_version_spec(self) -> str | None:
        """The `spec` of `name@spec` ("1", "1.2", "1.2.3"); None when the node has no `@`."""
        name, at, spec = self.node.partition("@")
        return spec if at else None


class _TriggerBase(_Model):
    id: str = Field(description="unique among the workflow's triggers; part of its URL")

    @field_validator("id")
    @classmethod
    def _trigger_id(cls, value: str) -> str:
        if not STEP_ID.fullmatch(value):
            raise ValueError(f"bad trigger id '{value}': use lowercase letters, digits, _ and -")
        return value


class ManualTrigger(_TriggerBase):
    type: Literal["manual"]
    id: str = "manual"


class WebhookTrigger(_TriggerBase):
    """`POST /hooks/<workflow>/<id>` starts a run with the JSON body as its inputs, when
    signed: `X-Reflux-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the
    secret, `X-Reflux-Timestamp: <unix seconds>` no older than `tolerance`. One delivery
    starts one run across every trigger signed with the same key (the signature does not
    cover the URL): give triggers that must each run a delivery their own keys."""

    type: Literal["webhook"]
    secret: str = Field(
        description="the signing key's name: `reflux secrets set NAME --webhook`"
        " (or REFLUX_WEBHOOK_KEY_<NAME> on the API, for the default namespace)"
    )
    max_body_kb: int = Field(default=256, ge=1, le=10 * 1024)
    tolerance: Duration = 300.0

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if not SECRET_NAME.fullmatch(value):
            raise ValueError(f"bad secret name '{value}': use A-Z, 0-9 and _")
        return value


Overlap = Literal[
    "skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"
]


class CronTrigger(_TriggerBase):
    """A Temporal Schedule starts a run of the latest version on `schedule` (a 5-field cron
    expression, UTC) or `every` interval; kept in step with the pushed versions."""

    type: Literal["cron"]
    schedule: str | None = None
    every: Duration | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    overlap: Overlap = "skip"
    """What to do when the previous run is still going: skip this one (default), buffer
    one or all, cancel or terminate the other, or allow all at once."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"bad cron schedule '{value}': five fields, e.g. '0 3 * * *'")
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> CronTrigger:
        if (self.schedule is None) == (self.every is None):
            raise ValueError("a cron trigger needs one of `schedule` (cron) or `every`")
        if self.every is not None and self.every < 1:
            raise ValueError("`every` must be at least 1s")
        return self


class EventTrigger(_TriggerBase):
    """A NATS message on `subject` (wildcards allowed) starts a run of the latest version
    with the message's JSON object as its inputs. A workflow of a namespace other than the
    default may listen only under `<namespace>.` (checked by `Spec`, which knows both)."""

    type: Literal["event"]
    subject: str

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        tokens = value.split(".")
        if not value or any(not t or " " in t for t in tokens) or ">" in tokens[:-1]:
            raise ValueError(f"bad subject '{value}': dot-separated tokens, * and a final >")
        if tokens[0] in ("reflux", "$SYS", "$JS", "$KV", "$SRV", "_INBOX") or value[0] in "*>":
            raise ValueError(f"subject '{value}' is reserved: pick one of your own")
        return value


Trigger = Annotated[
    ManualTrigger | WebhookTrigger | CronTrigger | EventTrigger, Field(discriminator="type")
]


AUTO_APPLY_KINDS = ("retry", "timeout", "params", "cache", "node_version", "new_node")
"""Proposal kinds a workflow may let the evolution layer apply without a person."""


class EvolutionSpec(_Model):
    """What the evolution layer may do to this workflow on its own."""

    auto_apply: list[Literal[AUTO_APPLY_KINDS]] = Field(default_factory=list)  # type: ignore[valid-type]
    """Kinds of proposal applied once validated, without a person (default: none)."""

    _empty = field_validator("auto_apply", mode="before")(_none_as([]))


class Spec(_Model):
    id: str
    namespace: str = DEFAULT_NAMESPACE
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)
    """Output name -> value; strings are templates that may read any step."""
    triggers: list[Trigger] = Field(default_factory=list)
    """What may start a run besides `reflux run` and `POST /runs` (always allowed)."""
    evolution: EvolutionSpec | None = None

    def definition(self, source: str) -> Definition:
        """This spec as the plain data the registry stores, with the YAML it came from."""
        data = self.model_dump(mode="json", by_alias=True)
        if data.get("evolution") is None:  # as before the key existed: same content, same hash
            data.pop("evolution", None)
        return Definition(self.id, self.namespace, self.description, data, source)

    _empty_inputs = field_validator("inputs", mode="before")(_none_as({}))
    _empty_outputs = field_validator("outputs", mode="before")(_none_as({}))
    _empty_triggers = field_validator("triggers", mode="before")(_none_as([]))

    @field_validator("triggers")
    @classmethod
    def _unique_triggers(cls, triggers: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for trigger in triggers:
            if trigger.id in seen:
                raise ValueError(f"two triggers share the id '{trigger.id}'")
            seen.add(trigger.id)
        return triggers

    @model_validator(mode="after")
    def _events_in_namespace(self) -> Spec:
        """A workflow of a namespace other than the default listens only on subjects under
        `<namespace>.`: a tenant does not take (or start runs from) another's events."""
        if self.namespace == DEFAULT_NAMESPACE:
            return self
        prefix = f"{self.namespace}."
        why = f"a workflow of namespace '{self.namespace}' may listen only on subjects under"
        why += f" '{prefix}'"
        refused = [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{error}", {"error": why}),
                loc=("triggers", index, "subject"),
                input=trigger.subject,
            )
            for index, trigger in enumerate(self.triggers)
            if isinstance(trigger, EventTrigger) and not trigger.subject.startswith(prefix)
        ]
        if refused:  # raised as a ValidationError, so each error keeps its own location
            raise PydanticValidationError.from_exception_data(type(self).__name__, refused)
        return self

    def trigger(self, trigger_id: str) -> Any:
        """The trigger with this id, or None."""
        return next((t for t in self.triggers if t.id == trigger_id), None)

    @field_validator("id", "namespace")
    @classmethod
    def _id_format(cls, value: str) -> str:
        if not WORKFLOW_ID.fullmatch(value):
            raise ValueError(
                f"bad id '{value}': use lowercase letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        return value

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def bind_inputs(self, values: dict[str, Any] | None) -> dict[str, Any]:
        """The run's `inputs`: `values` checked against `self.inputs`, defaults filled in.

        Every declared input is present in the result (None when not given and no default),
        so templates never trip over a missing optional input. Raises SpecError listing
        every unknown, missing or mistyped value.
        """
        values = dict(values or {})
        problems: list[Problem] = []
        for name in values:
            if name not in self.inputs:
                hint = _suggest(name, list(self.inputs))
                known = ", ".join(self.inputs) or "none"
                problems.append(
                    _input_problem(name, f"unknown input '{name}'{hint} (declared: {known})")
                )
        bound: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            if name not in values:
                if spec.required:
                    problems.append(_input_problem(name, "required input is missing"))
                bound[name] = copy.deepcopy(spec.default)
                continue
            why = spec.check(values[name])
            if why:
                problems.append(_input_problem(name, why))
            bound[name] = values[name]
        if problems:
            raise SpecError(problems)
        return bound


def _input_problem(name: str, message: str) -> Problem:
    return Problem("", 0, 0, f"inputs.{name}", message)


_TYPE_NOUNS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "any": "any value",
}


def type_matches(kind: str, value: Any) -> bool:
    """Whether `value` fits an input `type` (JSON Schema names; bools are not numbers)."""
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int | float)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return False


def describe_value(value: Any) -> str:
    """A value as messages show it: `string 'abc'`, `integer 5`, `a list`, …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
