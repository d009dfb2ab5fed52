"""Mutations applied to a workflow's YAML source, keeping what its author wrote.

A proposal's change lands as a new version whose YAML a person reads and diffs; re-dumping
the spec would throw away comments, key order, quoting, anchors and layout. So the source
is loaded in ruamel.yaml's round-trip mode and edited in place through the same
`mutations.apply_to_data` that `mutations.apply_mutations` uses, with an `Editor` that keeps the
text's look: new strings quoted the way the source quotes them, new nested values in flow
style (`retry: {max_attempts: 7}`), new step keys where the field order of the format
puts them, an aliased value copied before it changes (the anchor's other users keep
theirs), and the blank lines and comments that follow an edited item kept in their place.

ruamel hangs a comment on the deepest last item before it ("tail"), or on the next
sequence item; most of this module moves those tails when items come and go.
"""

from __future__ import annotations

import difflib
import io
from collections import Counter
from collections.abc import MutableMapping, MutableSequence
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    ScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken

from infra import SpecError
from orchestrator.mutations import Editor, Mutation, apply_to_data, parse_mutations
from orchestrator.spec import StepSpec
from orchestrator.yamlsource import Problem

__all__ = ["diff_sources", "edit_source"]

_WIDTH = 1 << 16
"""Wide enough that ruamel never re-wraps a line."""

