"""Plain domain types. Database rows never leave the store layer: callers get these."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

Digest = str
"""A BLAKE3 digest as 64 lowercase hex characters."""


class Status(str, enum.Enum):
    """Execution lifecycle: created → queued → starting → running → a final state."""

    CREATED = "created"
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    STOPPED = "stopped"
    CRASHED = "crashed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset({Status.COMPLETE, Status.ERROR, Status.STOPPED, Status.CRASHED})
ACTIVE_STATUSES = frozenset({Status.STARTING, Status.RUNNING})


@dataclass(frozen=True)
class Project:
    id: str
    name: str


@dataclass(frozen=True)
class FileEntry:
    """One file of a tree: its path (POSIX, relative), digest, size and executable bit."""

    path: str
    digest: Digest
    size: int
    executable: bool = False


@dataclass(frozen=True)
class CodeSnapshot:
    """The exact files an execution ran, as a content-addressed tree."""

    tree_digest: Digest
    file_count: int
    size: int
    git_commit: str | None = None
    git_dirty: bool = False
    git_branch: str | None = None


@dataclass(frozen=True)
class InputFile:
    """One file given to an execution input, as resolved when the execution was created."""

    input_name: str
    name: str  # path below $CAIRN_INPUTS_DIR/<input_name>/
    uri: str  # what the user gave (file path, URL, datum://...)
    digest: Digest
    size: int
    datum_id: str | None = None


@dataclass(frozen=True)
class Datum:
    """One immutable output file version, content-addressed."""

    id: str
    project_id: str
    name: str  # path relative to the outputs directory
    digest: Digest
    size: int
    execution_id: str | None
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"datum://{self.id}"


class MetricPoint(NamedTuple):
    """One value of one metric key; ``step`` when the event named one.

    A named tuple, not a dataclass: ingestion makes hundreds of thousands per second.
    """

    key: str
    value: float
    step: int | None
    time: float  # seconds since the epoch, when the line arrived
    seq: int = 0  # order of arrival within the execution


@dataclass(frozen=True)
class Resources:
    """What an execution needs of a machine."""

    cpus: float = 1.0
    memory_mb: int = 0
    gpus: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory_mb": self.memory_mb, "gpus": self.gpus}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Resources:
        data = data or {}
        return cls(
            cpus=float(data.get("cpus", 1.0)),
            memory_mb=int(data.get("memory_mb", 0)),
            gpus=int(data.get("gpus", 0)),
        )


@dataclass(frozen=True)
class Execution:
    """One run of a step. Immutable once final; numbered ``#counter`` per project."""

    id: str
    project_id: str
    counter: int
    step: str
    status: Status
    parameters: dict[str, Any]
    command: list[str]
    inputs: list[InputFile]
    code: CodeSnapshot | None
    environment: dict[str, Any]
    step_config: dict[str, Any]
    resources: Resources
    created_at: datetime
    title: str | None = None
    tags: tuple[str, ...] = ()
    rerun_of: str | None = None
    exit_code: int | None = None
    status_detail: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    time_limit: float | None = None
    no_output_timeout: float | None = None
    host: str | None = None
    pid: int | None = None
    gpu_ids: tuple[int, ...] = ()
    stop_requested: bool = False
    log_digest: Digest | None = None
    fingerprint: Digest | None = None  # the result cache's key: step, parameters, inputs...
    code_reads: dict[str, Digest] | None = None  # snapshot files it read; None: untraced
    node: str | None = None  # the cluster node it ran on (Ray: "<ip> <node id>")
    priority: int = 0  # the queue's order: higher first, then first queued first
    restart_of: str | None = None  # the crashed execution this automatic restart continues
    metrics: dict[str, Any] = field(default_factory=dict)  # latest value per key

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at
        if end is None:
            from datetime import timezone

            end = datetime.now(timezone.utc)
        return (end - self.started_at).total_seconds()

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def backend(self) -> str:
        """Where it runs: ``local`` (a host's processes) or ``ray`` (a cluster)."""
        return str((self.environment.get("machine_environment") or {}).get("backend") or "local")

    @property
    def machine_environment(self) -> str:
        """The name of the environment (machine type) it ran in."""
        return str((self.environment.get("machine_environment") or {}).get("name") or "local")

    @property
    def cost(self) -> float | None:
        """Duration × the environment's price per hour; None when it has no price."""
        price = (self.environment.get("machine_environment") or {}).get("price_per_hour") or 0
        duration = self.duration
        if not price or duration is None:
            return None
        return duration * float(price) / 3600.0


