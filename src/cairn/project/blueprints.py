"""Pipelines, tasks, endpoints and deployments as declared in the project file.

These are validated data models; running them is the orchestration and serving layers'
job. Like :mod:`cairn.project.step`, every class round-trips through ``to_dict`` /
``from_dict`` in valohai.yaml key spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cairn.project._serial import Serializable
from cairn.project.step import EnvVarSpec, Mount, Step, _list_of, _load_mounts, _str_list

NODE_TYPES = ("execution", "task", "deployment")
ON_ERROR = ("stop-all", "stop-next", "continue", "retry")
EDGE_MERGE_MODES = ("replace", "append")
SOCKET_TYPES = (
    "input",
    "output",
    "parameter",
    "metadata",
    "file",
    "deployment",
    "environment-variable",
    "dependency",
)
ACTION_WHEN = ("node-starting", "node-complete", "node-error")
ACTION_THEN = ("stop-pipeline", "error-pipeline", "noop", "require-approval")
TASK_TYPES = ("grid_search", "random_search", "bayesian_tpe", "manual_search", "distributed")
VARIANT_STYLES = ("single", "multiple", "linear", "logspace", "random")
ON_CHILD_ERROR = ("continue-and-complete", "continue-and-error", "stop-all-and-error")
#: How a task may stop trials that fall behind on its target metric (a cairn key, `prune`).
PRUNERS = ("none", "median", "halving")

_ALWAYS = {"always": True}


@dataclass(frozen=True)
class Socket:
    """One end of a pipeline edge: ``node.type.key`` (``train.output.model*``)."""

    node: str
    type: str
    key: str

    def __str__(self) -> str:
        return f"{self.node}.{self.type}.{self.key}"

    @classmethod
    def parse(cls, text: str, node_names: Any = ()) -> Socket:
        """Split ``node.type.key``; a known node name containing dots is matched whole.

        Raises ``ValueError`` when the text has fewer than three parts.
        """
        for name in sorted(node_names, key=len, reverse=True):
            if "." in name and text.startswith(name + "."):
                rest = text[len(name) + 1 :].split(".", 1)
                if len(rest) == 2 and all(rest):
                    return cls(name, rest[0], rest[1])
        parts = text.split(".", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"'{text}' is not of the form node.type.key")
        return cls(*parts)


@dataclass(frozen=True)
class Edge(Serializable):
    """Data (or just ordering) passed from ``source`` to ``target`` between two nodes."""

    source: Socket = field(metadata={**_ALWAYS, "load": Socket.parse, "dump": str})
    target: Socket = field(metadata={**_ALWAYS, "load": Socket.parse, "dump": str})
    configuration: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Any:
        return iter((self.source, self.target, self.configuration))


@dataclass(frozen=True)
class NodeAction(Serializable):
    """``when`` an event happens and ``if`` every condition holds, do each of ``then``."""

    when: list[str] = field(default_factory=list, metadata={**_ALWAYS, "load": _str_list})
    condition: list[str] = field(default_factory=list, metadata={"key": "if", "load": _str_list})
    then: list[str] = field(default_factory=list, metadata={**_ALWAYS, "load": _str_list})


@dataclass(frozen=True)
class NodeOverride(Serializable):
    """Changes a pipeline node makes to its step.

    ``parameters`` and ``inputs`` are partial items in YAML spelling, merged by name into
    the step's own (an input listed without ``default`` loses its default so an edge can
    provide it). Use :meth:`apply` to get the step a node runs.
    """

    image: str | None = None
    command: list[str] | None = field(default=None, metadata={"load": _str_list})
    parameters: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[Mount] | None = field(default=None, metadata={"load": _load_mounts})
    environment: str | None = None
    environment_variables: list[EnvVarSpec] | None = field(
        default=None, metadata={"load": _list_of(EnvVarSpec)}
    )
    runtime_config_preset: str | None = None

    def apply(self, step: Step) -> Step:
        """``step`` with this override merged in."""
        data = step.to_dict()
        for key in ("image", "environment", "runtime_config_preset"):
            if getattr(self, key) is not None:
                data[key.replace("_", "-")] = getattr(self, key)
        if self.command is not None:
            data["command"] = list(self.command)
        if self.mounts is not None:
            data["mounts"] = [m.to_dict() for m in self.mounts]
        if self.environment_variables is not None:
            data["environment-variables"] = [e.to_dict() for e in self.environment_variables]
        data["parameters"] = _merge_items(
            data.get("parameters", []), self.parameters, clear_default=False
        )
        data["inputs"] = _merge_items(data.get("inputs", []), self.inputs, clear_default=True)
        return Step.from_dict(data)


def _merge_items(
    base: list[dict[str, Any]], overrides: list[dict[str, Any]], *, clear_default: bool
) -> list[dict[str, Any]]:
    merged = [dict(item) for item in base]
    index = {item["name"]: i for i, item in enumerate(merged)}
    for item in overrides:
        name = item.get("name")
        if name not in index:
            continue
        new = {**merged[index[name]], **item}
        if clear_default and "default" not in item:
            new.pop("default", None)
        merged[index[name]] = new
    return merged


@dataclass(frozen=True)
class PipelineNode(Serializable):
    """A node: an ``execution`` of a step, a ``task`` over a step, or a ``deployment``.

    ``step`` or ``task`` name what to run; with ``commit`` set they are looked up in that
    commit (or step library) instead of this file.
    """

    name: str = field(metadata=_ALWAYS)
    type: str = field(default="execution", metadata=_ALWAYS)
    step: str | None = None
    task: str | None = None
    commit: str | None = None
    override: NodeOverride | None = field(
        default=None, metadata={"load": lambda v: v if v is None else NodeOverride.from_dict(v)}
    )
    actions: list[NodeAction] = field(default_factory=list, metadata={"load": _list_of(NodeAction)})
    on_error: str = "stop-all"
    edge_merge_mode: str = "replace"
    deployment: str | None = None
    endpoints: list[str] = field(default_factory=list, metadata={"load": _str_list})
    aliases: list[str] = field(default_factory=list, metadata={"load": _str_list})


@dataclass(frozen=True)
class PipelineParameter(Serializable):
    """A pipeline-level value fed into node parameters listed in ``targets``."""

    name: str = field(metadata=_ALWAYS)
    default: Any = None
    targets: list[str] = field(default_factory=list, metadata={"load": _str_list})
    category: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Pipeline(Serializable):
    """A DAG of nodes connected by edges."""

    name: str = field(metadata=_ALWAYS)
    nodes: list[PipelineNode] = field(
        default_factory=list, metadata={**_ALWAYS, "load": _list_of(PipelineNode)}
    )
    edges: list[Edge] = field(
        default_factory=list, metadata={**_ALWAYS, "load": lambda v: _load_edges(v)}
    )
    parameters: list[PipelineParameter] = field(
        default_factory=list, metadata={"load": _list_of(PipelineParameter)}
    )
    reuse_executions: bool = False

    def get_node(self, name: str) -> PipelineNode | None:
        """The node called ``name``, or None."""
        return next((n for n in self.nodes if n.name == name), None)


def _load_edges(value: Any) -> list[Edge]:
    edges = []
    for item in value or []:
        if isinstance(item, Edge):
            edges.append(item)
        elif isinstance(item, Mapping):
            edges.append(Edge.from_dict(item))
        else:
            source, target = item
            edges.append(Edge(Socket.parse(source), Socket.parse(target)))
    return edges


@dataclass(frozen=True)
class VariantParameter(Serializable):
    """How a task varies one step parameter: a ``style`` and its ``rules``."""

    name: str = field(metadata=_ALWAYS)
    style: str = field(default="single", metadata=_ALWAYS)
    rules: dict[str, Any] = field(default_factory=dict, metadata=_ALWAYS)


@dataclass(frozen=True)
class Task(Serializable):
    """A blueprint for many executions of one step over varied parameters (a sweep)."""

    name: str = field(metadata=_ALWAYS)
    step: str = field(default="", metadata=_ALWAYS)
    type: str = field(default="grid_search", metadata=_ALWAYS)
    description: str | None = None
    parameters: list[VariantParameter] = field(
        default_factory=list, metadata={"load": _list_of(VariantParameter)}
    )
    parameter_sets: list[dict[str, Any]] = field(default_factory=list)
    execution_count: int | None = None
    execution_batch_size: int | None = None
    maximum_queued_executions: int | None = None
    optimization_target_metric: str | None = None
    optimization_target_value: float | None = None
    engine: str | None = None
    on_child_error: str | None = None
    stop_condition: str | None = None
    reuse_children: bool = False
    prune: str | None = None  # a cairn key: one of PRUNERS


@dataclass(frozen=True)
class EndpointFile(Serializable):
    """A file (such as a model) an endpoint needs at ``path``."""

    name: str = field(metadata=_ALWAYS)
    path: str = field(default="", metadata=_ALWAYS)
    description: str | None = None


@dataclass(frozen=True)
class Endpoint(Serializable):
    """An HTTP server: ``server_command`` or a ``wsgi`` app (exactly one is set)."""

    name: str = field(metadata=_ALWAYS)
    image: str | None = field(default=None, metadata=_ALWAYS)
    server_command: list[str] | None = field(default=None, metadata={"load": _str_list})
    wsgi: str | None = None
    description: str | None = None
    port: int = 8000
    files: list[EndpointFile] = field(
        default_factory=list, metadata={"load": _list_of(EndpointFile)}
    )
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: str | None = None
    tolerations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Deployment(Serializable):
    """Defaults for auto-creating a deployment (``defaults["target"]`` is where it runs)."""

    name: str = field(metadata=_ALWAYS)
    defaults: dict[str, Any] = field(default_factory=dict)
