"""Graph mutations: the changes a proposal makes to a workflow, and applying them.

A mutation is data (`{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 7}}`)
so it can be stored with a proposal, shown, validated and applied later. `apply` edits the
JSON form of a spec and validates the result exactly as a push is; `yamledit.edit_source`
makes the same edits to the author's YAML, keeping its comments. Both go through
`apply_to_data` with their own `Editor`, so they cannot disagree on what a mutation means.

Semantics: `update_params` is a JSON merge patch (RFC 7396) of the step's `with` (a null
removes a key, mappings merge, anything else replaces); `set_policy` merges fields into
`retry` (a null field goes back to its default, `retry: null` drops them all) and replaces
`timeout` and `cache` (null removes them).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable, MutableMapping, MutableSequence
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from infra import SpecError, parse_duration
from orchestrator.spec import NODE_REF, STEP_ID, Spec, describe_value
from orchestrator.yamlsource import Problem
from registry import Catalog

__all__ = [
    "MAX_MUTATIONS",
    "AddStep",
    "Editor",
    "Mutation",
    "RemoveStep",
    "ReplaceNode",
    "SetPolicy",
    "UpdateParams",
    "apply_mutations",
    "apply_to_data",
    "describe_mutations",
    "dump_mutations",
    "merge_sets",
    "parse_mutations",
    "parse_pin",
    "parse_set",
]

MAX_MUTATIONS = 64
"""The most mutations one list (a proposal, a command line) may hold."""

_UNKNOWN_STEP = re.compile(r"unknown step '([^']+)'")

SET_FORMS = (
    "STEP.with.KEY[.SUB…]=VALUE, STEP.retry.FIELD=VALUE, STEP.timeout=VALUE or STEP.cache.ttl=VALUE"
)


def _duration_text(value: Any) -> Any:
    parse_duration(value)  # raises ValueError saying what is accepted (a boolean is not one)
    return value  # kept as written: "10s" stays "10s" in the YAML


DurationText = Annotated[str | int | float, BeforeValidator(_duration_text)]
"""A duration as the author writes it ("500ms", "30s", 5); checked, not converted."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPatch(_Model):
    """Fields merged into a step's `retry`; a null field goes back to its default."""

    max_attempts: StrictInt | None = Field(default=None, ge=1)
    initial_interval: DurationText | None = None
    backoff: StrictInt | StrictFloat | None = Field(default=None, ge=1)
    max_interval: DurationText | None = None
    non_retryable: list[str] | None = None


class CachePatch(_Model):
    ttl: DurationText
    allow_secrets: StrictBool | None = None


class _Op(_Model):
    op: str
    step: Any

    def data(self) -> dict[str, Any]:
        """The JSON form, as given (an explicit null stays, an unset field is left out)."""
        return {"op": self.op, **self.model_dump(mode="json", exclude_unset=True)}

    @property
    def step_id(self) -> str:
        return str(self.step)


def _step_id(value: str) -> str:
    if not STEP_ID.fullmatch(value):
        raise ValueError(f"bad step id '{value}'")
    return value


StepId = Annotated[str, AfterValidator(_step_id)]


class UpdateParams(_Op):
    """Merge `params` into the step's `with` (null removes a key; mappings merge)."""

    op: Literal["update_params"] = "update_params"
    step: StepId
    params: dict[str, Any] = Field(min_length=1)


class SetPolicy(_Op):
    """Merge `retry` fields; replace `timeout` and `cache`; null removes."""

    op: Literal["set_policy"] = "set_policy"
    step: StepId
    retry: RetryPatch | None = None
    timeout: DurationText | None = None
    cache: CachePatch | None = None

    @model_validator(mode="after")
    def _something(self) -> SetPolicy:
        if not self.model_fields_set & {"retry", "timeout", "cache"}:
            raise ValueError("set_policy needs at least one of retry, timeout, cache")
        return self


