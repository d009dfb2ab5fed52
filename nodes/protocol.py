"""The wire format between the step activity and node services (JSON over NATS).

Params or an output whose JSON reaches the inline limit (256 KiB by default) do not travel
in the message: they go to the object store (`registry.offload`) and the message carries
the key (`params_ref`/`output_ref`), so NATS's message size limit never bites and handlers
still see whole values.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

SUBJECT_PREFIX = "reflux.node"
MANIFEST_KEY = "reflux.manifest"


def major_subject(name: str, major: int) -> str:
    """Every version with this major answers here, in one queue group: replicas share load."""
    return f"{SUBJECT_PREFIX}.{name}.v{major}"


def exact_subject(name: str, version: str) -> str:
    """One exact version answers here, so a pin to 1.2.3 reaches 1.2.3 even when 1.3.0 runs too."""
    return f"{SUBJECT_PREFIX}.{name}.v{version}"


class CallIdentity(BaseModel):
    """Which call this is: one attempt of one step (or `for_each` item) of one run. The
    engine's `StepCall`, the `NodeRequest` on the wire, a handler's `NodeContext` and the
    attempt's trace event all carry this one model."""

    model_config = ConfigDict(frozen=True)

    run_id: str = ""
    workflow_id: str = ""
    workflow_version: int | None = None
    namespace: str = "default"
    """The run's namespace: only its secrets (and the default namespace's environment
    ones, for the default namespace) resolve."""
    step_id: str = ""
    item: int = -1
    """The `for_each` index, or -1."""
    attempt: int = 1
    labels: dict[str, str] = Field(default_factory=dict)
    """The run's labels (`RunInfo.labels`: `experiment=try1`, `shadow=true`, ...)."""

    @property
    def idempotency_key(self) -> str:
        """`run/step[/item]/attempt`: the same on every delivery of one attempt."""
        return idempotency_key(self.run_id, self.step_id, self.item, self.attempt)

    def flat(self) -> dict[str, Any]:
        """The identity as the release before this model sent it: flat fields beside the
        rest of a request, the idempotency key among them. See `lift_flat`."""
        return {
            **self.model_dump(include=set(FLAT_FIELDS)),
            "idempotency_key": self.idempotency_key,
        }

    @classmethod
    def lift_flat(cls, data: Any, field: str = "identity") -> Any:
        """`data` (a request's fields) with its flat identity fields moved into `field`
        when it has none there: a request or activity input in the older, flat shape."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        flat = {name: data.pop(name) for name in FLAT_FIELDS if name in data}
        data.pop("idempotency_key", None)  # derived from the rest
        if field not in data and flat:
            data[field] = flat
        return data


FLAT_FIELDS = ("run_id", "workflow_id", "workflow_version", "namespace", "step_id", "item",
               "attempt")  # fmt: skip
"""The fields of `CallIdentity` that requests and activity inputs carried one by one
before it (labels are new: they had none)."""


class Identified(BaseModel):
    """A message that carries a `CallIdentity` as `identity`, read from and written with
    the flat shape of the release before it as well (see `CallIdentity.lift_flat`)."""

    identity: CallIdentity = Field(default_factory=CallIdentity)

    @model_validator(mode="before")
    @classmethod
    def _lift(cls, data: Any) -> Any:
        return CallIdentity.lift_flat(data)

    @model_serializer(mode="wrap")
    def _with_flat_copy(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {**self.identity.flat(), **data}


class NodeRequest(Identified):
    """One call of a node. Compatibility with the release before `identity` (drop in the
    release after this one): a request in the flat shape (`run_id`, `namespace`, ... at
    the top) is read into `identity`, and every request also carries that flat copy, so a
    node service of the release before, still running in a rolling upgrade, resolves the
    run's namespace's secrets and hands the handler the right idempotency key."""

    params: dict[str, Any] = Field(default_factory=dict)
    params_ref: str | None = None
    """Set: the params are this object in the store (and `params` is empty)."""
    timeout: float | None = None
    secrets: list[str] | None = None
    """The secret names the step's templates name: only these resolve (None: a caller
    that predates the list; then any name in a secret-bearing param does)."""
    secret_nonce: str | None = None
    """The run's nonce: only placeholders that carry it resolve, so a placeholder that
    arrives as data (an input, a response) cannot ask for a secret."""


def idempotency_key(run_id: str, step_id: str, item: int, attempt: int) -> str:
    """The key of one step attempt: `run/step/attempt`, with the `for_each` index as
    `run/step/item/attempt`."""
    parts = [run_id, step_id, *([str(item)] if item >= 0 else []), str(attempt)]
    return "/".join(parts)


class WireError(BaseModel):
    class_: str = Field(alias="class")
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True}


class NodeReply(BaseModel):
    output: Any = None
    output_ref: str | None = None
    """Set: the output is this object in the store (and `output` is None)."""
    replica: str = ""
    """The service instance that answered (host:pid), for traces."""
    error: WireError | None = None
    node: str = ""
    version: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    """What the handler reported with `NodeContext.metric`, also when it then failed."""
    cost_tokens: int | None = None
    """The tokens it reported with `NodeContext.cost` (None: it reported none)."""