_INDENTS = [(2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (2, 3, 1), (3, 3, 0)]
"""(mapping, sequence, offset) layouts tried, the examples' own first."""

_FIELDS = [field.alias or name for name, field in StepSpec.model_fields.items()]
_STEP_KEYS = [*_FIELDS[:2], *_FIELDS[3:7], _FIELDS[2], *_FIELDS[7:]]
"""Where a new key goes in a step: the format's order, with `with` after what decides
whether and how often the step runs (as the examples write it)."""


def edit_source(source: str, mutations: list[Mutation] | Any, ref: str = "<source>") -> str:
    """`source` with `mutations` applied, every other line as it was. SpecError when a
    mutation cannot apply (unknown step, id taken) or the source is not a workflow
    mapping. Does not validate the result: callers validate the text they store."""
    mutations = parse_mutations(mutations) if not _parsed(mutations) else mutations
    crlf = "\r\n" in source
    source = source.replace("\r\n", "\n")  # ruamel keeps the \r in comments
    try:
        yaml_rt, data = _load(source)
    except YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise SpecError([Problem(ref, 0, 0, "<root>", f"YAML error: {first}")]) from None
    if not isinstance(data, CommentedMap):
        raise SpecError([Problem(ref, 0, 0, "<root>", "expected a workflow mapping")])
    problems = apply_to_data(data, mutations, _YamlEditor(data), ref)
    if problems:
        raise SpecError(problems)
    text = _dump(yaml_rt, data)
    if not source.endswith("\n"):
        text = text.removesuffix("\n")
    return text.replace("\n", "\r\n") if crlf else text


def diff_sources(old: str, new: str, old_name: str = "old", new_name: str = "new") -> str:
    """A unified diff of two sources, two lines of context."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name, n=2
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _parsed(mutations: Any) -> bool:
    return isinstance(mutations, list) and all(hasattr(m, "data") for m in mutations)


# ------------------------------------------------------------------------------ layout


def _new_yaml(mapping: int, sequence: int, offset: int) -> YAML:
    yaml_rt = YAML(typ="rt")
    yaml_rt.preserve_quotes = True
    yaml_rt.width = _WIDTH
    yaml_rt.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml_rt


def _load(source: str) -> tuple[YAML, Any]:
    """The data of `source`, and the layout that dumps it back with the fewest changed lines."""
    head = next((ln for ln in source.splitlines() if ln.strip() and ln[0] != "#"), "")
    explicit_start = head.rstrip() == "---" or head.startswith("--- ")
    data = _new_yaml(*_INDENTS[0]).load(source)
    best: tuple[int, YAML] | None = None
    lines = Counter(source.splitlines())
    for indents in _INDENTS:
        yaml_rt = _new_yaml(*indents)
        yaml_rt.explicit_start = explicit_start
        # lines the dump has that the source has not: linear, where a diff of a large
        # source would take seconds per layout
        changed = sum((Counter(_dump(yaml_rt, data).splitlines()) - lines).values())
        if best is None or changed < best[0]:
            best = (changed, yaml_rt)
        if changed == 0:
            break
    assert best is not None
    return best[1], data


def _dump(yaml_rt: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml_rt.dump(data, out)
    return out.getvalue()


# ------------------------------------------------------------------------------ values


def _flow_safe(value: Any) -> bool:
    if isinstance(value, str):
        return "\n" not in value
    if isinstance(value, dict):
        return all(_flow_safe(v) for v in value.values())
    if isinstance(value, list):
        return all(_flow_safe(v) for v in value)
    return True


def _plain_ok(text: str) -> bool:
    """Whether `text` can be written unquoted anywhere, flow collections included."""
    if not text or text != text.strip():
        return False
    try:
        return yaml.safe_load(f"[{text}]") == [text]
    except yaml.YAMLError:
        return False


def _string(value: str, old: Any, quote: type[ScalarString]) -> Any:
    if "\n" in value:
        return LiteralScalarString(value)
    if isinstance(old, DoubleQuotedScalarString | SingleQuotedScalarString):
        quote = type(old)
    elif _plain_ok(value):
        return value
    if quote is DoubleQuotedScalarString and '"' in value and "'" not in value:
        quote = SingleQuotedScalarString
    return quote(value)


def _is_block(node: Any) -> bool:
    return isinstance(node, CommentedMap | CommentedSeq) and not node.fa.flow_style()


# ----------------------------------------------------------------------------- comments


def _is_block_scalar(value: Any) -> bool:
    return isinstance(value, LiteralScalarString | FoldedScalarString)


def _last(node: Any) -> Any:
    return list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1


def _take_tail(node: Any) -> str:
    """Cut what follows `node`'s last line (blank lines, comments on what comes next)."""
    if not _is_block(node) or not len(node):
        return ""
    return _take_item_tail(node, _last(node))


def _take_item_tail(node: Any, key: Any) -> str:
    """Cut what follows the last line of `node[key]`."""
    value = node[key]
    if _is_block(value) and len(value):
        deeper = _take_tail(value)
        if deeper:
            return deeper
    entry = node.ca.items.get(key)
    at = 2 if isinstance(node, CommentedMap) else 0
    if not entry or len(entry) <= at or entry[at] is None:
        return ""
    token = entry[at]
    if _is_block_scalar(value):  # its text ends its last line: the comment is all tail
        entry[at] = None
        return str(token.value)
    first, newline, rest = token.value.partition("\n")
    token.value = first + newline
    return rest


def _give_tail(node: Any, text: str, *, key: Any = None) -> None:
    """Hang `text` after `node`'s last line (after its item `key`, when given)."""
    if not text or not len(node):
        return
    key = _last(node) if key is None else key
    value = node[key]
    if _is_block(value) and len(value):
        _give_tail(value, text)
        return
    at = 2 if isinstance(node, CommentedMap) else 0
    entry = node.ca.items.setdefault(key, [None] * (4 if at == 2 else 2))
    if entry[at] is None:
        start = "" if _is_block_scalar(value) else "\n"
        entry[at] = CommentToken(start + text, CommentMark(0), None)
    else:
        entry[at].value = entry[at].value + text


def _peek_tail(node: Any) -> str:
    tail = _take_tail(node)
    _give_tail(node, tail)
    return tail


def _leading_blanks(text: str) -> str:
    return text[: len(text) - len(text.lstrip("\n"))]


def _before(steps: CommentedSeq, index: int) -> str:
    """The comment lines `steps` holds before item `index` (ruamel keeps some there)."""
    entry = steps.ca.items.get(index)
    if not entry or len(entry) < 2 or not entry[1]:
        return ""
    return "".join(token.value for token in entry[1])


def _set_before(steps: CommentedSeq, index: int, text: str) -> None:
    entry = steps.ca.items.setdefault(index, [None, None])
    while len(entry) < 2:
        entry.append(None)
    entry[1] = [CommentToken(text, CommentMark(0), None)] if text else None


class _YamlEditor(Editor):
    def __init__(self, root: CommentedMap) -> None:
        self.root = root
        self.uses: dict[int, int] = {}
        self.orphans: dict[int, str] = {}
        self.quotes = {DoubleQuotedScalarString: 0, SingleQuotedScalarString: 0}
        self._count(root)
        single = self.quotes[SingleQuotedScalarString] > self.quotes[DoubleQuotedScalarString]
        self.quote: type[ScalarString] = (
            SingleQuotedScalarString if single else DoubleQuotedScalarString
        )

    def _count(self, node: Any) -> None:
        if type(node) in self.quotes:
            self.quotes[type(node)] += 1
        if isinstance(node, CommentedMap | CommentedSeq):
            self.uses[id(node)] = self.uses.get(id(node), 0) + 1
            if self.uses[id(node)] > 1:
                return
            if node.anchor.value is not None:  # kept even when no alias is left to use it
                node.yaml_set_anchor(node.anchor.value, always_dump=True)
            for child in node.values() if isinstance(node, CommentedMap) else node:
                self._count(child)

    # values

    def new(self, value: Any, old: Any = None) -> Any:
        if isinstance(value, str):
            return _string(value, old, self.quote)
        if isinstance(value, dict):
            mapping = CommentedMap()
            for key, child in value.items():
                mapping[self.key(key)] = self.new(child)
            if _flow_safe(value):
                mapping.fa.set_flow_style()
            return mapping
        if isinstance(value, list):
            seq = CommentedSeq(self.new(child) for child in value)
            if _flow_safe(value):
                seq.fa.set_flow_style()
            return seq
        return value

    def key(self, key: Any) -> Any:
        """A new key, quoted when YAML 1.1 (which validation reads) would not see a string."""
        if isinstance(key, str) and not _plain_ok(key):
            return self.quote(key)
        return key

    def own(self, container: Any, key: Any) -> Any:
        value = container[key]
        if self.uses.get(id(value), 0) > 1:  # an alias: the anchor's other users keep it
            self.uses[id(value)] -= 1
            copied = self._copy(value)
            container[key] = copied
            return copied
        return value

    def _copy(self, node: Any) -> Any:
        if isinstance(node, CommentedMap):
            out: Any = CommentedMap((k, self._copy(v)) for k, v in node.items())
        elif isinstance(node, CommentedSeq):
            out = CommentedSeq(self._copy(v) for v in node)
        else:
            return node
        if node.fa.flow_style():
            out.fa.set_flow_style()
        self.uses[id(out)] = 1
        return out

    # mapping keys

    def set(self, mapping: MutableMapping[Any, Any], key: str, value: Any) -> None:
        assert isinstance(mapping, CommentedMap)
        if key in mapping:
            old = mapping[key]
            tail = _take_item_tail(mapping, key)
            new = self.new(value, old)
            entry = mapping.ca.items.get(key)
            block = _is_block(new) and len(new)
            if entry and entry[2] is not None and (block or _is_block_scalar(new)):
                # what is left is the rest of the key's line: a comment stays on a mapping's
                # `key:` line; a literal's lines end by themselves
                if not (block and "#" in entry[2].value):
                    entry[2] = None
            if isinstance(old, ScalarString) and not isinstance(new, ScalarString):
                keys = list(mapping)
                at = keys.index(key)  # the key as written (maybe quoted) goes back
                mapping.insert(at, keys[at], new)  # not ruamel's old style
            else:
                mapping[key] = new
            _give_tail(mapping, tail, key=key)
            return
        position = self._position(mapping, key)
        if position >= len(mapping):
            tail = _take_tail(mapping) + self.orphans.pop(id(mapping), "")
            mapping[self.key(key)] = self.new(value)
            _give_tail(mapping, tail)
        else:
            mapping.insert(position, self.key(key), self.new(value))

    def _position(self, mapping: CommentedMap, key: str) -> int:
        """Where a new key goes: in a step, after the keys the format lists before it."""
        if not any(step is mapping for step in self.root.get("steps") or ()):
            return len(mapping)
        if key not in _STEP_KEYS:
            return len(mapping)
        earlier = set(_STEP_KEYS[: _STEP_KEYS.index(key)])
        keys = list(mapping)
        after = [i for i, k in enumerate(keys) if k in earlier]
        return after[-1] + 1 if after else 0

    def delete(self, mapping: MutableMapping[Any, Any], key: str) -> None:
        assert isinstance(mapping, CommentedMap)
        keys = list(mapping)
        at = keys.index(key)
        tail = _take_item_tail(mapping, key) + self.orphans.pop(id(mapping[key]), "")
        mapping.ca.items.pop(key, None)
        del mapping[key]
        if at == len(keys) - 1:
            self._give(mapping, tail)  # the blank lines and comments after it stay
        elif "#" in tail and at > 0:
            _give_tail(mapping, tail, key=keys[at - 1])

    def _give(self, node: Any, text: str) -> None:
        if len(node):
            _give_tail(node, text)
        elif text:
            self.orphans[id(node)] = text  # handed on when the empty mapping goes too

    # steps

    def insert_step(self, steps: MutableSequence[Any], index: int, step: dict[str, Any]) -> None:
        assert isinstance(steps, CommentedSeq)
        node = CommentedMap()
        for key, value in step.items():
            node[self.key(key)] = self.new(value)
        separator = self._separator(steps)
        # What followed the step before it now follows the new one; a separator goes between.
        tail = _take_tail(steps[index - 1]) if index > 0 else separator
        steps.insert(index, node)
        if index > 0 and separator:
            _set_before(steps, index, separator)
        _give_tail(node, tail)

    def delete_step(self, steps: MutableSequence[Any], index: int) -> None:
        assert isinstance(steps, CommentedSeq)
        # What followed the step now follows the one before it (or leads the next one).
        tail = _take_tail(steps[index])
        del steps[index]
        if index > 0:
            _take_tail(steps[index - 1])
            _give_tail(steps[index - 1], tail)
        elif "#" in tail and steps:
            _set_before(steps, 0, tail.lstrip("\n") + _before(steps, 0))

    def _gap_before(self, steps: CommentedSeq, index: int) -> str:
        after = _peek_tail(steps[index - 1])
        return _leading_blanks(after) or _leading_blanks(_before(steps, index))

    def _separator(self, steps: CommentedSeq) -> str:
        """The blank lines the source puts between steps ("" when none)."""
        for index in range(1, len(steps)):
            gap = self._gap_before(steps, index)
            if gap:
                return gap
        return ""
