"""YAML text to plain data plus where every piece of it came from.

`yaml.safe_load` throws positions away and silently keeps the last of two equal keys; a
workflow author needs `flows/a.yaml:12:5: steps[2].node: …`. So we compose the node tree
ourselves (SafeLoader, so the data is exactly what `safe_load` gives), record the 1-based
line/column of every value and of every mapping key, and report duplicate keys.

`Problem` lives here because this is the lowest layer that produces one; `spec` and
`validate` re-use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Path", "Problem", "Source", "format_path", "load_source"]

Path = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_WALKED_NODES = 200_000


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a workflow, and where. Line and column are 1-based; 0 = unknown."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            where = f"{self.file}: " if self.file else ""
            return f"{where}{self.path}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"


def format_path(path: Iterable[str | int]) -> str:
    """("steps", 2, "node") -> "steps[2].node"; () -> "<root>"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclasses.dataclass
class Source:
    """Parsed YAML: `data` as `safe_load` returns it, plus positions by path."""

    filename: str
    data: Any = None
    values: dict[Path, tuple[int, int]] = dataclasses.field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = dataclasses.field(default_factory=dict)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    syntax_ok: bool = True

    def locate(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Line/col of the value at `path` (of its key when `key`), else of its nearest parent."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def problem(self, path: Path, message: str, *, key: bool = False) -> Problem:
        line, col = self.locate(path, key=key)
        return Problem(self.filename, line, col, format_path(path), message)


def load_source(text: str, filename: str = "<string>") -> Source:
    """Parse `text`; syntax errors and duplicate keys land in `Source.problems`, never raise."""
    source = Source(filename)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            source.values[()] = (1, 1)
            return source
        _Walker(loader, source).walk(root, ())
        source.data = loader.construct_document(root)
    except _RecursiveAlias as exc:
        source.syntax_ok = False
        line, col = _pos(exc.node)
        source.problems.append(Problem(filename, line, col, "<root>", exc.message))
    except yaml.MarkedYAMLError as exc:
        source.syntax_ok = False
        source.problems.append(_syntax_problem(filename, exc))
    except yaml.YAMLError as exc:
        source.syntax_ok = False
        line, col = _reader_position(text, exc)
        if isinstance(exc, yaml.reader.ReaderError):
            message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        else:
            message = str(exc).splitlines()[0]
        source.problems.append(Problem(filename, line, col, "<root>", f"YAML error: {message}"))
    except RecursionError:
        source.syntax_ok = False
        source.problems.append(Problem(filename, 1, 1, "<root>", "YAML is nested too deeply"))
    finally:
        if loader is not None:
            loader.dispose()
    return source


class _RecursiveAlias(Exception):
    def __init__(self, node: Node, message: str = "an alias refers to a node that contains it"):
        self.node = node
        self.message = message


class _Walker:
    """Records positions while walking the composed tree, before construction flattens merges."""

    def __init__(self, loader: yaml.SafeLoader, source: Source) -> None:
        self.loader = loader
        self.source = source
        self.active: set[int] = set()
        self.budget = _MAX_WALKED_NODES

    def walk(self, node: Node, path: Path) -> None:
        # Aliases are walked once per use, so nested aliases ("billion laughs") blow up here.
        self.budget -= 1
        if self.budget < 0:
            raise _RecursiveAlias(node, "too many nodes once aliases are expanded")
        self.source.values.setdefault(path, _pos(node))
        # An alias that points back at one of its ancestors makes the data infinite.
        if id(node) in self.active:
            raise _RecursiveAlias(node)
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                self._mapping(node, path)
            elif isinstance(node, SequenceNode):
                for index, item in enumerate(node.value):
                    self.walk(item, (*path, index))
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path) -> None:
        first_seen: dict[Any, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node)
            if key is None:
                continue
            if key in first_seen:
                line = first_seen[key].start_mark.line + 1
                line_no, col = _pos(key_node)
                self.source.problems.append(
                    Problem(
                        self.source.filename,
                        line_no,
                        col,
                        format_path((*path, key)),
                        f"duplicate key '{key}' (first at line {line})",
                    )
                )
                continue
            first_seen[key] = key_node
            child = (*path, key)
            self.source.keys[child] = _pos(key_node)
            self.walk(value_node, child)

    def _key(self, key_node: Node) -> Any:
        if not isinstance(key_node, ScalarNode):
            return None
        # The constructed key (so `1:` is the int 1), to match the data `safe_load` builds.
        key = self.loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            return None
        return key


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _syntax_problem(filename: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = exc.problem or "invalid YAML"
    if exc.context and "single document" in exc.context:
        return Problem(filename, line, col, "<root>", "a workflow file holds one YAML document")
    if exc.context and exc.context_mark and exc.context_mark is not mark:
        what = f"{what} ({exc.context} at line {exc.context_mark.line + 1})"
    elif exc.context:
        what = f"{exc.context}, {what}"
    return Problem(filename, line, col, "<root>", f"YAML syntax error: {what}")


def _reader_position(text: str, exc: yaml.YAMLError) -> tuple[int, int]:
    position = getattr(exc, "position", None)
    if not isinstance(position, int):
        return 1, 1
    before = text[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1
