"""`validate`: a workflow file in, a `Spec` or every problem with its line and column out.

Checks run in layers so one mistake doesn't hide the others: YAML syntax, then shape
(pydantic), then workflow rules (ids, needs, templates, nodes, cycles) on every step that
has a usable shape. Nothing here raises for a bad file; `parse_spec` is the raising form.

Rules the engine relies on:
- `if` is evaluated once per step, before `for_each` expands, so `item`/`index` may only
  appear in the `with` of a step that has `for_each`.
- A step depends on the steps in its `needs` and on every step its templates read
  (`dependencies`); workflow `outputs` may read any step.
- `core.delay` and `core.switch` run inside the workflow; they count as served at 1.0.0.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import deque
from typing import Any

import pydantic
import yaml

from infra import ExpressionError, NotFoundError, PinError, SpecError
from orchestrator import expressions
from orchestrator.spec import CacheSpec, InputSpec, RetrySpec, Spec, StepSpec, describe_value
from orchestrator.yamlsource import Path, Problem, Source, load_source
from registry import Catalog

__all__ = [
    "META_NODES",
    "Problem",
    "dependencies",
    "parse_spec",
    "step_references",
    "validate_file",
    "validate_text",
]

META_NODES: dict[str, list[str]] = {"core.delay": ["1.0.0"], "core.switch": ["1.0.0"]}
"""Nodes the engine runs in the workflow itself, and the versions it implements."""

_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_BOOLS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})
_TEMPLATED_FIELDS = ("with", "if", "for_each")
_SECRET_CALL = re.compile(r"\bsecret\s*\(")
_SECRET_LITERAL = re.compile(r"\bsecret\s*\(\s*(['\"])[A-Za-z_][A-Za-z0-9_]*\1\s*\)")


SOURCE_MAX_BYTES = 512 * 1024
"""The default of `settings.limits.source_max_bytes`, for callers without settings."""


def source_too_large(size: int, filename: str, max_bytes: int) -> Problem | None:
    """The problem of a source of `size` bytes over `max_bytes`: parsing it would take
    seconds of CPU (YAML and the checks are not linear), so it is refused unread."""
    if size <= max_bytes:
        return None
    why = f"the source is {size} bytes, over the limit of {max_bytes} (REFLUX_SOURCE_MAX_BYTES)"
    return Problem(filename, 0, 0, "<root>", why)


def validate_data(
    data: Any, filename: str = "<string>", catalog: Catalog | None = None
) -> tuple[Spec | None, list[Problem]]:
    """`validate_text` of a workflow held as data (a spec dump with changes applied): it is
    written out as YAML, so every value reads back as it is (JSON would not: YAML 1.1 reads
    JSON's `1e-07` as a string), and checked exactly as a pushed source is."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16)
    return validate_text(text, filename, catalog, max_bytes=len(text.encode()) + 1)


def validate_text(
    text: str,
    filename: str = "<string>",
    catalog: Catalog | None = None,
    max_bytes: int = SOURCE_MAX_BYTES,
) -> tuple[Spec | None, list[Problem]]:
    """Parse and check a workflow. Node references are resolved against `catalog` (the
    registry's versions); None skips node checks. Returns (spec, []) when valid, else
    (None, problems sorted by position). A source over `max_bytes` is one problem, unread."""
    if (too_large := source_too_large(len(text.encode()), filename, max_bytes)) is not None:
        return None, [too_large]
    source = load_source(text, filename)
    if not source.syntax_ok:
        return None, sorted(source.problems)
    if source.data is None:
        return None, [source.problem((), "the file is empty; a workflow needs id and steps")]
    if not isinstance(source.data, dict):
        got = describe_value(source.data)
        return None, [source.problem((), f"expected a mapping with id and steps, got {got}")]
    checker = _Checker(source, catalog)
    spec = checker.run(source.data)
    problems = sorted(set(source.problems + checker.problems))
    return (None if problems else spec), problems


def validate_file(
    path: str | os.PathLike[str], catalog: Catalog | None = None
) -> tuple[Spec | None, list[Problem]]:
    """`validate_text` on a file; an unreadable file is a problem too, not an exception."""
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8-sig") as handle:
            text = handle.read()
    except OSError as exc:
        return None, [Problem(filename, 0, 0, "<root>", f"cannot read file: {exc.strerror}")]
    except UnicodeDecodeError as exc:
        return None, [Problem(filename, 0, 0, "<root>", f"not UTF-8 text: {exc.reason}")]
    return validate_text(text, filename, catalog)


def parse_spec(text: str, filename: str = "<string>", catalog: Catalog | None = None) -> Spec:
    """The raising form of `validate_text`: a valid `Spec`, or SpecError with every problem."""
    spec, problems = validate_text(text, filename, catalog)
    if spec is None:
        raise SpecError(problems)
    return spec


def step_references(step: StepSpec) -> expressions.References:
    """What the templates of one step (`with`, `if`, `for_each`) read."""
    return expressions.references([step.with_, step.if_, step.for_each])


def dependencies(spec: Spec) -> dict[str, set[str]]:
    """Step id -> ids of the steps it waits for: its `needs` plus every step its templates read."""
    known = {step.id for step in spec.steps}
    graph: dict[str, set[str]] = {}
    for step in spec.steps:
        wanted = set(step.needs) | set(step_references(step).step_ids)
        graph[step.id] = {other for other in wanted if other in known and other != step.id}
    return graph


class _Checker:
    def __init__(self, source: Source, catalog: Catalog | None) -> None:
        self.source = source
        self.catalog = None if catalog is None else catalog.with_defaults(META_NODES)
        self.problems: list[Problem] = []
        self.input_names: set[str] = set()
        self.step_ids: list[str] = []
        # (step id, needed id) -> where the dependency is written, for cycle reports.
        self.edges: dict[tuple[str, str], Path] = {}

    def add(self, path: Path, message: str, *, key: bool = False) -> None:
        self.problems.append(self.source.problem(path, message, key=key))

    def run(self, data: dict[Any, Any]) -> Spec | None:
        spec: Spec | None = None
        try:
            spec = Spec.model_validate(data, by_name=False)
        except pydantic.ValidationError as exc:
            self._shape_errors(exc, data)
        inputs = data.get("inputs")
        if isinstance(inputs, dict):
            self.input_names = {name for name in inputs if isinstance(name, str)}
            self._check_inputs(inputs)
        steps = data.get("steps")
        if isinstance(steps, list):
            self._check_steps(steps)
        outputs = data.get("outputs")
        if isinstance(outputs, dict):
            for name, value in outputs.items():
                self._check_templates(("outputs", name), value, None, "outputs")
        self._check_cycles()
        return spec

    # ------------------------------------------------------------------------------ shape

    def _shape_errors(self, exc: pydantic.ValidationError, data: Any) -> None:
        suggested: set[Path] = set()
        missing: list[tuple[Path, str]] = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            kind = error["type"]
            if "[key]" in loc:
                where = loc[: loc.index("[key]")]
                self.add(
                    where, f"names here must be strings, got {describe_value(where[-1])}", key=True
                )
            elif kind == "missing":
                missing.append((loc, f"missing required key '{loc[-1]}'"))
            elif kind == "extra_forbidden":
                allowed = _allowed_keys(loc[:-1])
                hint = _suggest(str(loc[-1]), allowed)
                if hint:
                    suggested.add((*loc[:-1], hint[1]))
                    message = f"unknown key '{loc[-1]}'; did you mean '{hint[1]}'?"
                elif allowed:
                    message = f"unknown key '{loc[-1]}' (allowed: {', '.join(allowed)})"
                else:
                    message = f"unknown key '{loc[-1]}'"
                self.add(loc, message, key=True)
            else:
                self.add(_present_prefix(loc, data), _shape_message(error))
        for loc, message in missing:
            if loc not in suggested:  # "unknown key 'step'; did you mean 'steps'?" says it all
                self.add(loc[:-1], message)

    # ----------------------------------------------------------------------------- inputs

    def _check_inputs(self, inputs: dict[Any, Any]) -> None:
        for name, raw in inputs.items():
            path = ("inputs", name)
            if isinstance(name, str) and not _INPUT_NAME.fullmatch(name):
                self.add(
                    path,
                    f"bad input name '{name}': use letters, digits and '_' so templates "
                    "can read it as inputs.<name>",
                    key=True,
                )
            try:
                spec = InputSpec.model_validate(raw if raw is not None else {}, by_name=False)
            except pydantic.ValidationError:
                continue  # already reported by the shape check
            has_default = isinstance(raw, dict) and "default" in raw
            if spec.required and has_default:
                self.add(
                    (*path, "default"),
                    "a required input can't have a default; drop `required` or the default",
                )
            elif has_default and spec.default is not None:
                why = spec.check(spec.default)
                if why:
                    self.add((*path, "default"), f"default doesn't match type '{spec.type}': {why}")

    # ------------------------------------------------------------------------------ steps

    def _check_steps(self, raw_steps: list[Any]) -> None:
        first_at: dict[str, int] = {}
        for index, raw in enumerate(raw_steps):
            step_id = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(step_id, str):
                continue
            if step_id in first_at:
                line = self.source.locate(("steps", first_at[step_id], "id"))[0]
                self.add(
                    ("steps", index, "id"), f"duplicate step id '{step_id}' (first at line {line})"
                )
            else:
                first_at[step_id] = index
                self.step_ids.append(step_id)
        for index, raw in enumerate(raw_steps):
            step, bad_fields = _usable_step(raw)
            if step is not None:
                self._check_step(index, step, bad_fields)

    def _check_step(self, index: int, step: StepSpec, bad_fields: set[str]) -> None:
        path: Path = ("steps", index)
        for position, needed in enumerate(step.needs):
            where = (*path, "needs", position)
            if needed == step.id:
                self.add(where, f"step '{step.id}' needs itself")
            elif needed not in self.step_ids:
                hint = _hint(needed, self.step_ids)
                self.add(where, f"needs unknown step '{needed}'{hint}")
            else:
                self.edges.setdefault((step.id, needed), where)
        if "node" not in bad_fields:
            self._check_node(path, step)
        if step.concurrency is not None and step.for_each is None:
            self.add((*path, "concurrency"), "concurrency only applies to a step with for_each")
        if step.for_each is not None and step.node_name in META_NODES:
            self.add(
                (*path, "for_each"),
                f"{step.node_name} runs in the workflow itself and can't have for_each",
                key=True,
            )
        if isinstance(step.if_, str) and not expressions.is_template(step.if_):
            if step.if_.strip().lower() not in _PLAIN_BOOLS:
                self.add(
                    (*path, "if"),
                    f"'if' must be a template like \"{{{{ steps.a.output.ok }}}}\" or "
                    f"true/false; got plain string {step.if_!r}",
                )
        for field in _TEMPLATED_FIELDS:
            value = {"with": step.with_, "if": step.if_, "for_each": step.for_each}[field]
            self._check_templates((*path, field), value, step, field)

    def _check_node(self, path: Path, step: StepSpec) -> None:
        if self.catalog is None:
            return
        try:
            self.catalog.resolve(step.node_name, step.node_version_spec)
        except (NotFoundError, PinError) as exc:
            self.add((*path, "node"), str(exc))

    # -------------------------------------------------------------------------- templates

    def _check_templates(self, base: Path, value: Any, step: StepSpec | None, field: str) -> None:
        for relative, source in expressions.iter_templates(value):
            path = (*base, *relative)
            try:
                refs = expressions.references(source)
            except ExpressionError as exc:
                self.add(path, str(exc))
                continue
            for name in sorted(refs.inputs - self.input_names):
                hint = _hint(name, sorted(self.input_names))
                self.add(path, f"undefined input '{name}'{hint}")
            for step_id, attributes in sorted(refs.steps.items()):
                self._check_step_reference(path, step, step_id, attributes)
            if refs.dynamic_steps and step is not None:
                self.add(
                    path,
                    "read steps by a literal id (steps.fetch.output or steps['fetch'].output): "
                    "a computed id hides the dependency",
                )
            for name in ("item", "index"):
                if getattr(refs, name):
                    self._check_loop_name(path, step, field, name)
            if _SECRET_CALL.search(source):
                self._check_secret_use(path, source, step, field, relative)
            for name in sorted(refs.unknown_names):
                allowed = sorted(expressions.CONTEXT_NAMES)
                self.add(
                    path,
                    f"'{name}' is undefined{_hint(name, allowed)} (templates can read "
                    "inputs, steps, item, index, run and secret('NAME'))",
                )

    def _check_secret_use(
        self, path: Path, source: str, step: StepSpec | None, field: str, relative: Path
    ) -> None:
        """`secret('NAME')` only with a literal name, only in a param its node marks as
        secret-bearing (`query` ones only after the URL's `?`)."""
        if len(_SECRET_CALL.findall(source)) != len(_SECRET_LITERAL.findall(source)):
            self.add(path, "secret() takes a literal name: secret('API_KEY')")
            return
        marked = self._secret_params(step) if step is not None and field == "with" else {}
        param = str(relative[0]) if relative else ""
        kind = marked.get(param)
        if kind is None:
            node = step.node_name if step is not None else "this field"
            where = (
                f"{node} takes secret() only in: {', '.join(sorted(marked))}"
                if marked
                else (f"{node} takes no secret()")
            )
            self.add(path, f"secret() is not allowed here ({where})")
        elif kind == "query" and len(relative) == 1:
            first = _SECRET_CALL.search(source)
            if first is not None and "?" not in source[: first.start()]:
                self.add(path, f"secret() in {param} may be used only in its query string")

    def _secret_params(self, step: StepSpec) -> dict[str, str]:
        """What the step's node marks as secret-bearing: from the catalog's resolved version,
        else (no registry at hand) the built-in library's newest version of that name."""
        if self.catalog is not None:
            try:
                version = self.catalog.resolve(step.node_name, step.node_version_spec)
            except (NotFoundError, PinError):
                return {}
            return dict(self.catalog.secret_params(step.node_name, version))
        from nodes import builtin_catalog

        found = [n for n in builtin_catalog().nodes() if n.name == step.node_name]
        return dict(found[-1].secret_params) if found else {}

    def _check_step_reference(
        self, path: Path, step: StepSpec | None, step_id: str, attributes: frozenset[str]
    ) -> None:
        if step is not None and step_id == step.id:
            self.add(path, f"step '{step_id}' reads its own result")
            return
        if step_id not in self.step_ids:
            self.add(path, f"unknown step '{step_id}'{_hint(step_id, self.step_ids)}")
            return
        for attribute in sorted(attributes - set(expressions.STEP_ATTRIBUTES)):
            hint = _hint(attribute, list(expressions.STEP_ATTRIBUTES))
            self.add(path, f"'steps.{step_id}' has no attribute '{attribute}'{hint}")
        if step is not None:
            self.edges.setdefault((step.id, step_id), path)

    def _check_loop_name(self, path: Path, step: StepSpec | None, field: str, name: str) -> None:
        if step is None:
            self.add(path, f"'{name}' is only defined inside a step with for_each")
        elif field == "if":
            self.add(
                path,
                f"'{name}' is not defined in 'if': it is evaluated once per step, before for_each",
            )
        elif field == "for_each":
            self.add(path, f"'{name}' can't be used in for_each itself")
        elif step.for_each is None:
            self.add(path, f"'{name}' is only defined inside a step with for_each")

    # ----------------------------------------------------------------------------- cycles

    def _check_cycles(self) -> None:
        graph: dict[str, list[str]] = {step_id: [] for step_id in self.step_ids}
        for source, target in self.edges:
            graph[source].append(target)
        reported: set[str] = set()
        for start in self.step_ids:
            if start in reported:
                continue
            cycle = _shortest_cycle(graph, start)
            if cycle is None:
                continue
            reported.update(cycle)
            where = self.edges[(cycle[0], cycle[1])]
            self.add(where, "cycle: " + " -> ".join(cycle))


def _usable_step(raw: Any) -> tuple[StepSpec | None, set[str]]:
    """The step with its broken fields dropped, so its other fields still get checked.
    Returns the names of the dropped fields; their problems are already reported."""
    if not isinstance(raw, dict):
        return None, set()
    try:
        return StepSpec.model_validate(raw, by_name=False), set()
    except pydantic.ValidationError as exc:
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    step_id = raw.get("id")
    if not isinstance(step_id, str):
        return None, bad
    cleaned = {key: value for key, value in raw.items() if key not in bad}
    # Stand-ins for broken required fields; the real id is put back after validation.
    cleaned.update(id="placeholder", node=cleaned.get("node", "placeholder"))
    try:
        step = StepSpec.model_validate(cleaned, by_name=False)
    except pydantic.ValidationError:
        return None, bad
    return step.model_copy(update={"id": step_id}), bad


def _shortest_cycle(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """[start, …, start] following edges, or None; breadth-first so the report is short."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for following in graph.get(current, ()):
            if following == start:
                path = [current]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if following not in came_from:
                came_from[following] = current
                queue.append(following)
    return None


# ----------------------------------------------------------------------------- messages

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _shape_message(error: Any) -> str:
    kind = error["type"]
    got = describe_value(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        choices = [choice.strip() for choice in re.split(r",| or ", expected) if choice.strip()]
        hint = _hint(str(error.get("input")), choices)
        return f"expected one of {', '.join(choices)}; got {got}{hint}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {got}"
    if kind == "too_short" and error["loc"] == ("steps",):
        return "a workflow needs at least one step"
    return f"{error['msg']}, got {got}"


_MODELS_BY_SHAPE: list[tuple[tuple[Any, ...], type[pydantic.BaseModel]]] = [
    ((), Spec),
    (("inputs", str), InputSpec),
    (("steps", int), StepSpec),
    (("steps", int, "retry"), RetrySpec),
    (("steps", int, "cache"), CacheSpec),
]


def _allowed_keys(path: Path) -> list[str]:
    for shape, model in _MODELS_BY_SHAPE:
        if len(shape) == len(path) and all(
            part == want if isinstance(want, str) else isinstance(part, want)
            for part, want in zip(path, shape, strict=True)
        ):
            return [field.alias or name for name, field in model.model_fields.items()]
    return []


def _present_prefix(loc: tuple[Any, ...], data: Any) -> Path:
    """The longest prefix of a pydantic location that exists in the data (drops union tags)."""
    prefix: list[Any] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            break
        prefix.append(part)
    return tuple(prefix)


def _suggest(word: str, candidates: list[str]) -> tuple[str, str] | None:
    close = difflib.get_close_matches(word, candidates, n=1)
    return (word, close[0]) if close else None


def _hint(word: str, candidates: list[str]) -> str:
    found = _suggest(word, candidates)
    return f"; did you mean '{found[1]}'?" if found else ""
