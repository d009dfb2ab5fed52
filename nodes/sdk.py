"""Define nodes: a name, a semver version, pydantic params/output models and an async handler.

A `NodeGroup` is the unit a node service process serves; a `NodeCatalog` holds groups.
Decorators only write into these explicit objects, so tests build their own catalog
instead of resetting module globals.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from infra.errors import ConfigError
from infra.settings import Settings

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
    attempt: int = 1
    timeout: float | None = None
    settings: Settings = field(default_factory=Settings)


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

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "tags": list(self.tags),
            "params": self.params.model_json_schema(),
            "output": self.output.model_json_schema(),
        }


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
    ) -> Callable[[Handler], Handler]:
        """Register the decorated async handler as node `name` at `version`."""
        if not NAME_RE.match(name):
            raise ConfigError(f"node name {name!r} must look like 'group.action' (lowercase)")
        if not SEMVER_RE.match(version):
            raise ConfigError(f"node {name}: version {version!r} is not MAJOR.MINOR.PATCH")
        if any(n.name == name and n.version == version for n in self.nodes):
            raise ConfigError(f"node {name}@{version} is defined twice in group {self.name!r}")

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
