"""Define nodes: a name, a semver version, pydantic params/output models and an async handler.

A `NodeGroup` is the unit a node service process serves; a `NodeCatalog` holds groups.
Decorators only write into these explicit objects, so tests build their own catalog
instead of resetting module globals.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from infra import ConfigError, Settings

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

P = TypeVar("P", bound=BaseModel)
O = TypeVar("O", bound=BaseModel)  # noqa: E741


@dataclass(frozen=True)
class NodeContext:
    """What a handler knows about the call besides its params."""

    run_id: str = ""
    workflow_id: str = ""
    step_id: str = ""
    item: int = -1
    """The `for_each` index, or -1."""
    attempt: int = 1
    idempotency_key: str = ""
    """`run/step[/item]/attempt`: the same on every delivery of one attempt (a worker that
    dies mid-step makes the engine call again with the same key), so a node with side
    effects can do them once per key."""
    timeout: float | None = None
    settings: Settings = field(default_factory=Settings)
    secrets: tuple[str, ...] = ()
    """The secret values resolved into this call's params, so a node can keep them where
    they belong (http.request drops headers carrying one on a redirect to another origin).
    Whatever the handler returns or raises is masked anyway."""


Handler = Callable[[Any, NodeContext], Awaitable[Any]]


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
    ) -> Callable[[Handler], Handler]:
        """Register the decorated async handler as node `name` at `version`.

        `timeout`: the seconds a call needs at most, for steps that set none. A node that
        declares a short one (the engine's local-step limit, 10 s by default) runs as a
        Temporal local activity: no server round trip per step (see the README's fast path).
        `secret_params`: the params that may carry `secret('NAME')`, each `value` or
        `query` (see `NodeDefinition.secret_params`).
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
