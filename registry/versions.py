"""The rules of node versions, free of I/O: semver specs, the lifecycle, and pin resolution
over a `Catalog` (a snapshot of the registry taken when a run starts).

Pins: `@1` newest production 1.x, `@1.2` newest production 1.2.x, `@1.2.3` exactly that
version whatever its status short of deprecated, no `@` newest production. A rollout sends
its share of new runs, chosen from the run id, to its version when the spec matches it.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

from infra import LifecycleError, NotFoundError, PinError

Status = Literal["draft", "staging", "production", "deprecated"]
STATUSES: tuple[Status, ...] = get_args(Status)

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_SPEC = re.compile(r"(0|[1-9]\d*)(?:\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?)?")


class Semver(NamedTuple):
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Semver:
        match = _SEMVER.fullmatch(text.strip())
        if not match:
            raise ValueError(f"'{text}' is not a version like 1.2.3")
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_spec(spec: str | None) -> tuple[int, ...]:
    """ "1" -> (1,), "1.2" -> (1, 2), "1.2.3" -> (1, 2, 3), None -> ()."""
    if not spec:
        return ()
    match = _SPEC.fullmatch(spec.strip())
    if not match:
        raise PinError(f"'{spec}' is not a version spec like 1, 1.2 or 1.2.3")
    return tuple(int(part) for part in match.groups() if part is not None)


def matches(spec: str | None, version: str) -> bool:
    wanted = parse_spec(spec)
    return Semver.parse(version)[: len(wanted)] == wanted


# -- lifecycle -----------------------------------------------------------------------------

_PROMOTIONS: dict[Status, Status] = {"draft": "staging", "staging": "production"}


def check_transition(current: Status, target: Status, *, force: bool = False) -> None:
    """Raise LifecycleError unless `current -> target` is allowed. Promotions go one step at a
    time (draft -> staging -> production); any live version may be deprecated; a deprecated
    version comes back only to production, and only with force."""
    if target not in STATUSES:
        raise LifecycleError(f"unknown status '{target}' (one of {', '.join(STATUSES)})")
    if target == current:
        return
    if target == "deprecated" or _PROMOTIONS.get(current) == target:
        return
    if current == "deprecated" and target == "production":
        if force:
            return
        raise LifecycleError("it is deprecated: bring it back to production with --force")
    if target == "draft" or STATUSES.index(target) < STATUSES.index(current):
        raise LifecycleError(f"it is {current}; versions never move back to {target}")
    step = _PROMOTIONS[current]
    raise LifecycleError(f"it is {current}: promote it to {step} first")


# -- resolution ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    version: str
    status: Status
    timeout: float | None = None
    """The seconds a call needs at most, as the node's manifest declares (None: not said)."""
    secret_params: Mapping[str, str] = field(default_factory=dict)
    """The params that may carry `secret()`, as the manifest marks them."""
    effects: str = "write"
    """What a call may do (`none`, `read`, `write`); a manifest that says nothing: `write`."""
    effects_when: tuple[Mapping[str, Any], ...] = ()
    """Per-call refinements from a param, as the manifest gives them."""

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], status: Status) -> VersionInfo:
        return cls(
            manifest["version"],
            status,
            manifest.get("timeout"),
            manifest.get("secret_params") or {},
            manifest.get("effects") or "write",
            tuple(manifest.get("effects_when") or ()),
        )

    @property
    def semver(self) -> Semver:
        return Semver.parse(self.version)


@dataclass(frozen=True)
class Rollout:
    version: str
    percent: int


