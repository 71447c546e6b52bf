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
