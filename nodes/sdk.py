"""Define nodes: a name, a semver version, pydantic params/output models and an async handler.

A `NodeGroup` is the unit a node service process serves; a `NodeCatalog` holds groups.
Decorators only write into these explicit objects, so tests build their own catalog
instead of resetting module globals.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel

from infra import ConfigError, Settings
from nodes.protocol import CallIdentity

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

Effect = Literal["none", "read", "write"]
"""What a call may do outside itself: `none` (computes only), `read` (reads the world),
`write` (changes it). A shadow run performs `none` and `read` calls only."""
EFFECTS: tuple[str, ...] = get_args(Effect)
READ_ONLY: tuple[str, ...] = ("none", "read")
"""The effects a shadow run performs; any other value (`write`, or one nobody knows) is
taken as a write: the rule fails closed."""

P = TypeVar("P", bound=BaseModel)
O = TypeVar("O", bound=BaseModel)  # noqa: E741


METRIC_NAME_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
MAX_METRICS = 32
"""Distinct metric names one attempt may report (`NodeContext.metric`)."""
MAX_TOKENS = 2**63 - 1
"""What a trace's `cost_tokens` holds (Int64)."""


class CallRecorder:
    """The figures a handler reports during one attempt: the one mutable part of its
    context. The node service reads them into the reply, also when the handler failed."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.tokens: int | None = None

    def metric(self, name: str, value: float) -> None:
        if not isinstance(name, str) or not METRIC_NAME_RE.match(name):
            raise ConfigError(
                f"metric {name!r}: a name is 1-64 of a-z, 0-9, '_' and '.', starting with a letter"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"metric {name}: {value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(f"metric {name}: {value!r} is not a finite number")
        if name not in self.metrics and len(self.metrics) >= MAX_METRICS:
            raise ConfigError(
                f"metric {name}: an attempt reports at most {MAX_METRICS} metrics"
                " (nodes.sdk.MAX_METRICS); this one has them all"
            )
        self.metrics[name] = number

    def cost(self, tokens: int) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral) or tokens < 0:
            raise ConfigError(f"cost: tokens must be a whole number >= 0, got {tokens!r}")
        total = (self.tokens or 0) + int(tokens)
        if total > MAX_TOKENS:
            raise ConfigError(f"cost: {total} tokens in one attempt is more than a trace holds")
        self.tokens = total


@dataclass(frozen=True)
class NodeContext:
    """What a handler knows about the call besides its params, and where it reports what
    the call measured (`metric`) and cost (`cost`): those land on the attempt's trace."""

    identity: CallIdentity = field(default_factory=CallIdentity)
    """Which call this is: run, workflow, namespace, step, item, attempt and labels."""
    timeout: float | None = None
    settings: Settings = field(default_factory=Settings)
    secrets: tuple[str, ...] = ()
    """The secret values resolved into this call's params, so a node can keep them where
    they belong (http.request drops headers carrying one on a redirect to another origin).
    Whatever the handler returns or raises is masked anyway."""
    recorder: CallRecorder = field(default_factory=CallRecorder, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return self.identity.run_id

    @property
    def workflow_id(self) -> str:
        return self.identity.workflow_id

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def step_id(self) -> str:
        return self.identity.step_id

    @property
    def item(self) -> int:
        """The `for_each` index, or -1."""
        return self.identity.item

    @property
    def attempt(self) -> int:
        return self.identity.attempt

    @property
    def labels(self) -> dict[str, str]:
        return self.identity.labels

    @property
    def idempotency_key(self) -> str:
        """`run/step[/item]/attempt`: the same on every delivery of one attempt (a worker
        that dies mid-step makes the engine call again with the same key), so a node with
        side effects can do them once per key."""
        return self.identity.idempotency_key

    def metric(self, name: str, value: float) -> None:
        """Report a figure of this attempt (`rows`, `llm.latency_ms`, `score`): a finite
        number under a name of a-z, 0-9, `_` and `.`; again under one name replaces it. At
        most MAX_METRICS names; a bad call raises ConfigError. `reflux stats` shows each
        metric's mean, p50 and p95 per node version."""
        self.recorder.metric(name, value)

    def cost(self, tokens: int) -> None:
        """Add `tokens` (a whole number >= 0) to what this attempt cost; calls add up."""
        self.recorder.cost(tokens)


Handler = Callable[[Any, NodeContext], Awaitable[Any]]


@dataclass(frozen=True)
class EffectRule:
    """A call has `effect` when its param at `path` (dots for nested) is one of `values`
    (strings compared without case or surrounding space). `if_absent`: whether a call that
    leaves the param out matches (its default is one of `values`), set by `NodeGroup.node`
    from the params model."""

    path: str
    values: tuple[Any, ...]
    effect: Effect
    if_absent: bool = False

    def matches(self, params: Mapping[str, Any]) -> bool:
        value: Any = params
        for key in self.path.split("."):
            if not isinstance(value, Mapping) or key not in value:
                return self.if_absent
            value = value[key]
        return any(_same(value, wanted) for wanted in self.values)

    def manifest(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "values": list(self.values),
            "effect": self.effect,
            "if_absent": self.if_absent,
        }

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> EffectRule:
        return cls(
            str(data["path"]), tuple(data["values"]), data["effect"], bool(data.get("if_absent"))
        )


def call_effect(effects: str, rules: Iterable[EffectRule], params: Mapping[str, Any]) -> str:
    """The effect of one call: the first rule its params match, else the node's `effects`."""
    return next((rule.effect for rule in rules if rule.matches(params)), effects)


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, str) and isinstance(wanted, str):
        return value.strip().casefold() == wanted.casefold()
    return type(value) is type(wanted) and value == wanted


