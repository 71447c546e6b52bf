"""The metadata store interface. Every backend passes ``cairn.testing.store_contract``."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cairn.entities import (
    AliasEvent,
    CodeSnapshot,
    DatasetVersion,
    Datum,
    DatumAlias,
    Execution,
    Flow,
    FlowNode,
    FlowStatus,
    InputFile,
    MetricPoint,
    NodeStatus,
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
    fingerprint: str | None = None
    priority: int = 0  # higher is dispatched first; FIFO within a priority
    restart_of: str | None = None  # the crashed execution this automatic restart continues


@dataclass(frozen=True)
class NewFlowNode:
    """A node of a new flow (or a trial added to a running sweep)."""

    name: str
    kind: str = "execution"
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewFlow:
    """What is known of a pipeline run or sweep when it is created."""

    project_id: str
    kind: str  # "pipeline" or "task"
    name: str
    definition: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[NewFlowNode, ...] = ()


FLOW_FIELDS = frozenset(
    {"status", "started_at", "ended_at", "status_detail", "host", "pid", "result"}
)
"""What :meth:`MetadataStore.update_flow` may set."""

NODE_FIELDS = frozenset(
    {"status", "execution_id", "child_flow_id", "attempts", "value", "detail",
     "started_at", "ended_at", "parameters"}
)
"""What :meth:`MetadataStore.update_flow_node` may set."""


@dataclass(frozen=True)
class Allocation:
    """Resources granted to an execution on a host: which GPU indices it owns."""

    gpu_ids: tuple[int, ...] = ()


class MetadataStore(abc.ABC):
    """Executions, datums and their aliases, dataset versions, metrics and projects.

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
    def execution_status(self, execution_id: str) -> tuple[Status, bool]:
        """(status, stop_requested) of an execution by its full id: one cheap query, for
        the loops that poll a running or waiting execution. ``NotFoundError`` if absent."""

    @abc.abstractmethod
    def get_executions(self, project_id: str, ids: Iterable[str]) -> list[Execution]:
        """The executions of the project with these ids, in the order given; unknown ids
        are left out. Batched: one round of queries however many ids."""

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

        The queue's order is kept: local executions queued for ``host`` (``host`` set to
        it) or in the shared queue (``host`` unset) of the same project that come before
        this one (higher ``priority``, then earlier ``queued_at``) and fit take what they
        need first; this one starts only if it still fits after them.
        """

    @abc.abstractmethod
    def queue(self, *, project_id: str | None = None) -> list[Execution]:
        """Queued executions (of one project, or all) in the order they are dispatched:
        higher ``priority`` first, then first queued first."""

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
    def list_datums(
        self,
        project_id: str,
        *,
        execution_id: str | None = None,
        name_glob: str | None = None,
        tag: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        limit: int | None = None,
    ) -> list[Datum]:
        """Datums of a project, ordered by name (then creation time), filtered.

        ``execution_id``: only that execution's outputs. ``name_glob``: names matching it
        with :func:`fnmatch.fnmatchcase` semantics (case-sensitive; ``*`` also matches
        ``/``, so ``*.onnx`` finds ``model/best.onnx``; ``?`` is one character;
        ``[abc]``/``[!abc]`` are character classes). ``tag``: only datums with that tag.
        ``min_size``/``max_size``: bounds in bytes, inclusive. ``limit``: at most that
        many (the first by name); ``limit`` ≤ 0 gives ``[]``.
        """

    @abc.abstractmethod
    def get_datums(self, project_id: str, ids: Iterable[str | None]) -> list[Datum]:
        """The datums of the project with these exact, full ids, in the order given.

        Batched for any number of ids. Repeated ids are returned once; ``None`` entries and
        ids not in the project are left out (compare lengths to notice missing ones).
        """

    @abc.abstractmethod
    def add_datum_tags(self, datum_id: str, tags: Iterable[str]) -> None:
        """Add tags to a datum (idempotent). ``NotFoundError`` for an unknown datum id."""

    @abc.abstractmethod
    def resolve_datum(self, project_id: str, ref: str) -> Datum:
        """The datum ``ref`` names, with or without a ``datum://`` prefix.

        Tried in this order: an exact full datum id, an exact alias name, then a unique id
        prefix of at least 4 characters. Raises ``NotFoundError`` (naming the candidates
        when a prefix is ambiguous, close alias names in the hint) when none matches.
        """

    # -- datum aliases ------------------------------------------------------------------
    @abc.abstractmethod
    def set_alias(
        self, project_id: str, name: str, datum_id: str, *, execution_id: str | None = None
    ) -> DatumAlias:
        """Point alias ``name`` (``datum://NAME``) at ``datum_id``, creating or moving it.

        Every creation or move appends an :class:`AliasEvent` to the alias's history
        (``previous_datum_id`` is ``None`` on creation, also when re-created after
        :meth:`delete_alias`); ``execution_id`` records which execution moved it. Setting
        it to the datum it already names changes nothing (no event; the returned alias is
        the stored one). Atomic under concurrent callers.

        Names are 1-128 characters of ``[A-Za-z0-9._-]``, not starting with ``.``, without
        ``..`` and not shaped like a UUID (which would shadow datum ids); anything else
        raises ``ParameterError``. ``NotFoundError`` when ``datum_id`` (a full id) or
        ``execution_id`` is not in the project.
        """

    @abc.abstractmethod
    def get_alias(self, project_id: str, name: str) -> DatumAlias:
        """The alias called ``name``; ``NotFoundError`` (close names in the hint) if none."""

    @abc.abstractmethod
    def list_aliases(self, project_id: str) -> list[DatumAlias]:
        """The project's current aliases, by name."""

    @abc.abstractmethod
    def alias_history(self, project_id: str, name: str) -> list[AliasEvent]:
        """Every move of alias ``name``, oldest first, including moves before a deletion.

        ``NotFoundError`` for a name that was never set.
        """

    @abc.abstractmethod
    def delete_alias(self, project_id: str, name: str) -> None:
        """Remove alias ``name`` (its history stays); ``NotFoundError`` if there is none.

        A later :meth:`set_alias` of the same name creates it afresh.
        """

    # -- dataset versions ---------------------------------------------------------------
    @abc.abstractmethod
    def create_dataset_version(
        self,
        project_id: str,
        dataset: str,
        version: str,
        *,
        tree_digest: str,
        file_count: int,
        size: int,
        source: str = "upload",
        execution_id: str | None = None,
        from_version: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Record version ``version`` of ``dataset`` (created on first use): a tree manifest.

        Dataset and version names are 1-128 characters of ``[A-Za-z0-9._-]``, not starting
        with ``.``; the version ``latest`` is reserved; ``source`` is 1-32 characters
        (``"upload"`` or ``"execution"`` by convention). Anything else raises
        ``ParameterError``. A version that exists already raises ``ConflictError``
        (versions are immutable); under concurrent creators of one name exactly one wins.
        ``execution_id`` must be an execution of the project (``NotFoundError``);
        ``from_version`` is stored as given. A version's ``created_at`` is later than that
        of every earlier version of its dataset, so "latest" is always unambiguous.
        """

    @abc.abstractmethod
    def get_dataset_version(self, project_id: str, dataset: str, version: str) -> DatasetVersion:
        """Version ``version`` of ``dataset``; ``"latest"`` is the most recently created.

        ``NotFoundError`` for an unknown dataset (the hint lists the known datasets), an
        unknown version (the hint lists the dataset's versions), or ``latest`` of a dataset
        without versions.
        """

    @abc.abstractmethod
    def list_datasets(self, project_id: str) -> list[tuple[str, int, DatasetVersion | None]]:
        """Every dataset of the project, by name: (name, version count, latest version)."""

    @abc.abstractmethod
    def list_dataset_versions(self, project_id: str, dataset: str) -> list[DatasetVersion]:
        """The versions of ``dataset``, oldest first; ``NotFoundError`` for an unknown dataset."""

    @abc.abstractmethod
    def next_version_name(self, project_id: str, dataset: str) -> str:
        """The next free ``vN`` name: one more than the highest ``vN`` (``"v1"`` if none).

        Not a reservation: a concurrent creator may take it first (then
        :meth:`create_dataset_version` raises ``ConflictError``; ask again).
        """

    # -- lineage ------------------------------------------------------------------------
    @abc.abstractmethod
    def consumers_of_datum(self, project_id: str, datum_id: str) -> list[Execution]:
        """Executions with an input file whose ``datum_id`` is ``datum_id``, by counter.

        ``datum_id`` is a full id (resolve aliases first); an unknown one gives ``[]``.
        Indexed: fast at 100,000 executions.
        """

    @abc.abstractmethod
    def executions_with_input_uri_prefix(self, project_id: str, prefix: str) -> list[Execution]:
        """Executions with an input file whose URI is ``prefix`` or lies under it, by counter.

        Matches ``uri == prefix`` or ``uri.startswith(prefix + "/")`` (a trailing ``/`` on
        ``prefix`` is ignored), so ``dataset://images/v3`` finds the files of that version
        but not ``dataset://images/v30``. Indexed: fast at 100,000 executions.
        """

    @abc.abstractmethod
    def dataset_versions_of_execution(
        self, project_id: str, execution_id: str
    ) -> list[DatasetVersion]:
        """Dataset versions made by the execution (``execution_id`` set), oldest first."""

    # -- garbage collection support -----------------------------------------------------
    @abc.abstractmethod
    def referenced_digests(self) -> Iterator[str]:
        """Every blob digest a record of any project refers to, streamed.

        Datum digests, execution input digests, code snapshot tree digests, log digests,
        environment ``packages_digest`` values and dataset version tree digests. Tree
        members are not expanded (the caller reads the trees). A digest may be yielded more
        than once. Consume it promptly: a backend may hold a read transaction meanwhile.
        """

    @abc.abstractmethod
    def oldest_active_start(self) -> datetime | None:
        """The earliest ``created_at`` of any execution (any project) that is created,
        queued, starting or running; ``None`` when there is none.

        Blobs written after it may belong to an execution that has not recorded them yet.
        """

    # -- result cache -----------------------------------------------------------------
    @abc.abstractmethod
    def reuse_candidates(
        self, project_id: str, fingerprint: str, *, limit: int = 20
    ) -> list[Execution]:
        """``complete`` executions of the project with this fingerprint, newest first."""

    # -- flows: pipeline runs and sweeps ----------------------------------------------
    @abc.abstractmethod
    def create_flow(self, new: NewFlow) -> Flow:
        """Store a flow in status ``created`` with its nodes ``pending``.

        Counters are 1, 2, 3, ... per project and kind, never shared under concurrency.
        Node names must be unique within the flow (``ConflictError`` otherwise).
        """

    @abc.abstractmethod
    def get_flow(
        self, project_id: str, kind: str, ref: str | int, *, with_nodes: bool = True
    ) -> Flow:
        """A flow by counter (``3``, ``"#3"``), full id or id prefix; its nodes unless
        ``with_nodes`` is false (then ``nodes`` is empty: a cheap poll of its status)."""

    @abc.abstractmethod
    def list_flows(
        self, project_id: str, kind: str, *, limit: int | None = None,
        status: FlowStatus | None = None, with_nodes: bool = True,
    ) -> list[Flow]:
        """Flows of one kind (in ``status``, if given), newest first, with their nodes
        unless ``with_nodes`` is false (then each ``nodes`` is empty)."""

    @abc.abstractmethod
    def update_flow(
        self, flow_id: str, *, expect: Iterable[FlowStatus] | None = None, **fields: Any
    ) -> bool:
        """Set :data:`FLOW_FIELDS` of a flow atomically; only if its status is in ``expect``.

        Returns whether it happened.
        """

    @abc.abstractmethod
    def flow_stop_requested(self, flow_id: str) -> bool:
        """Whether a stop of the flow was asked for: one cheap query, for the driver's
        poll (``NotFoundError`` if there is no such flow)."""

    @abc.abstractmethod
    def request_flow_stop(self, flow_id: str) -> None:
        """Ask the process driving the flow to stop it (it polls for this)."""

    @abc.abstractmethod
    def add_flow_nodes(self, flow_id: str, nodes: Sequence[NewFlowNode]) -> list[FlowNode]:
        """Append ``pending`` nodes (a sweep's new trials) after the existing ones."""

    @abc.abstractmethod
    def update_flow_node(
        self,
        flow_id: str,
        name: str,
        *,
        expect: Iterable[NodeStatus] | None = None,
        **fields: Any,
    ) -> bool:
        """Set :data:`NODE_FIELDS` of one node; only if its status is in ``expect``."""

    @abc.abstractmethod
    def flows_of_execution(self, execution_id: str) -> list[tuple[Flow, str]]:
        """The flows (and node names) an execution ran in or was reused by."""

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
    def get_metrics(self, execution_id: str, *, after_seq: int | None = None
                    ) -> list[MetricPoint]:
        """All metric points of an execution, in arrival order; with ``after_seq`` only
        those that arrived after the point of that ``seq`` (a poll reads what is new)."""

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""
