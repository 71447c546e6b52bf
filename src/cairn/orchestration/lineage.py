"""Lineage: where a datum, dataset version or execution came from, and what used it.

The graph is read from the metadata store: a datum was made by an execution; an execution
read input files (datums, dataset version files, or external paths and URLs); a dataset
version was made by an execution or uploaded. Many inputs from one source are grouped into
one edge ("1,798 datums from #1 prepare") so big datasets stay readable.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cairn.errors import NotFoundError

if TYPE_CHECKING:
    from cairn.entities import DatasetVersion, Datum, Execution
    from cairn.orchestration.context import Context


@dataclass
class Node:
    """One thing in the graph; ``children`` are (relation, node) pairs."""

    kind: str  # execution | datum | dataset | external
    key: str  # unique: "execution:<id>", "datum:<id>", "dataset:<uri>", "external:<uri>"
    label: str
    detail: str = ""
    children: list[tuple[str, Node]] = field(default_factory=list)
    truncated: bool = False  # seen already or beyond the depth limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "key": self.key, "label": self.label, "detail": self.detail,
            "truncated": self.truncated,
            "children": [{"relation": r, **c.to_dict()} for r, c in self.children],
        }


@dataclass
class Lineage:
    subject: Node
    upstream: list[tuple[str, Node]]
    downstream: list[tuple[str, Node]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": {k: v for k, v in self.subject.to_dict().items() if k != "children"},
            "upstream": [{"relation": r, **n.to_dict()} for r, n in self.upstream],
            "downstream": [{"relation": r, **n.to_dict()} for r, n in self.downstream],
        }

    def edges(self) -> list[tuple[Node, str, Node]]:
        """(source, relation, target) with data flowing from source to target."""
        out: list[tuple[Node, str, Node]] = []

        def walk_up(target: Node, items: list[tuple[str, Node]]) -> None:
            for relation, source in items:
                out.append((source, relation, target))
                walk_up(source, source.children)

        def walk_down(source: Node, items: list[tuple[str, Node]]) -> None:
            for relation, target in items:
                out.append((source, relation, target))
                walk_down(target, target.children)

        walk_up(self.subject, self.upstream)
        walk_down(self.subject, self.downstream)
        return out


class LineageBuilder:
    def __init__(self, ctx: Context, *, depth: int = 8) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.project_id = ctx.project_id
        self.depth = depth

    # -- entry point ------------------------------------------------------------------
    def build(self, ref: str) -> Lineage:
        """Lineage of ``ref``: ``datum://…``, ``dataset://name/version``, or an execution."""
        if ref.startswith("dataset://"):
            version = self._dataset(ref)
            subject = self._dataset_node(version)
            up = self._dataset_sources(version, self.depth, set())
            down = self._dataset_consumers(version, self.depth, set())
        elif ref.startswith("datum://"):
            datum = self.store.resolve_datum(self.project_id, ref)
            subject = self._datum_node(datum)
            up = self._datum_sources(datum, self.depth, set())
            down = self._datum_consumers(datum, self.depth, set())
        else:
            try:
                execution = self.store.get_execution(self.project_id, ref)
            except NotFoundError:
                raise NotFoundError(
                    f"no datum, dataset version or execution called {ref!r}",
                    "use datum://ID-or-ALIAS, dataset://NAME/VERSION, or an execution "
                    "number such as 12",
                ) from None
            subject = self._execution_node(execution)
            up = self._execution_sources(execution, self.depth, set())
            down = self._execution_products(execution, self.depth, set())
        return Lineage(subject, up, down)

    # -- nodes ------------------------------------------------------------------------
    def _execution_node(self, e: Execution) -> Node:
        code = f", code {e.code.tree_digest[:10]}" if e.code else ""
        return Node("execution", f"execution:{e.id}", f"#{e.counter} {e.step}",
                    f"{e.status.value}{code}")

    def _datum_node(self, d: Datum) -> Node:
        from cairn.units import format_size

        return Node("datum", f"datum:{d.id}", f"{d.name}",
                    f"datum://{d.id[:8]} {format_size(d.size)}")

    def _dataset_node(self, v: DatasetVersion) -> Node:
        from cairn.units import count, format_size

        return Node("dataset", f"dataset:{v.uri}", v.uri,
                    f"{count(v.file_count, 'file')}, {format_size(v.size)}")

    def _dataset(self, uri: str) -> DatasetVersion:
        name, _, version = uri.removeprefix("dataset://").partition("/")
        version = version.split("/", 1)[0] or "latest"
        return self.store.get_dataset_version(self.project_id, name, version)

    # -- upstream ---------------------------------------------------------------------
    def _datum_sources(self, d: Datum, depth: int, seen: set[str]) -> list[tuple[str, Node]]:
        if d.execution_id is None:
            return [("uploaded", Node("external", f"external:{d.id}", "uploaded"))]
        e = self.store.get_execution(self.project_id, d.execution_id)
        return [("made by", self._execution_up(e, depth, seen))]

    def _execution_up(self, e: Execution, depth: int, seen: set[str]) -> Node:
        return self._expand(e, depth, seen, self._execution_sources)

    def _expand(self, e: Execution, depth: int, seen: set[str], children: Any) -> Node:
        """The execution's node with ``children(e, depth - 1, seen)`` below it, once."""
        node = self._execution_node(e)
        if node.key in seen or depth <= 0:
            node.truncated = True
            return node
        seen.add(node.key)
        node.children = children(e, depth - 1, seen)
        return node

    def _execution_sources(self, e: Execution, depth: int,
                           seen: set[str]) -> list[tuple[str, Node]]:
        """An execution's inputs, grouped by where they came from."""
        from cairn.units import count, format_size

        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for f in e.inputs:
            if f.datum_id:
                groups[(f.input_name, "datum")].append(f)
            elif f.uri.startswith("dataset://"):
                groups[(f.input_name, "dataset:" + _version_of(f.uri))].append(f)
            else:
                groups[(f.input_name, "external")].append(f)
        out: list[tuple[str, Node]] = []
        for (input_name, source), files in groups.items():
            size = format_size(sum(f.size for f in files))
            if source == "datum":
                datums = self.store.get_datums(self.project_id, [f.datum_id for f in files])
                by_execution: dict[str | None, list[Datum]] = defaultdict(list)
                for d in datums:
                    by_execution[d.execution_id].append(d)
                for execution_id, ds in by_execution.items():
                    if len(ds) == 1:
                        node = self._datum_node(ds[0])
                        if depth > 0:
                            node.children = self._datum_sources(ds[0], depth - 1, seen)
                        out.append((f"input {input_name}", node))
                    elif execution_id is not None:
                        producer = self.store.get_execution(self.project_id, execution_id)
                        rel = f"input {input_name}: {count(len(ds), 'datum')} ({size}) from"
                        out.append((rel, self._execution_up(producer, depth, seen)))
            elif source.startswith("dataset:"):
                uri = source.removeprefix("dataset:")
                try:
                    version = self._dataset(uri)
                except NotFoundError:
                    out.append((f"input {input_name}", Node("external", f"external:{uri}", uri)))
                    continue
                node = self._dataset_node(version)
                if node.key not in seen and depth > 0:
                    seen.add(node.key)
                    node.children = self._dataset_sources(version, depth - 1, seen)
                rel = f"input {input_name}: {count(len(files), 'file')} ({size}) of"
                out.append((rel, node))
            else:
                uris = sorted({f.uri for f in files})
                label = uris[0] if len(uris) == 1 else f"{uris[0]} and {len(uris) - 1} more"
                digest = files[0].digest[:10] if len(files) == 1 else f"{len(files):,} files"
                out.append((f"input {input_name}",
                            Node("external", f"external:{input_name}:{uris[0]}", label,
                                 f"{digest}, {size}")))
        return out

    def _dataset_sources(self, v: DatasetVersion, depth: int,
                         seen: set[str]) -> list[tuple[str, Node]]:
        out: list[tuple[str, Node]] = []
        if v.execution_id:
            e = self.store.get_execution(self.project_id, v.execution_id)
            out.append(("made by", self._execution_up(e, depth, seen)))
        else:
            out.append(("uploaded", Node("external", f"external:upload:{v.uri}", "uploaded",
                                         v.created_at.strftime("%Y-%m-%d %H:%M"))))
        if v.from_version:
            try:
                base = self.store.get_dataset_version(self.project_id, v.dataset, v.from_version)
            except NotFoundError:
                return out
            node = self._dataset_node(base)
            if node.key not in seen and depth > 0:
                seen.add(node.key)
                node.children = self._dataset_sources(base, depth - 1, seen)
            out.append(("derived from", node))
        return out

    # -- downstream -------------------------------------------------------------------
    def _datum_consumers(self, d: Datum, depth: int, seen: set[str]) -> list[tuple[str, Node]]:
        out = []
        for e in self.store.consumers_of_datum(self.project_id, d.id):
            names = sorted({f.input_name for f in e.inputs if f.datum_id == d.id})
            out.append((f"input {', '.join(names)} of", self._execution_down(e, depth, seen)))
        return out

    def _dataset_consumers(self, v: DatasetVersion, depth: int,
                           seen: set[str]) -> list[tuple[str, Node]]:
        out = []
        for e in self.store.executions_with_input_uri_prefix(self.project_id, v.uri):
            names = sorted({f.input_name for f in e.inputs if f.uri.startswith(v.uri)})
            out.append((f"input {', '.join(names)} of", self._execution_down(e, depth, seen)))
        return out

    def _execution_down(self, e: Execution, depth: int, seen: set[str]) -> Node:
        return self._expand(e, depth, seen, self._execution_products)

    def _execution_products(self, e: Execution, depth: int,
                            seen: set[str]) -> list[tuple[str, Node]]:
        """Outputs an execution made that were used further, plus its dataset versions."""
        out: list[tuple[str, Node]] = []
        for v in self.store.dataset_versions_of_execution(self.project_id, e.id):
            node = self._dataset_node(v)
            if node.key not in seen and depth > 0:
                seen.add(node.key)
                node.children = self._dataset_consumers(v, depth - 1, seen)
            out.append(("made", node))
        datums = self.store.list_datums(self.project_id, execution_id=e.id)
        shown = 0
        for d in datums:
            consumers = self._datum_consumers(d, depth - 1, seen) if depth > 0 else []
            if consumers or len(datums) <= 5:
                node = self._datum_node(d)
                node.children = consumers
                out.append(("output", node))
                shown += 1
        if len(datums) > shown:
            out.append(("output", Node("datum", f"more:{e.id}",
                                       f"… {len(datums) - shown:,} more outputs",
                                       "not used by any execution")))
        return out


