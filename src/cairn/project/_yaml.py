"""YAML text to plain Python values, remembering where each value was written.

PyYAML's composer gives nodes with start marks; we turn them into dicts, lists and
scalars ourselves so that every value keeps its ``(line, column)`` (1-based) under its
*path*: the tuple of keys and indexes that leads to it from the document root, e.g.
``(0, "step", "parameters", 2, "name")``.

Only ``null``, booleans, integers and floats are constructed; every other scalar stays
the string it was written as (so dates and custom tags never leave this module as
non-JSON values). The written text of constructed scalars is kept in ``Document.raw`` so
messages can say "``yes`` was read as a boolean".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from cairn.errors import Problem

PathKey = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_CONSTRUCTED_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
}
_constructor = yaml.constructor.SafeConstructor()

# Fragments of PyYAML / libyaml messages that usually mean "wrong indentation".
_INDENTATION_SIGNS = (
    "mapping values are not allowed",
    "expected key",
    "expected <block end>",
    "expected '-'",
    "could not find expected ':'",
    "block end",
)


@dataclass
class Document:
    """Plain values of one YAML document plus where each of them was written."""

    data: Any
    lines: list[str]
    starts: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_starts: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    raw: dict[PathKey, str] = field(default_factory=dict)

    def position(self, path: PathKey) -> tuple[int, int]:
        """Line and column of the value at ``path``, or of its nearest located parent."""
        p = tuple(path)
        while p:
            if p in self.starts:
                return self.starts[p]
            p = p[:-1]
        return self.starts.get((), (1, 1))

    def key_position(self, path: PathKey) -> tuple[int, int]:
        """Line and column of the mapping key that holds ``path`` (its value if no key)."""
        return self.key_starts.get(tuple(path)) or self.position(path)

    def raw_text(self, path: PathKey) -> str | None:
        """The text a constructed scalar (bool, number, null) was written as."""
        return self.raw.get(tuple(path))

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline ('' past the end)."""
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""


def empty_document() -> Document:
    """A document with no source text, for values built in code."""
    return Document(data=None, lines=[])


def compose(text: str, filename: str) -> tuple[Document | None, list[Problem]]:
    """Parse ``text``; return the document (None on a syntax error) and any problems."""
    lines = text.splitlines()
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(exc, lines, filename)]
    except yaml.YAMLError as exc:  # unmarked errors, e.g. a reader error on bad characters
        return None, [Problem(filename, 1, 1, f"invalid YAML: {exc}")]
    doc = Document(data=None, lines=lines)
    problems: list[Problem] = []
    if root is not None:
        doc.data = _Converter(doc, problems, filename).convert(root, ())
    return doc, problems


def _syntax_problem(exc: yaml.MarkedYAMLError, lines: list[str], filename: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "syntax error"
    message = f"invalid YAML: {problem}"
    if exc.context:
        message += f" ({exc.context})"
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    hint: str | None = None
    if "\t" in text[: max(column, 1)] or "'\\t'" in problem:
        hint = "YAML indentation must use spaces, not tabs"
    elif any(sign in problem for sign in _INDENTATION_SIGNS):
        before = next(
            (
                (n, lines[n - 1].strip())
                for n in range(line - 1, 0, -1)
                if lines[n - 1].strip() and not lines[n - 1].lstrip().startswith("#")
            ),
            None,
        )
        against = f" against line {before[0]} (`{before[1]}`)" if before else ""
        hint = (
            f"check the indentation of line {line} (`{text.strip()}`){against}: "
            "keys of one mapping must start in the same column, and keys that belong "
            "to an item must be indented further than the item's key; if a value "
            "itself contains ': ', "
            "put it in quotes"
        )
    elif "another document" in problem:
        hint = "a project file holds one YAML document: remove the extra `---` line"
    return Problem(filename, line, column, message, hint)


class _Converter:
    def __init__(self, doc: Document, problems: list[Problem], filename: str) -> None:
        self.doc = doc
        self.problems = problems
        self.filename = filename
        self.active: set[int] = set()

    def _problem(self, node: yaml.Node, message: str, hint: str | None = None) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.filename, mark.line + 1, mark.column + 1, message, hint))

    def convert(self, node: yaml.Node, path: PathKey) -> Any:
        self.doc.starts[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _CONSTRUCTED_TAGS:
                self.doc.raw[path] = node.value
                return _constructor.yaml_constructors[node.tag](_constructor, node)
            return node.value
        if id(node) in self.active:
            self._problem(node, "an alias refers to the item that contains it")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in self._explicit_pairs(node):
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, "a mapping key must be a plain name, not a list or mapping")
                continue
            key = key_node.value
            if key in seen:
                self._problem(
                    key_node,
                    f"duplicate key '{key}' (first given on line {seen[key]})",
                    "remove one of them; YAML would silently keep only the last",
                )
            seen[key] = key_node.start_mark.line + 1
            child = (*path, key)
            self.doc.key_starts[child] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.convert(value_node, child)
        for key_node, value_node in self._merged_pairs(node):
            key = key_node.value
            if key in result:
                continue
            child = (*path, key)
            self.doc.key_starts[child] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.convert(value_node, child)
        return result

    @staticmethod
    def _explicit_pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        return [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]

    def _merged_pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        """Pairs brought in by ``<<: *anchor`` keys, earlier sources first (they win)."""
        pairs: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self._problem(source, "`<<` can only merge mappings (or a list of mappings)")
                    continue
                if id(source) in self.active:
                    self._problem(source, "a `<<` merge refers to the mapping that contains it")
                    continue
                self.active.add(id(source))
                try:
                    pairs.extend(self._explicit_pairs(source))
                    pairs.extend(self._merged_pairs(source))
                finally:
                    self.active.discard(id(source))
        return [p for p in pairs if isinstance(p[0], yaml.ScalarNode)]