@dataclass(frozen=True)
class DatumAlias:
    """A movable name for a datum (``datum://NAME``); its history is kept."""

    project_id: str
    name: str
    datum_id: str
    updated_at: datetime
    execution_id: str | None = None  # the execution that moved it last, if any

    @property
    def uri(self) -> str:
        return f"datum://{self.name}"


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: from ``previous_datum_id`` (None when created) to ``datum_id``."""

    name: str
    datum_id: str
    previous_datum_id: str | None
    at: datetime
    execution_id: str | None = None


@dataclass(frozen=True)
class DatasetVersion:
    """An immutable, named set of files: ``dataset://<dataset>/<version>``.

    The files are a tree manifest in the content store (``tree_digest``). ``source`` says
    where it came from: ``"upload"`` (``cairn dataset add``) or ``"execution"`` (a step's
    outputs, then ``execution_id`` names it). ``from_version`` names the version it was
    derived from, if any.
    """

    id: str
    project_id: str
    dataset: str
    version: str
    tree_digest: Digest
    file_count: int
    size: int
    created_at: datetime
    source: str = "upload"
    execution_id: str | None = None
    from_version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"dataset://{self.dataset}/{self.version}"


class FlowStatus(str, enum.Enum):
    """A pipeline's or sweep's lifecycle: created → running → a final state."""

    CREATED = "created"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    STOPPED = "stopped"
    CRASHED = "crashed"

    @property
    def is_final(self) -> bool:
        return self not in (FlowStatus.CREATED, FlowStatus.RUNNING)

    def __str__(self) -> str:
        return self.value


class NodeStatus(str, enum.Enum):
    """One node of a flow: a pipeline node, or a sweep's trial."""

    PENDING = "pending"  # waiting for upstream nodes (or not yet started)
    RUNNING = "running"  # its execution (or task) is queued or running
    COMPLETE = "complete"
    REUSED = "reused"  # complete by reusing an earlier execution with the same fingerprint
    ERROR = "error"
    STOPPED = "stopped"
    SKIPPED = "skipped"  # never ran: upstream failed or the flow was stopped
    PRUNED = "pruned"  # a sweep trial stopped early for its intermediate metric
    CRASHED = "crashed"

    @property
    def is_final(self) -> bool:
        return self not in (NodeStatus.PENDING, NodeStatus.RUNNING)

    @property
    def succeeded(self) -> bool:
        return self in (NodeStatus.COMPLETE, NodeStatus.REUSED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class FlowNode:
    """A node of a flow as it runs: its execution (or child flow), status and attempts.

    ``parameters`` are a sweep trial's values; ``value`` is its target metric.
    """

    flow_id: str
    name: str
    position: int
    kind: str  # "execution", "task", "deployment" (pipelines) or "trial" (sweeps)
    status: NodeStatus
    execution_id: str | None = None
    child_flow_id: str | None = None
    attempts: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    detail: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Flow:
    """A pipeline run (``kind="pipeline"``) or a sweep (``kind="task"``), numbered per kind.

    ``definition`` is the blueprint as it was when the flow started (so resuming runs the
    same thing); ``parameters`` the values given; ``options`` settings such as reuse.
    """

    id: str
    project_id: str
    kind: str
    counter: int
    name: str
    status: FlowStatus
    definition: dict[str, Any]
    parameters: dict[str, Any]
    options: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    status_detail: str | None = None
    host: str | None = None
    pid: int | None = None
    stop_requested: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[FlowNode, ...] = ()

    def node(self, name: str) -> FlowNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at
        if end is None:
            from datetime import timezone

            end = datetime.now(timezone.utc)
        return (end - self.started_at).total_seconds()


@dataclass(frozen=True)
class Environment:
    """A named machine type executions run on: where (backend), what it offers, its price.

    ``cpus``/``memory_mb``/``gpus`` describe one machine (node) of the type; None means
    "what this machine has" for the local backend. ``resources`` are custom resources a
    Ray node advertises (``{"accelerator_type:A100": 1}``); ``max_parallel`` caps how many
    of its executions run at once.
    """

    name: str
    backend: str = "local"
    cpus: float | None = None
    memory_mb: int | None = None
    gpus: int | None = None
    gpu_kind: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    price_per_hour: float = 0.0
    max_parallel: int | None = None
    address: str | None = None
    description: str | None = None
    autorestart: int = 0  # restarts of a crashed/preempted execution (input `_restart`)
    grace_seconds: float | None = None  # SIGTERM → SIGKILL on stop; None: the setting

    def to_record(self) -> dict[str, Any]:
        """What an execution records of the environment it ran in."""
        return {"name": self.name, "backend": self.backend, "price_per_hour": self.price_per_hour,
                "gpu_kind": self.gpu_kind, "resources": dict(self.resources),
                "autorestart": self.autorestart, "grace_seconds": self.grace_seconds}