def rollout_bucket(run_id: str, node: str) -> float:
    """Where a run falls in [0, 100) for a node's rollout: stable for a run id, and
    independent between nodes so one run is not in every rollout at once."""
    digest = hashlib.sha256(f"{node}\0{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


@dataclass
class Catalog:
    """Node versions and rollouts as of one moment: what run starts resolve against."""

    versions: dict[str, list[VersionInfo]] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)

    @classmethod
    def of(cls, served: Mapping[str, Iterable[str]], status: Status = "production") -> Catalog:
        """Every listed version with one status (the built-in catalog when no registry)."""
        return cls({name: [VersionInfo(v, status) for v in vs] for name, vs in served.items()})

    @classmethod
    def from_manifests(
        cls, manifests: Iterable[Mapping[str, Any]], status: Status = "production"
    ) -> Catalog:
        """Node versions as their manifests describe them (timeouts, secret-bearing params)."""
        catalog = cls()
        for m in manifests:
            catalog.versions.setdefault(m["name"], []).append(VersionInfo.from_manifest(m, status))
        return catalog

    def with_defaults(self, defaults: Mapping[str, Iterable[str]]) -> Catalog:
        """This catalog plus production `defaults` for node names it does not know."""
        extra = Catalog.of({n: vs for n, vs in defaults.items() if n not in self.versions})
        return Catalog({**self.versions, **extra.versions}, dict(self.rollouts))

    def info(self, name: str, version: str) -> VersionInfo | None:
        return next((v for v in self.versions.get(name, ()) if v.version == version), None)

    def timeout(self, name: str, version: str) -> float | None:
        """The call timeout node `name@version` declares, if it does."""
        found = self.info(name, version)
        return found.timeout if found is not None else None

    def secret_params(self, name: str, version: str) -> Mapping[str, str]:
        """The params of `name@version` that may carry `secret()` (none when unknown)."""
        found = self.info(name, version)
        return found.secret_params if found is not None else {}

    def effects(self, name: str, version: str) -> tuple[str, tuple[Mapping[str, Any], ...]]:
        """What calls of `name@version` may do and its per-call rules (unknown: `write`)."""
        found = self.info(name, version)
        return (found.effects, found.effects_when) if found is not None else ("write", ())

    def resolve(self, name: str, spec: str | None, run_id: str | None = None) -> str:
        """The exact version a step asking for `name@spec` runs in run `run_id`."""
        known = self.versions.get(name)
        if not known:
            raise NotFoundError(f"unknown node '{name}'{did_you_mean(name, self.versions)}")
        wanted = parse_spec(spec)
        if len(wanted) == 3:
            return self._exact(name, str(Semver(*wanted)), known)
        matching = [v for v in known if v.semver[: len(wanted)] == wanted]
        live = [v for v in matching if v.status == "production"]
        rollout = self.rollouts.get(name)
        if (
            rollout is not None
            and run_id is not None
            and any(v.version == rollout.version for v in matching)
            and rollout_bucket(run_id, name) < rollout.percent
        ):
            return rollout.version
        if live:
            return str(max(v.semver for v in live))
        asked = f"{name}@{spec}" if spec else name
        if not matching:
            have = ", ".join(v.version for v in _sorted(known))
            raise PinError(f"no version of {name} matches '{asked}' (known: {have})")
        if all(v.status == "deprecated" for v in matching):
            raise PinError(
                f"every version matching '{asked}' is deprecated; {self._replacement(name)}"
            )
        newest = max(matching, key=lambda v: v.semver)
        raise PinError(
            f"'{asked}' has no production version ({newest.version} is {newest.status}: "
            f"pin it exactly as {name}@{newest.version}, or promote it)"
        )

    def _exact(self, name: str, version: str, known: list[VersionInfo]) -> str:
        found = next((v for v in known if v.version == version), None)
        if found is None:
            have = [v.version for v in _sorted(known)]
            raise NotFoundError(
                f"{name} has no version {version} (known: {', '.join(have)})"
                f"{did_you_mean(version, have)}"
            )
        if found.status == "deprecated":
            raise PinError(f"{name}@{version} is deprecated; {self._replacement(name)}")
        return version

    def _replacement(self, name: str) -> str:
        live = [v for v in self.versions.get(name, []) if v.status == "production"]
        if not live:
            return f"{name} has no production version left"
        return f"use {name}@{max(v.semver for v in live)}"


def _sorted(versions: Iterable[VersionInfo]) -> list[VersionInfo]:
    return sorted(versions, key=lambda v: v.semver)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