def _node_ref(value: str) -> str:
    if not NODE_REF.fullmatch(value):
        raise ValueError(f"malformed node reference '{value}': write name@version")
    return value


class ReplaceNode(_Op):
    """Run the step on another node or version, e.g. "my.ranker@0.2.0"."""

    op: Literal["replace_node"] = "replace_node"
    step: StepId
    node: Annotated[str, AfterValidator(_node_ref)]


def _new_step(value: dict[str, Any]) -> dict[str, Any]:
    step_id = value.get("id")
    if not isinstance(step_id, str):
        raise ValueError(f"a step needs an id, got {describe_value(step_id)}")
    _step_id(step_id)
    if not isinstance(value.get("node"), str):
        raise ValueError(f"a step needs a node, got {describe_value(value.get('node'))}")
    return value


class AddStep(_Op):
    """Insert `step` (a step mapping as in YAML) after step `after`, or at the end."""

    op: Literal["add_step"] = "add_step"
    step: Annotated[dict[str, Any], AfterValidator(_new_step)]
    after: StepId | None = None

    @property
    def step_id(self) -> str:
        return str(self.step["id"])


class RemoveStep(_Op):
    op: Literal["remove_step"] = "remove_step"
    step: StepId


Mutation = Annotated[
    UpdateParams | SetPolicy | ReplaceNode | AddStep | RemoveStep, Field(discriminator="op")
]
_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Mutation)
_MODELS: dict[str, type[BaseModel]] = {
    "add_step": AddStep,
    "remove_step": RemoveStep,
    "replace_node": ReplaceNode,
    "set_policy": SetPolicy,
    "update_params": UpdateParams,
}
_OPS = tuple(_MODELS)


# ---------------------------------------------------------------------------- parsing


