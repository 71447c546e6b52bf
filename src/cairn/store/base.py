"""The metadata store interface. Every backend passes ``cairn.testing.store_contract``."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cairn.entities import (
    CodeSnapshot,
    Datum,
    Execution,
    InputFile,
    MetricPoint,
    Project,
    Resources,
    Status,
)


@dataclass(frozen=True)
class NewExecution:
    """What is known of an execution when it is created (before it is numbered)."""

    project_id: str
    step: str
    parameters: dict[str, Any]
    command: list[str]
    inputs: list[InputFile]
    code: CodeSnapshot | None
    environment: dict[str, Any]
    step_config: dict[str, Any]
    resources: Resources = field(default_factory=Resources)
    title: str | None = None
    tags: tuple[str, ...] = ()
    rerun_of: str | None = None
    time_limit: float | None = None
    no_output_timeout: float | None = None


@dataclass(frozen=True)
class Allocation:
    """Resources granted to an execution on a host: which GPU indices it owns."""

    gpu_ids: tuple[int, ...] = ()


class MetadataStore(abc.ABC):
    """Executions, datums, metrics and projects.

    Implementations convert their rows to :mod:`cairn.entities` before returning. Methods
    that look a thing up raise :class:`cairn.errors.NotFoundError` when it is absent.
    Only the scheduler (``cairn.orchestration``) calls the state-changing methods
    :meth:`transition` and :meth:`allocate`.
    """

    url: str

    # -- projects ---------------------------------------------------------------------
    @abc.abstractmethod
    def ensure_project(self, name: str) -> Project:
        """Return the project called ``name``, creating it if it does not exist."""

    # -- executions -------------------------------------------------------------------
    @abc.abstractmethod
    def create_execution(self, new: NewExecution) -> Execution:
        """Store a new execution in status ``created`` with the next counter of its project.

        Counters are 1, 2, 3, ... per project and never reused, also under concurrent
        creators (two processes never get the same counter).
        """

    @abc.abstractmethod
    def get_execution(self, project_id: str, ref: str | int) -> Execution:
        """Find an execution by counter (``12``, ``"12"``, ``"#12"``), full id or unique id prefix.

        Raises ``NotFoundError`` if none or several (ambiguous prefix) match.
        """

    @abc.abstractmethod
    def list_executions(
        self,
        project_id: str,
        *,
        step: str | None = None,
        statuses: Sequence[Status] | None = None,
        tag: str | None = None,
        sort: str | None = None,
        descending: bool = True,
        limit: int | None = None,
    ) -> list[Execution]:
        """Executions of a project, filtered, each with its latest metric values.

        ``sort`` is ``None``/``"counter"``, ``"created"``, ``"duration"``, or
        ``"metric:KEY"`` (latest value of metric KEY; executions without it sort last).
        Must answer in well under 50 ms at 100,000 executions with ``limit`` ≤ 100.
        """

    @abc.abstractmethod
    def count_executions(self, project_id: str) -> int:
        """How many executions the project has."""

    @abc.abstractmethod
    def transition(
        self,
        execution_id: str,
        to: Status,
        *,
        expect: Iterable[Status] | None = None,
        **fields: Any,
    ) -> bool:
        """Move an execution to status ``to`` and set ``fields``, atomically.

        When ``expect`` is given, the change happens only if the current status is one of
        them; returns whether it happened. ``fields`` may set: ``exit_code``,
        ``status_detail``, ``queued_at``, ``started_at``, ``ended_at``, ``host``, ``pid``,
        ``log_digest``. A final execution never changes status again (returns False).
        """

    @abc.abstractmethod
    def request_stop(self, execution_id: str) -> None:
        """Mark that a user asked the execution to stop (its supervisor polls this)."""

    @abc.abstractmethod
    def allocate(
        self,
        execution_id: str,
        *,
        host: str,
        capacity: Resources,
        gpu_ids: Sequence[int],
    ) -> Allocation | None:
        """Atomically start the execution on ``host`` if its resources fit.

        Sums the resources of executions in ``starting``/``running`` on ``host``; if the
        queued execution's resources fit into ``capacity`` next to them, picks free GPU
        indices from ``gpu_ids``, moves it to ``starting`` with ``host`` and its GPUs
        recorded, and returns the allocation. Returns ``None`` (and changes nothing) when
        it does not fit now. Serialized against concurrent callers on any process.
        """

    @abc.abstractmethod
    def add_tags(self, execution_id: str, tags: Iterable[str]) -> None:
        """Add tags to an execution (idempotent)."""

    @abc.abstractmethod
    def remove_tags(self, execution_id: str, tags: Iterable[str]) -> None:
        """Remove tags from an execution (missing ones are ignored)."""

    # -- datums -----------------------------------------------------------------------
    @abc.abstractmethod
    def add_datums(self, datums: Sequence[Datum]) -> None:
        """Store new datums (ids are given by the caller)."""

    @abc.abstractmethod
    def get_datum(self, project_id: str, ref: str) -> Datum:
        """Find a datum by full id or unique id prefix (``datum://`` prefix allowed)."""

    @abc.abstractmethod
    def list_datums(self, project_id: str, *, execution_id: str | None = None) -> list[Datum]:
        """Datums of a project, or of one execution, ordered by name."""

    # -- metrics ----------------------------------------------------------------------
    @abc.abstractmethod
    def add_metrics(self, execution_id: str, points: Sequence[MetricPoint]) -> None:
        """Append metric points and update the latest value per key.

        Called in batches by the ingestion thread; must sustain ≥ 100,000 points/s
        on SQLite.
        """

    @abc.abstractmethod
    def set_metadata(self, execution_id: str, values: dict[str, Any]) -> None:
        """Record the latest non-numeric metadata values (strings, lists, ...) by key."""

    @abc.abstractmethod
    def get_metrics(self, execution_id: str) -> list[MetricPoint]:
        """All metric points of an execution, in arrival order."""

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""