def _default_at(model: type[BaseModel], path: str) -> tuple[bool, Any]:
    """(True, default) of the param at a dotted path when every level has a default."""
    current: Any = model
    found: Any = None
    for key in path.split("."):
        model = type(current) if isinstance(current, BaseModel) else current
        fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
        if fields is None:
            return False, None
        field_ = next((f for k, f in fields.items() if (f.alias or k) == key), None)
        if field_ is None or field_.is_required():
            return False, None
        found = field_.get_default(call_default_factory=True)
        current = found if isinstance(found, BaseModel) else field_.annotation
    return True, found


@dataclass(frozen=True)
class NodeDefinition(Generic[P, O]):
    name: str
    version: str
    params: type[P]
    output: type[O]
    handler: Callable[[P, NodeContext], Awaitable[O]]
    description: str = ""
    tags: tuple[str, ...] = ()
    timeout: float | None = None
    """Seconds a call needs at most; steps default to it (see `NodeGroup.node`)."""
    secret_params: Mapping[str, str] = field(default_factory=dict)
    """Params that may carry `secret()`: name -> `value` (anywhere in it) or `query` (a URL,
    only after its `?`). Everywhere else `secret()` is refused by validation and left
    unresolved by the node service."""
    effects: Effect = "write"
    """What a call may do when no rule of `effects_when` matches (see `Effect`)."""
    effects_when: tuple[EffectRule, ...] = ()

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "tags": list(self.tags),
            "params": self.params.model_json_schema(),
            "output": self.output.model_json_schema(),
        }
        if self.timeout is not None:
            manifest["timeout"] = self.timeout
        if self.secret_params:
            manifest["secret_params"] = dict(sorted(self.secret_params.items()))
        manifest["effects"] = self.effects
        if self.effects_when:
            manifest["effects_when"] = [rule.manifest() for rule in self.effects_when]
        return manifest