def parse_mutations(data: Any, where: str = "mutation") -> list[Mutation]:
    """A list of mutations (dicts, models, or a JSON text of them; one mapping is a list of
    one), checked. SpecError with one problem per mistake: `mutation[0].retry.backoff: …`."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise SpecError([Problem("", 0, 0, where, f"not JSON: {exc}")]) from None
    if isinstance(data, dict | BaseModel):
        data = [data]
    if not isinstance(data, list):
        got = describe_value(data)
        raise SpecError([Problem("", 0, 0, where, f"expected a list of mutations, got {got}")])
    if len(data) > MAX_MUTATIONS:
        why = f"{len(data)} mutations, over the limit of {MAX_MUTATIONS}"
        raise SpecError([Problem("", 0, 0, where, why)])
    found: list[Mutation] = []
    problems: list[Problem] = []
    for index, item in enumerate(data):
        if isinstance(item, UpdateParams | SetPolicy | ReplaceNode | AddStep | RemoveStep):
            found.append(item)
            continue
        try:
            found.append(_ADAPTER.validate_python(item))
        except pydantic.ValidationError as exc:
            problems.extend(_problems(exc, f"{where}[{index}]"))
    if problems:
        raise SpecError(problems)
    return found


_FIELDS: dict[str, type[BaseModel]] = {"retry": RetryPatch, "cache": CachePatch}


def _problems(exc: pydantic.ValidationError, where: str) -> list[Problem]:
    out = []
    for error in exc.errors():
        loc = list(error["loc"])
        model: type[BaseModel] | None = None
        if loc and loc[0] in _OPS:
            model = _MODELS[str(loc[0])]
            loc = loc[1:]  # the union's tag, not a field
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        kind = error["type"]
        if kind == "union_tag_invalid":
            tag = error.get("ctx", {}).get("tag")
            message = f"unknown op '{tag}' (one of: {', '.join(_OPS)})"
            path += ".op"
        elif kind == "union_tag_not_found":
            message, path = f"missing 'op' (one of: {', '.join(_OPS)})", path + ".op"
        elif kind == "extra_forbidden":
            owner = _FIELDS.get(str(loc[-2])) if len(loc) == 2 else model
            allowed = [f for f in owner.model_fields if f != "op"] if owner else []
            message = "unknown field"
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            message = "missing"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            message = f"expected a mapping, got {describe_value(error.get('input'))}"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind.endswith(("_type", "_parsing")):
                message += f", got {describe_value(error.get('input'))}"
        out.append(Problem("", 0, 0, path, message))
    return out


def parse_set(text: str) -> Mutation:
    """`--set PATH=VALUE`; VALUE is a YAML scalar (`5`, `true`, `10s`, `[a, b]`)."""
    path, eq, raw = text.partition("=")
    parts = path.strip().split(".")
    if not eq or not all(parts):
        _bad_set(text)
    value = _set_value(text, raw)
    step, rest = parts[0], parts[1:]
    data: dict[str, Any]
    if len(rest) >= 2 and rest[0] == "with":
        params: Any = value
        for key in reversed(rest[1:]):
            params = {key: params}
        data = {"op": "update_params", "step": step, "params": params}
    elif len(rest) == 2 and rest[0] == "retry":
        data = {"op": "set_policy", "step": step, "retry": {rest[1]: value}}
    elif rest == ["timeout"]:
        data = {"op": "set_policy", "step": step, "timeout": value}
    elif rest == ["cache", "ttl"]:
        data = {"op": "set_policy", "step": step, "cache": {"ttl": value}}
    else:
        _bad_set(text)
    return _parse_flag("--set", text, data)


def _set_value(text: str, raw: str) -> Any:
    """A YAML scalar; a template (`{{ inputs.x }}`) unquoted is taken as the string it is."""
    template = "{{" in raw or "{%" in raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        if template:
            return raw.strip()
        first = str(exc).splitlines()[0]
        raise SpecError([Problem("", 0, 0, "--set", f"{text!r}: bad value: {first}")]) from None
    return raw.strip() if template and not isinstance(value, str) else value


def _parse_flag(flag: str, text: str, data: dict[str, Any]) -> Mutation:
    try:
        return _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        found = [f"{text!r}: {p.path.lstrip('.')}: {p.message}" for p in _problems(exc, "")]
        raise SpecError([Problem("", 0, 0, flag, line) for line in found]) from None


def _bad_set(text: str) -> Any:
    why = f"{text!r}: expected {SET_FORMS}"
    raise SpecError([Problem("", 0, 0, "--set", why)])


def parse_pin(text: str) -> Mutation:
    """`--pin STEP=node@version` -> ReplaceNode."""
    step, eq, node = (part.strip() for part in text.partition("="))
    if not eq or not step or "@" not in node:
        raise SpecError([Problem("", 0, 0, "--pin", f"{text!r}: expected STEP=NODE@VERSION")])
    return _parse_flag("--pin", text, {"op": "replace_node", "step": step, "node": node})


def merge_sets(mutations: Iterable[Mutation]) -> list[Mutation]:
    """Consecutive `update_params` (or `set_policy`) of one step as one mutation."""
    out: list[Mutation] = []
    for mutation in mutations:
        last = out[-1] if out else None
        if (
            isinstance(mutation, UpdateParams | SetPolicy)
            and type(last) is type(mutation)
            and last is not None
            and last.step_id == mutation.step_id
        ):
            merged = _merge_data(last.data(), mutation.data())
            out[-1] = _ADAPTER.validate_python(merged)
        else:
            out.append(mutation)
    return out


def _merge_data(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(first)
    for key, value in second.items():
        if key in ("params", "retry") and isinstance(value, dict):
            if isinstance(merged.get(key), dict):
                merged[key] = _deep_update(merged[key], value)
                continue
        merged[key] = copy.deepcopy(value)
    return merged


def _deep_update(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def dump_mutations(mutations: Iterable[Mutation]) -> list[dict[str, Any]]:
    """The JSON form of mutations, as a proposal stores them; `parse_mutations` reads it."""
    return [mutation.data() for mutation in mutations]


def describe_mutations(mutations: Iterable[Mutation]) -> str:
    """One line per mutation, for people: `fetch: retry.max_attempts = 7, timeout = 10s`."""
    lines = []
    for mutation in mutations:
        if isinstance(mutation, UpdateParams):
            changes = _changes("with", mutation.params)
            lines.append(f"{mutation.step}: {', '.join(changes)}")
        elif isinstance(mutation, SetPolicy):
            given = mutation.data()
            changes = []
            for field in ("retry", "timeout", "cache"):
                if field in given:
                    value = given[field]
                    if field == "retry" and isinstance(value, dict) and value:
                        changes.extend(_changes("retry", value))
                    else:
                        changes.append(_change(field, value))
            lines.append(f"{mutation.step}: {', '.join(changes)}")
        elif isinstance(mutation, ReplaceNode):
            lines.append(f"{mutation.step}: node = {mutation.node}")
        elif isinstance(mutation, AddStep):
            where = f" after '{mutation.after}'" if mutation.after else " at the end"
            lines.append(f"add step '{mutation.step_id}' ({mutation.step['node']}){where}")
        else:
            lines.append(f"remove step '{mutation.step}'")
    return "\n".join(lines)


def _changes(prefix: str, patch: dict[str, Any]) -> list[str]:
    out = []
    for key, value in patch.items():
        if isinstance(value, dict) and value:
            out.extend(_changes(f"{prefix}.{key}", value))
        else:
            out.append(_change(f"{prefix}.{key}", value))
    return out


def _change(path: str, value: Any) -> str:
    if value is None:
        return f"{path} removed"
    shown = value if isinstance(value, str) and value and "\n" not in value else None
    shown = shown if shown is not None else json.dumps(value, ensure_ascii=False)
    return f"{path} = {shown if len(shown) <= 60 else shown[:57] + '...'}"


# --------------------------------------------------------------------------- applying


class Editor:
    """How a document changes. This one edits plain JSON data; `yamledit` keeps comments."""

    def new(self, value: Any, old: Any = None) -> Any:
        """`value` as the document holds it (`old`: what it replaces, if anything)."""
        return copy.deepcopy(value)

    def set(self, mapping: MutableMapping[Any, Any], key: str, value: Any) -> None:
        mapping[key] = self.new(value, mapping.get(key))

    def delete(self, mapping: MutableMapping[Any, Any], key: str) -> None:
        del mapping[key]

    def own(self, container: Any, key: Any) -> Any:
        """The value at `key`, safe to change in place (not shared with other places)."""
        return container[key]

    def insert_step(self, steps: MutableSequence[Any], index: int, step: dict[str, Any]) -> None:
        steps.insert(index, self.new(step))

    def delete_step(self, steps: MutableSequence[Any], index: int) -> None:
        del steps[index]


def apply_mutations(
    spec: Spec,
    mutations: list[Mutation],
    catalog: Catalog | None = None,
    ref: str | None = None,
) -> Spec:
    """The workflow with `mutations` applied in order, validated as a push is. SpecError
    when a mutation cannot apply (an unknown step, an id taken) or the result is not valid
    (a cycle, a template reading a removed step), each problem saying "`ref` with
    mutations" and the path. `spec` is left as it is."""
    from orchestrator.validate import validate_data

    ref = ref or spec.id
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    problems = apply_to_data(data, mutations, Editor(), ref)
    if problems:
        raise SpecError(problems)
    changed, found = validate_data(data, ref, catalog)
    if changed is None:
        # Lines of a text nobody wrote would mislead: the path says where.
        removed = {m.step: i for i, m in enumerate(mutations) if isinstance(m, RemoveStep)}
        raise SpecError(
            [
                Problem(f"{ref} with mutations", 0, 0, p.path, _removed_by(p.message, removed))
                for p in found
            ]
        )
    return changed