def _version_of(uri: str) -> str:
    """``dataset://name/version/path`` → ``dataset://name/version``."""
    rest = uri.removeprefix("dataset://").split("/")
    return "dataset://" + "/".join(rest[:2])


def render_tree(lineage: Lineage) -> list[str]:
    """The lineage as an indented tree of text lines."""
    lines = [f"{lineage.subject.label}  ({lineage.subject.detail})"
             if lineage.subject.detail else lineage.subject.label]

    def walk(items: list[tuple[str, Node]], prefix: str) -> None:
        for i, (relation, node) in enumerate(items):
            last = i == len(items) - 1
            branch = "└─ " if last else "├─ "
            detail = f"  ({node.detail})" if node.detail else ""
            more = "  …" if node.truncated else ""
            lines.append(f"{prefix}{branch}{relation} {node.label}{detail}{more}")
            walk(node.children, prefix + ("   " if last else "│  "))

    if lineage.upstream:
        lines.append("came from:")
        walk(lineage.upstream, "  ")
    if lineage.downstream:
        lines.append("used by / made:")
        walk(lineage.downstream, "  ")
    if not lineage.upstream and not lineage.downstream:
        lines.append("  (no recorded sources or uses)")
    return lines


def render_dot(lineage: Lineage) -> str:
    """The lineage as a Graphviz digraph (data flows along the arrows)."""
    shapes = {"execution": "box", "datum": "note", "dataset": "folder", "external": "ellipse"}
    nodes: dict[str, Node] = {lineage.subject.key: lineage.subject}
    edges = lineage.edges()
    for source, _, target in edges:
        nodes[source.key] = source
        nodes[target.key] = target
    ids = {key: f"n{i}" for i, key in enumerate(nodes)}

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = ["digraph lineage {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for key, node in nodes.items():
        label = node.label + (f"\\n{node.detail}" if node.detail else "")
        style = ", style=bold" if key == lineage.subject.key else ""
        out.append(f"  {ids[key]} [label={quote(label)}, shape={shapes[node.kind]}{style}];")
    for source, relation, target in edges:
        out.append(f"  {ids[source.key]} -> {ids[target.key]} [label={quote(relation)}];")
    out.append("}")
    return "\n".join(out)