class NodeGroup:
    """A set of node versions that one service process serves."""

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description
        self.nodes: list[NodeDefinition[Any, Any]] = []

    def node(
        self,
        name: str,
        version: str,
        *,
        params: type[BaseModel],
        output: type[BaseModel],
        description: str = "",
        tags: Iterable[str] = (),
        timeout: float | None = None,
        secret_params: Mapping[str, str] | None = None,
        effects: Effect = "write",
        effects_when: Mapping[str, tuple[Iterable[Any], Effect]] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated async handler as node `name` at `version`.

        `timeout`: the seconds a call needs at most, for steps that set none. A node that
        declares a short one (the engine's local-step limit, 10 s by default) runs as a
        Temporal local activity: no server round trip per step (see the README's fast path).
        `secret_params`: the params that may carry `secret('NAME')`, each `value` or
        `query` (see `NodeDefinition.secret_params`).
        `effects`: what a call may do, `none`, `read` or `write` (the default: a node that
        says nothing is taken to write); `effects_when` refines it per call from a param,
        `{"method": (["GET", "HEAD"], "read")}` (see `EffectRule`).
        """
        if not NAME_RE.match(name):
            raise ConfigError(f"node name {name!r} must look like 'group.action' (lowercase)")
        if not SEMVER_RE.match(version):
            raise ConfigError(f"node {name}: version {version!r} is not MAJOR.MINOR.PATCH")
        if any(n.name == name and n.version == version for n in self.nodes):
            raise ConfigError(f"node {name}@{version} is defined twice in group {self.name!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"node {name}@{version}: timeout must be > 0 seconds")
        fields = {f.alias or key for key, f in params.model_fields.items()}
        for key, kind in (secret_params or {}).items():
            if key not in fields or kind not in ("value", "query"):
                raise ConfigError(
                    f"node {name}@{version}: secret_params: {key!r}: {kind!r} must name a"
                    " param and be 'value' or 'query'"
                )

        rules = []
        for path, (values, effect) in (effects_when or {}).items():
            has_default, default = _default_at(params, path)
            if effect not in EFFECTS or not has_default and path.split(".")[0] not in fields:
                raise ConfigError(
                    f"node {name}@{version}: effects_when: {path!r} must name a param and"
                    f" give one of {', '.join(EFFECTS)}"
                )
            values = tuple(values)
            absent = has_default and any(_same(default, wanted) for wanted in values)
            rules.append(EffectRule(path, values, effect, absent))
        if effects not in EFFECTS:
            raise ConfigError(f"node {name}@{version}: effects must be one of {', '.join(EFFECTS)}")

        def decorate(handler: Handler) -> Handler:
            self.nodes.append(
                NodeDefinition(
                    name=name,
                    version=version,
                    params=params,
                    output=output,
                    handler=handler,
                    description=description or (handler.__doc__ or "").strip(),
                    tags=tuple(tags),
                    timeout=timeout,
                    secret_params=dict(secret_params or {}),
                    effects=effects,
                    effects_when=tuple(rules),
                )
            )
            return handler

        return decorate


class NodeCatalog:
    """Named node groups; `select` picks the ones a service process should serve.

    `builtin` marks the platform's own library: its versions register as production. Any
    other catalog's new versions register as drafts, for a person to review and promote.
    """

    def __init__(self, groups: Iterable[NodeGroup] = (), *, builtin: bool = False) -> None:
        self.builtin = builtin
        self.groups: dict[str, NodeGroup] = {}
        for group in groups:
            self.add(group)

    def add(self, group: NodeGroup) -> NodeGroup:
        if group.name in self.groups:
            raise ConfigError(f"node group {group.name!r} is defined twice")
        self.groups[group.name] = group
        return group

    def select(self, names: Iterable[str] | None = None) -> list[NodeGroup]:
        names = list(names or [])
        if not names:
            return list(self.groups.values())
        chosen = []
        for name in names:
            if name not in self.groups:
                hint = difflib.get_close_matches(name, self.groups, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                known = ", ".join(sorted(self.groups))
                raise ConfigError(f"unknown node group {name!r}{extra} (known: {known})")
            chosen.append(self.groups[name])
        return chosen

    def nodes(self) -> list[NodeDefinition[Any, Any]]:
        return [node for group in self.groups.values() for node in group.nodes]