def _removed_by(message: str, removed: dict[str, int]) -> str:
    """Say which mutation removed the step a problem reads."""
    match = _UNKNOWN_STEP.search(message)
    if match is None or match.group(1) not in removed:
        return message
    return f"{message} (removed by mutation[{removed[match.group(1)]}])"


def apply_to_data(
    data: MutableMapping[Any, Any], mutations: list[Mutation], editor: Editor, ref: str
) -> list[Problem]:
    """Apply `mutations` to a workflow's data in place through `editor`; the problems of
    those that could not apply (the others still do, so every mistake is reported)."""
    problems: list[Problem] = []
    steps = data.get("steps")
    if not isinstance(steps, MutableSequence):
        return [Problem(f"{ref} with mutations", 0, 0, "steps", "the workflow has no steps")]
    for index, mutation in enumerate(mutations):
        where = f"mutation[{index}]"
        why = _apply_one(steps, mutation, editor, ref, where)
        if why is not None:
            problems.append(Problem(f"{ref} with mutations", 0, 0, *why))
    return problems


def _apply_one(
    steps: MutableSequence[Any], mutation: Mutation, editor: Editor, ref: str, where: str
) -> tuple[str, str] | None:
    ids = [s.get("id") if isinstance(s, MutableMapping) else None for s in steps]
    if isinstance(mutation, AddStep):
        if mutation.step_id in ids:
            return f"{where}.step.id", f"a step '{mutation.step_id}' exists already in {ref}"
        at = len(steps)
        if mutation.after is not None:
            if mutation.after not in ids:
                return f"{where}.after", _no_step(mutation.after, ids, ref)
            at = ids.index(mutation.after) + 1
        editor.insert_step(steps, at, mutation.step)
        return None
    if mutation.step not in ids:
        return f"{where}.step", _no_step(mutation.step, ids, ref)
    index = ids.index(mutation.step)
    if isinstance(mutation, RemoveStep):
        editor.delete_step(steps, index)
        return None
    step = editor.own(steps, index)
    if isinstance(mutation, ReplaceNode):
        editor.set(step, "node", mutation.node)
    elif isinstance(mutation, UpdateParams):
        if not isinstance(step.get("with"), MutableMapping):
            editor.set(step, "with", {})
        _merge_patch(editor, step, "with", mutation.params)
        if not step["with"]:  # every param removed
            editor.delete(step, "with")
    else:
        given = mutation.data()
        if "retry" in given:
            _set_retry(editor, step, given["retry"])
        for field in ("timeout", "cache"):
            if field in given:
                if given[field] is None:
                    if field in step:
                        editor.delete(step, field)
                else:
                    editor.set(step, field, given[field])
    return None


def _no_step(step_id: str, ids: list[Any], ref: str) -> str:
    known = [i for i in ids if isinstance(i, str)]
    close = difflib.get_close_matches(step_id, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (steps: {', '.join(known)})"
    return f"no step '{step_id}' in {ref}{hint}"


def _merge_patch(
    editor: Editor, parent: MutableMapping[Any, Any], key: str, patch: dict[str, Any]
) -> None:
    """RFC 7396 on `parent[key]`, a mapping."""
    target = editor.own(parent, key)
    for name, value in patch.items():
        if value is None:
            if name in target:
                editor.delete(target, name)
        elif isinstance(value, dict) and isinstance(target.get(name), MutableMapping):
            _merge_patch(editor, target, name, value)
        else:
            editor.set(target, name, _without_nulls(value))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _set_retry(
    editor: Editor, step: MutableMapping[Any, Any], patch: dict[str, Any] | None
) -> None:
    if patch is None:
        if "retry" in step:
            editor.delete(step, "retry")
        return
    if not isinstance(step.get("retry"), MutableMapping):
        editor.set(step, "retry", {})
    _merge_patch(editor, step, "retry", patch)
    if not step["retry"]:  # every field back to its default
        editor.delete(step, "retry")
