"""The contract every :class:`~cairn.store.base.MetadataStore` backend must pass.

Subclass :class:`MetadataStoreContract` in a test module and provide a ``store`` fixture
that yields an empty store (and closes it)::

    class TestSqliteStore(MetadataStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            store = SqlMetadataStore(f"sqlite:///{tmp_path}/cairn.db")
            yield store
            store.close()

Tests that open the same store from other processes rebuild it as
``type(store)(store.url)``, so the backend class must be importable and its ``url`` must
name the same database from another process.
"""

from __future__ import annotations

import fnmatch
import math
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from typing import Any

import pytest

from cairn.entities import (
    CodeSnapshot,
    Datum,
    Execution,
    Flow,
    FlowStatus,
    InputFile,
    MetricPoint,
    NodeStatus,
    Project,
    Resources,
    Status,
)
from cairn.errors import CairnError, ConflictError, NotFoundError, ParameterError
from cairn.store.base import Allocation, MetadataStore, NewExecution, NewFlow, NewFlowNode

DIGEST = "ab" * 32
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def new_execution(project: Project, step: str = "train", **overrides: Any) -> NewExecution:
    """A ``NewExecution`` with plausible defaults for ``project``."""
    values: dict[str, Any] = {
        "project_id": project.id,
        "step": step,
        "parameters": {"lr": 0.01, "epochs": 3},
        "command": ["python", "train.py", "--lr=0.01"],
        "inputs": [],
        "code": None,
        "environment": {"python": "3.11"},
        "step_config": {"image": "python:3.11"},
    }
    values.update(overrides)
    return NewExecution(**values)


def _create_in_child(
    store_type: type[MetadataStore], url: str, project_id: str, n: int
) -> list[int]:
    """Run in another process: create ``n`` executions, return their counters."""
    store = store_type(url)  # type: ignore[call-arg]
    try:
        project = Project(id=project_id, name="")
        return [store.create_execution(new_execution(project)).counter for _ in range(n)]
    finally:
        store.close()


def _create_version_in_child(
    store_type: type[MetadataStore], url: str, project_id: str, version: str
) -> str:
    """Run in another process: try to create ``images/<version>``; say what happened."""
    store = store_type(url)  # type: ignore[call-arg]
    try:
        store.create_dataset_version(
            project_id, "images", version, tree_digest=DIGEST, file_count=1, size=1
        )
        return "created"
    except ConflictError:
        return "conflict"
    finally:
        store.close()


def new_datum(
    project: Project,
    name: str,
    *,
    datum_id: str | None = None,
    digest: str = DIGEST,
    size: int = 1,
    execution: Execution | None = None,
    tags: tuple[str, ...] = (),
    created_at: datetime = T0,
) -> Datum:
    """A ``Datum`` of ``project`` (a fresh uuid4 id unless ``datum_id`` is given)."""
    return Datum(
        id=datum_id or str(uuid.uuid4()),
        project_id=project.id,
        name=name,
        digest=digest,
        size=size,
        execution_id=execution.id if execution else None,
        created_at=created_at,
        tags=tags,
    )


class MetadataStoreContract:
    """Behaviour every metadata store backend must show. Needs a ``store`` fixture."""

    # -- helpers ----------------------------------------------------------------------
    @pytest.fixture
    def project(self, store: MetadataStore) -> Project:
        return store.ensure_project("demo")

    def make(self, store: MetadataStore, project: Project, **overrides: Any) -> Execution:
        return store.create_execution(new_execution(project, **overrides))

    def make_queued(
        self, store: MetadataStore, project: Project, resources: Resources, *,
        priority: int = 0, host: str | None = None,
    ) -> Execution:
        execution = self.make(store, project, resources=resources, priority=priority)
        assert store.transition(execution.id, Status.QUEUED, queued_at=T0, host=host,
                                pid=1 if host else None)
        return execution

    def finish(self, store: MetadataStore, execution: Execution, **fields: Any) -> None:
        assert store.transition(execution.id, Status.RUNNING)
        assert store.transition(execution.id, Status.COMPLETE, exit_code=0, **fields)

    # -- projects ---------------------------------------------------------------------
    def test_ensure_project_creates_once(self, store: MetadataStore) -> None:
        first = store.ensure_project("vision")
        assert first.name == "vision"
        assert store.ensure_project("vision") == first
        assert store.ensure_project("audio").id != first.id

    # -- create / get -----------------------------------------------------------------
    def test_create_execution_stores_everything(
        self, store: MetadataStore, project: Project
    ) -> None:
        inputs = [
            InputFile("images", "b.png", "s3://bucket/b.png", DIGEST, 2048, datum_id=None),
            InputFile("images", "a.png", "datum://0123abcd", "cd" * 32, 10**10, "0123abcd"),
        ]
        code = CodeSnapshot("ef" * 32, 12, 3456, git_commit="abc123", git_dirty=True,
                            git_branch="main")  # fmt: skip
        created = self.make(
            store,
            project,
            inputs=inputs,
            code=code,
            resources=Resources(cpus=2.5, memory_mb=4096, gpus=1),
            title="baseline",
            tags=("b-tag", "a-tag", "b-tag"),
            rerun_of="some-earlier-id",
            time_limit=3600.0,
            no_output_timeout=120.0,
        )
        assert created.counter == 1
        assert created.status is Status.CREATED
        assert created.tags == ("a-tag", "b-tag")
        assert created.created_at.utcoffset() == timedelta(0)
        fetched = store.get_execution(project.id, created.id)
        assert fetched == created
        assert fetched.inputs == inputs  # order kept, 10 GB size intact
        assert fetched.code == code
        assert fetched.parameters == {"lr": 0.01, "epochs": 3}
        assert fetched.command == ["python", "train.py", "--lr=0.01"]
        assert fetched.environment == {"python": "3.11"}
        assert fetched.step_config == {"image": "python:3.11"}
        assert fetched.resources == Resources(cpus=2.5, memory_mb=4096, gpus=1)
        assert (fetched.title, fetched.rerun_of) == ("baseline", "some-earlier-id")
        assert (fetched.time_limit, fetched.no_output_timeout) == (3600.0, 120.0)
        assert fetched.gpu_ids == () and fetched.stop_requested is False
        assert fetched.metrics == {}

    def test_counters_count_per_project(self, store: MetadataStore, project: Project) -> None:
        other = store.ensure_project("other")
        assert [self.make(store, project).counter for _ in range(3)] == [1, 2, 3]
        assert self.make(store, other).counter == 1
        assert store.count_executions(project.id) == 3
        assert store.count_executions(other.id) == 1

    def test_create_in_unknown_project_fails(self, store: MetadataStore) -> None:
        with pytest.raises(NotFoundError):
            self.make(store, Project(id="no-such-project", name="x"))

    def test_counters_have_no_gaps_under_concurrent_threads(
        self, store: MetadataStore, project: Project
    ) -> None:
        start = threading.Barrier(4)

        def create(_: int) -> list[int]:
            start.wait()
            return [self.make(store, project).counter for _ in range(8)]

        with ThreadPoolExecutor(4) as pool:
            counters = [c for batch in pool.map(create, range(4)) for c in batch]
        assert sorted(counters) == list(range(1, 33))

    def test_counters_have_no_gaps_under_concurrent_processes(
        self, store: MetadataStore, project: Project
    ) -> None:
        ctx = get_context("spawn")  # a fresh interpreter, like a second `cairn run`
        with ProcessPoolExecutor(3, mp_context=ctx) as pool:
            futures = [
                pool.submit(_create_in_child, type(store), store.url, project.id, 6)
                for _ in range(3)
            ]
            counters = [c for f in futures for c in f.result(timeout=120)]
        assert sorted(counters) == list(range(1, 19))

    def test_get_execution_by_counter_forms_and_id(
        self, store: MetadataStore, project: Project
    ) -> None:
        self.make(store, project)
        second = self.make(store, project)
        for ref in (
            2,
            "2",
            "#2",
            " #2 ",
            second.id,
            second.id[:8],
            second.id[:4],
            second.id.upper(),
        ):
            assert store.get_execution(project.id, ref).id == second.id, ref

    def test_get_execution_not_found(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        other = store.ensure_project("other")
        for ref in (5, "#5", "#x", "ffffffff-0000", execution.id[:3], ""):
            with pytest.raises(NotFoundError):
                store.get_execution(project.id, ref)
        with pytest.raises(NotFoundError):
            store.get_execution(other.id, execution.id)
        with pytest.raises(NotFoundError):
            store.get_execution(other.id, 1)

    def test_ambiguous_id_prefix_lists_candidates(
        self, store: MetadataStore, project: Project, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Backends that mint ids with uuid.uuid4 get two ids sharing their first 6 chars.
        ids = iter(["abcd1234-0000-4000-8000-000000000001", "abcd12ff-0000-4000-8000-000000000002"])
        real_uuid4 = uuid.uuid4
        monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(next(ids, None) or str(real_uuid4())))
        first = self.make(store, project)
        second = self.make(store, project)
        monkeypatch.undo()
        if first.id[:6] != second.id[:6]:
            pytest.skip("this backend does not mint ids with uuid.uuid4")
        with pytest.raises(NotFoundError) as caught:
            store.get_execution(project.id, first.id[:6])
        assert first.id in str(caught.value) and second.id in str(caught.value)
        assert "#1" in str(caught.value) and "#2" in str(caught.value)
        assert store.get_execution(project.id, "abcd12f").id == second.id

    # -- list -------------------------------------------------------------------------
    def test_list_sorts_by_counter_and_limits(self, store: MetadataStore, project: Project) -> None:
        for _ in range(5):
            self.make(store, project)
        assert [e.counter for e in store.list_executions(project.id)] == [5, 4, 3, 2, 1]
        assert [e.counter for e in store.list_executions(project.id, limit=2)] == [5, 4]
        assert [
            e.counter for e in store.list_executions(project.id, descending=False, limit=3)
        ] == [1, 2, 3]
        assert [e.counter for e in store.list_executions(project.id, sort="created")] == [
            5, 4, 3, 2, 1
        ]  # fmt: skip
        assert store.list_executions(store.ensure_project("empty").id) == []

    def test_list_filters_by_step_status_and_tag(
        self, store: MetadataStore, project: Project
    ) -> None:
        train = self.make(store, project, step="train", tags=("best",))
        evaluate = self.make(store, project, step="evaluate")
        queued = self.make(store, project, step="train", tags=("best", "sweep"))
        store.transition(queued.id, Status.QUEUED)

        def counters(**filters: Any) -> list[int]:
            return [e.counter for e in store.list_executions(project.id, **filters)]

        assert counters(step="train") == [queued.counter, train.counter]
        assert counters(step="evaluate") == [evaluate.counter]
        assert counters(statuses=[Status.QUEUED]) == [queued.counter]
        assert counters(statuses=[Status.CREATED, Status.QUEUED]) == [3, 2, 1]
        assert counters(statuses=[]) == []
        assert counters(tag="best") == [queued.counter, train.counter]
        assert counters(tag="sweep", step="train", statuses=[Status.QUEUED]) == [3]
        assert counters(tag="nope") == []
        listed = store.list_executions(project.id, tag="sweep")[0]
        assert listed.tags == ("best", "sweep")

    def test_sort_by_metric_puts_missing_values_last_both_ways(
        self, store: MetadataStore, project: Project
    ) -> None:
        values = {1: 0.5, 2: None, 3: 0.9, 4: 0.1, 5: None, 6: math.nan}
        executions = {n: self.make(store, project) for n in values}
        for n, value in values.items():
            if value is not None:
                store.add_metrics(executions[n].id, [MetricPoint("acc", value, 1, 1.0)])
            store.add_metrics(executions[n].id, [MetricPoint("loss", float(n), 1, 1.0)])

        def order(**kwargs: Any) -> list[int]:
            listed = store.list_executions(project.id, sort="metric:acc", **kwargs)
            return [e.counter for e in listed]

        # NaN counts as missing; executions without the metric follow, by counter.
        assert order() == [3, 1, 4, 6, 5, 2]
        assert order(descending=False) == [4, 1, 3, 2, 5, 6]
        assert order(limit=2) == [3, 1]
        assert order(limit=4) == [3, 1, 4, 6]
        assert order(descending=False, limit=4) == [4, 1, 3, 2]
        assert [e.counter for e in store.list_executions(project.id, sort="metric:nope")] == [
            6, 5, 4, 3, 2, 1
        ]  # fmt: skip
        top = store.list_executions(project.id, sort="metric:acc", limit=1)[0]
        assert top.metrics == {"acc": 0.9, "loss": 3.0}

    def test_sort_by_metric_respects_filters(self, store: MetadataStore, project: Project) -> None:
        for n in range(6):
            execution = self.make(store, project, step="train" if n % 2 else "evaluate")
            store.add_metrics(execution.id, [MetricPoint("acc", n / 10, None, 1.0)])
        listed = store.list_executions(project.id, step="train", sort="metric:acc", limit=2)
        assert [e.metrics["acc"] for e in listed] == [0.5, 0.3]

    def test_sort_by_duration(self, store: MetadataStore, project: Project) -> None:
        short, long_, running, unstarted = (self.make(store, project) for _ in range(4))
        now = datetime.now(UTC)
        store.transition(short.id, Status.RUNNING, started_at=now - timedelta(hours=1))
        store.transition(short.id, Status.COMPLETE, ended_at=now - timedelta(minutes=59))
        store.transition(long_.id, Status.RUNNING, started_at=now - timedelta(hours=5))
        store.transition(long_.id, Status.COMPLETE, ended_at=now - timedelta(hours=3))
        # Running for 30 minutes so far: between the two finished ones.
        store.transition(running.id, Status.RUNNING, started_at=now - timedelta(minutes=30))

        def order(**kwargs: Any) -> list[int]:
            return [e.counter for e in store.list_executions(project.id, sort="duration", **kwargs)]

        assert order() == [long_.counter, running.counter, short.counter, unstarted.counter]
        assert order(descending=False) == [
            short.counter, running.counter, long_.counter, unstarted.counter
        ]  # fmt: skip
        assert order(limit=2) == [long_.counter, running.counter]
        fetched = store.get_execution(project.id, long_.id)
        assert fetched.duration == pytest.approx(2 * 3600)

    def test_unknown_sort_is_an_error(self, store: MetadataStore, project: Project) -> None:
        with pytest.raises(CairnError, match="sort"):
            store.list_executions(project.id, sort="colour")

    # -- state changes ----------------------------------------------------------------
    def test_transition_compare_and_set(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        assert not store.transition(execution.id, Status.RUNNING, expect=[Status.QUEUED])
        assert store.get_execution(project.id, execution.id).status is Status.CREATED
        assert store.transition(execution.id, Status.QUEUED, expect=[Status.CREATED], queued_at=T0)
        assert store.transition(
            execution.id,
            Status.RUNNING,
            expect=(Status.QUEUED, Status.STARTING),
            started_at=T0 + timedelta(seconds=1),
            host="gpu-box",
            pid=4242,
        )
        assert store.transition(
            execution.id,
            Status.ERROR,
            exit_code=3,
            status_detail="exit code 3",
            ended_at=T0 + timedelta(seconds=61),
            log_digest=DIGEST,
        )
        done = store.get_execution(project.id, execution.id)
        assert done.status is Status.ERROR
        assert (done.exit_code, done.status_detail, done.host, done.pid, done.log_digest) == (
            3, "exit code 3", "gpu-box", 4242, DIGEST
        )  # fmt: skip
        assert done.queued_at == T0
        assert done.started_at == T0 + timedelta(seconds=1)
        assert done.ended_at is not None and done.ended_at.utcoffset() == timedelta(0)
        assert done.duration == pytest.approx(60.0)

    def test_final_status_never_changes(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        self.finish(store, execution)
        for target in (Status.RUNNING, Status.ERROR, Status.COMPLETE, Status.QUEUED):
            assert not store.transition(execution.id, target, exit_code=9)
        assert not store.transition(execution.id, Status.CRASHED, expect=[Status.COMPLETE])
        after = store.get_execution(project.id, execution.id)
        assert (after.status, after.exit_code) == (Status.COMPLETE, 0)

    def test_transition_rejects_unknown_fields_and_executions(
        self, store: MetadataStore, project: Project
    ) -> None:
        execution = self.make(store, project)
        with pytest.raises(TypeError):
            store.transition(execution.id, Status.QUEUED, counter=7)
        with pytest.raises(NotFoundError):
            store.transition("no-such-id", Status.QUEUED)

    def test_only_one_of_racing_transitions_wins(
        self, store: MetadataStore, project: Project
    ) -> None:
        execution = self.make(store, project)
        start = threading.Barrier(4)

        def claim(_: int) -> bool:
            start.wait()
            return store.transition(execution.id, Status.QUEUED, expect=[Status.CREATED])

        with ThreadPoolExecutor(4) as pool:
            assert sorted(pool.map(claim, range(4))) == [False, False, False, True]

    def test_request_stop(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        assert store.execution_status(execution.id) == (Status.CREATED, False)
        store.request_stop(execution.id)
        assert store.get_execution(project.id, execution.id).stop_requested is True
        assert store.execution_status(execution.id) == (Status.CREATED, True)
        with pytest.raises(NotFoundError):
            store.request_stop("no-such-id")
        with pytest.raises(NotFoundError):
            store.execution_status(str(uuid.uuid4()))

    def test_execution_status_follows_transitions(self, store: MetadataStore,
                                                  project: Project) -> None:
        execution = self.make(store, project)
        store.transition(execution.id, Status.QUEUED)
        assert store.execution_status(execution.id) == (Status.QUEUED, False)

    # -- allocation -------------------------------------------------------------------
    def test_allocate_fits_cpus(self, store: MetadataStore, project: Project) -> None:
        capacity = Resources(cpus=2, memory_mb=0, gpus=0)
        first, second, third = (
            self.make_queued(store, project, Resources(cpus=1)) for _ in range(3)
        )
        assert store.allocate(first.id, host="h", capacity=capacity, gpu_ids=[]) == Allocation()
        assert store.allocate(second.id, host="h", capacity=capacity, gpu_ids=[]) is not None
        assert store.allocate(third.id, host="h", capacity=capacity, gpu_ids=[]) is None
        assert store.get_execution(project.id, third.id).status is Status.QUEUED
        started = store.get_execution(project.id, first.id)
        assert (started.status, started.host) == (Status.STARTING, "h")
        # Another host has its own capacity.
        assert store.allocate(third.id, host="other", capacity=capacity, gpu_ids=[]) is not None
        fourth = self.make_queued(store, project, Resources(cpus=1))
        assert store.allocate(fourth.id, host="h", capacity=capacity, gpu_ids=[]) is None
        self.finish(store, first)
        assert store.allocate(fourth.id, host="h", capacity=capacity, gpu_ids=[]) is not None

    def test_allocate_fits_memory(self, store: MetadataStore, project: Project) -> None:
        capacity = Resources(cpus=8, memory_mb=1000)
        first, second = (
            self.make_queued(store, project, Resources(cpus=1, memory_mb=600)) for _ in range(2)
        )
        small = self.make_queued(store, project, Resources(cpus=1, memory_mb=400))
        assert store.allocate(first.id, host="h", capacity=capacity, gpu_ids=[]) is not None
        assert store.allocate(second.id, host="h", capacity=capacity, gpu_ids=[]) is None
        assert store.allocate(small.id, host="h", capacity=capacity, gpu_ids=[]) is not None

    def test_allocate_gives_distinct_gpus(self, store: MetadataStore, project: Project) -> None:
        capacity = Resources(cpus=16, memory_mb=0, gpus=3)
        gpus = [0, 1, 2]
        pair = self.make_queued(store, project, Resources(cpus=1, gpus=2))
        one = self.make_queued(store, project, Resources(cpus=1, gpus=1))
        another = self.make_queued(store, project, Resources(cpus=1, gpus=1))
        cpu_only = self.make_queued(store, project, Resources(cpus=1, gpus=0))
        got_pair = store.allocate(pair.id, host="h", capacity=capacity, gpu_ids=gpus)
        got_one = store.allocate(one.id, host="h", capacity=capacity, gpu_ids=gpus)
        assert got_pair is not None and got_one is not None
        assert len(got_pair.gpu_ids) == 2 and len(got_one.gpu_ids) == 1
        assert set(got_pair.gpu_ids) | set(got_one.gpu_ids) == {0, 1, 2}
        assert store.get_execution(project.id, pair.id).gpu_ids == got_pair.gpu_ids
        assert store.allocate(another.id, host="h", capacity=capacity, gpu_ids=gpus) is None
        assert (
            store.allocate(cpu_only.id, host="h", capacity=capacity, gpu_ids=gpus) == Allocation()
        )
        self.finish(store, one)
        freed = store.allocate(another.id, host="h", capacity=capacity, gpu_ids=gpus)
        assert freed == Allocation(gpu_ids=got_one.gpu_ids)

    def test_allocate_only_queued(self, store: MetadataStore, project: Project) -> None:
        created = self.make(store, project)
        capacity = Resources(cpus=4)
        assert store.allocate(created.id, host="h", capacity=capacity, gpu_ids=[]) is None
        assert store.get_execution(project.id, created.id).status is Status.CREATED
        queued = self.make_queued(store, project, Resources(cpus=1))
        assert store.allocate(queued.id, host="h", capacity=capacity, gpu_ids=[]) is not None
        assert store.allocate(queued.id, host="h", capacity=capacity, gpu_ids=[]) is None
        with pytest.raises(NotFoundError):
            store.allocate("no-such-id", host="h", capacity=capacity, gpu_ids=[])

    # -- the queue --------------------------------------------------------------------
    def test_queue_is_priority_then_first_come(self, store: MetadataStore, project: Project) -> None:
        one = Resources(cpus=1)
        a, b, c, d = (self.make_queued(store, project, one, priority=p) for p in (0, 5, 0, 5))
        other = store.ensure_project("other")
        e = self.make_queued(store, other, one, priority=9)
        assert [x.id for x in store.queue(project_id=project.id)] == [b.id, d.id, a.id, c.id]
        assert [x.id for x in store.queue()] == [e.id, b.id, d.id, a.id, c.id]
        assert store.queue(project_id=project.id)[0].priority == 5
        assert store.allocate(b.id, host="h", capacity=Resources(cpus=4), gpu_ids=[])
        assert [x.id for x in store.queue(project_id=project.id)] == [d.id, a.id, c.id]

    def test_allocate_keeps_the_queue_order(self, store: MetadataStore, project: Project) -> None:
        capacity = Resources(cpus=1, memory_mb=0)
        low = self.make_queued(store, project, Resources(cpus=1))
        high = self.make_queued(store, project, Resources(cpus=1), priority=1)
        assert store.allocate(low.id, host="h", capacity=capacity, gpu_ids=[]) is None
        assert store.allocate(high.id, host="h", capacity=capacity, gpu_ids=[]) is not None
        assert store.allocate(low.id, host="h", capacity=capacity, gpu_ids=[]) is None
        self.finish(store, high)
        assert store.allocate(low.id, host="h", capacity=capacity, gpu_ids=[]) is not None

    def test_allocate_backfills_past_what_cannot_fit(
        self, store: MetadataStore, project: Project
    ) -> None:
        capacity = Resources(cpus=2, memory_mb=0, gpus=1)
        big = self.make_queued(store, project, Resources(cpus=1, gpus=2), priority=3)
        small = self.make_queued(store, project, Resources(cpus=1))
        assert store.allocate(small.id, host="h", capacity=capacity, gpu_ids=[0]) is not None
        assert store.get_execution(project.id, big.id).status is Status.QUEUED

    def test_allocate_ignores_what_another_host_waits_on(
        self, store: MetadataStore, project: Project
    ) -> None:
        capacity = Resources(cpus=1, memory_mb=0)
        theirs = self.make_queued(store, project, Resources(cpus=1), priority=5, host="other")
        ours = self.make_queued(store, project, Resources(cpus=1), host="h")
        assert store.allocate(ours.id, host="h", capacity=capacity, gpu_ids=[]) is not None
        assert store.get_execution(project.id, theirs.id).status is Status.QUEUED

    def test_concurrent_allocation_never_oversubscribes(
        self, store: MetadataStore, project: Project
    ) -> None:
        capacity = Resources(cpus=3, gpus=2)
        queued = [
            self.make_queued(store, project, Resources(cpus=1, gpus=1 if n % 2 else 0))
            for n in range(8)
        ]
        start = threading.Barrier(4)

        def allocate_some(worker: int) -> list[Allocation | None]:
            start.wait()
            return [
                store.allocate(e.id, host="h", capacity=capacity, gpu_ids=[0, 1])
                for e in queued[worker::4]
            ]

        with ThreadPoolExecutor(4) as pool:
            grants = [g for batch in pool.map(allocate_some, range(4)) for g in batch]
        granted = [g for g in grants if g is not None]
        assert len(granted) == 3
        held = [gpu for g in granted for gpu in g.gpu_ids]
        assert len(held) == len(set(held)) <= 2
        active = store.list_executions(project.id, statuses=[Status.STARTING])
        assert len(active) == 3

    # -- tags -------------------------------------------------------------------------
    def test_tags_add_and_remove(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project, tags=("a",))
        store.add_tags(execution.id, ["c", "b", "a"])
        store.add_tags(execution.id, ["b"])
        assert store.get_execution(project.id, execution.id).tags == ("a", "b", "c")
        store.remove_tags(execution.id, ["a", "zzz"])
        assert store.get_execution(project.id, execution.id).tags == ("b", "c")
        with pytest.raises(NotFoundError):
            store.add_tags("no-such-id", ["x"])

    # -- datums -----------------------------------------------------------------------
    def _datums(self, project: Project, execution: Execution | None) -> list[Datum]:
        return [
            Datum(
                id="0a1b2c3d4e5f",
                project_id=project.id,
                name="model/weights.onnx",
                digest=DIGEST,
                size=5 * 10**9,
                execution_id=execution.id if execution else None,
                created_at=T0,
                metadata={"framework": "onnx", "accuracy": 0.93},
                tags=("prod", "best"),
            ),
            Datum(
                id="0a1b2c99ffff",
                project_id=project.id,
                name="metrics.json",
                digest="cd" * 32,
                size=12,
                execution_id=execution.id if execution else None,
                created_at=T0 + timedelta(seconds=1),
            ),
            Datum(
                id="77aa00000000",
                project_id=project.id,
                name="raw.csv",
                digest="ee" * 32,
                size=1,
                execution_id=None,
                created_at=T0,
            ),
        ]

    def test_datums_round_trip_and_lookup(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        weights, metrics, raw = self._datums(project, execution)
        store.add_datums([weights, metrics, raw])
        fetched = store.get_datum(project.id, weights.id)
        assert fetched == Datum(**{**weights.__dict__, "tags": ("best", "prod")})
        assert fetched.created_at.utcoffset() == timedelta(0)
        assert store.get_datum(project.id, "0a1b2c3d").id == weights.id
        assert store.get_datum(project.id, "datum://0a1b2c3d").id == weights.id
        assert store.get_datum(project.id, f"datum://{metrics.id}").id == metrics.id
        assert store.get_datum(project.id, "77aa").id == raw.id
        with pytest.raises(NotFoundError) as caught:
            store.get_datum(project.id, "datum://0a1b")
        assert weights.id in str(caught.value) and metrics.id in str(caught.value)
        for missing in ("ffff0000", "datum://0a1", "0a"):
            with pytest.raises(NotFoundError):
                store.get_datum(project.id, missing)
        with pytest.raises(NotFoundError):
            store.get_datum(store.ensure_project("other").id, weights.id)

    def test_list_datums_by_name_and_execution(
        self, store: MetadataStore, project: Project
    ) -> None:
        execution = self.make(store, project)
        store.add_datums(self._datums(project, execution))
        names = [d.name for d in store.list_datums(project.id)]
        assert names == ["metrics.json", "model/weights.onnx", "raw.csv"]
        mine = [d.name for d in store.list_datums(project.id, execution_id=execution.id)]
        assert mine == ["metrics.json", "model/weights.onnx"]
        assert store.list_datums(store.ensure_project("other").id) == []

    # -- metrics ----------------------------------------------------------------------
    def test_metrics_keep_arrival_order_across_batches(
        self, store: MetadataStore, project: Project
    ) -> None:
        execution = self.make(store, project)
        first = [MetricPoint("loss", 1.0 / (i + 1), i, 100.0 + i) for i in range(5)]
        second = [MetricPoint("acc", 0.5, None, 200.0), MetricPoint("loss", 0.05, 5, 201.0)]
        store.add_metrics(execution.id, first)
        store.add_metrics(execution.id, second)
        store.add_metrics(execution.id, [])
        points = store.get_metrics(execution.id)
        assert [(p.key, p.value, p.step, p.time) for p in points] == [
            (p.key, p.value, p.step, p.time) for p in first + second
        ]
        seqs = [p.seq for p in points]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        listed = store.get_execution(project.id, execution.id)
        assert listed.metrics == {"loss": 0.05, "acc": 0.5}
        # A poll reads only what arrived after the last point it saw.
        assert store.get_metrics(execution.id, after_seq=points[4].seq) == points[5:]
        assert store.get_metrics(execution.id, after_seq=points[-1].seq) == []
        store.add_metrics(execution.id, [MetricPoint("acc", 0.75, 6, 300.0)])
        newer = store.get_metrics(execution.id, after_seq=points[-1].seq)
        assert [(p.key, p.value) for p in newer] == [("acc", 0.75)]
        assert newer[0].seq > points[-1].seq

    def test_latest_metric_is_last_of_batch(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        store.add_metrics(
            execution.id,
            [MetricPoint("acc", 0.9, 1, 1.0), MetricPoint("acc", 0.7, 2, 2.0)],
        )
        assert store.get_execution(project.id, execution.id).metrics == {"acc": 0.7}

    def test_nan_and_infinite_values_survive(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        store.add_metrics(
            execution.id,
            [MetricPoint("loss", math.inf, 1, 1.0), MetricPoint("loss", math.nan, 2, 2.0)],
        )
        values = [p.value for p in store.get_metrics(execution.id)]
        assert values[0] == math.inf and math.isnan(values[1])
        assert math.isnan(store.get_execution(project.id, execution.id).metrics["loss"])

    def test_metadata_values_join_metrics(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        store.add_metrics(execution.id, [MetricPoint("acc", 0.8, 1, 1.0)])
        store.set_metadata(execution.id, {"stage": "warmup", "classes": ["cat", "dog"]})
        store.set_metadata(execution.id, {"stage": "finetune", "best": {"epoch": 3}})
        listed = store.list_executions(project.id)[0]
        assert listed.metrics == {
            "acc": 0.8,
            "stage": "finetune",
            "classes": ["cat", "dog"],
            "best": {"epoch": 3},
        }
        # The latest value of a key wins, whichever kind it is.
        store.set_metadata(execution.id, {"acc": "n/a"})
        assert store.get_execution(project.id, execution.id).metrics["acc"] == "n/a"
        store.add_metrics(execution.id, [MetricPoint("stage", 2.0, None, 3.0)])
        assert store.get_execution(project.id, execution.id).metrics["stage"] == 2.0

    def test_metrics_of_unknown_execution(self, store: MetadataStore) -> None:
        with pytest.raises(NotFoundError):
            store.add_metrics("no-such-id", [MetricPoint("acc", 1.0, None, 1.0)])
        with pytest.raises(NotFoundError):
            store.set_metadata("no-such-id", {"note": "x"})
        with pytest.raises(NotFoundError):
            store.get_metrics("no-such-id")
        with pytest.raises(NotFoundError):
            store.get_metrics("no-such-id", after_seq=3)

    def test_metrics_of_a_new_execution_are_empty(
        self, store: MetadataStore, project: Project
    ) -> None:
        assert store.get_metrics(self.make(store, project).id) == []

    # -- datum queries ----------------------------------------------------------------
    GLOB_NAMES = (
        "model/weights.onnx", "metrics.json", "raw.csv", "a_b.txt", "axb.txt", "100%.txt",
        "img/train/1.png", "img/val/2.png", "img/val/deep/3.png", "IMG/upper.png", "é/ü.txt",
        "back\\slash.txt",
    )  # fmt: skip

    @pytest.mark.parametrize(
        "pattern",
        [
            "*", "*.onnx", "img/*", "*/*.png", "img/*/*.png", "*.png", "a_b*", "?_b.txt",
            "[am]*", "[!am]*", "img/[tv]*/?.png", "100%*", "*%*", "*_*", "IMG/*", "é/*",
            "back\\*", "*\\slash*", "raw.csv", "raw.cs", "?", "", "[", "img/[",
        ],
    )  # fmt: skip
    def test_list_datums_glob_is_fnmatch(
        self, store: MetadataStore, project: Project, pattern: str
    ) -> None:
        store.add_datums([new_datum(project, name) for name in self.GLOB_NAMES])
        expected = sorted(n for n in self.GLOB_NAMES if fnmatch.fnmatchcase(n, pattern))
        got = [d.name for d in store.list_datums(project.id, name_glob=pattern)]
        assert got == expected, pattern

    def test_list_datums_filters_combine(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        other = store.ensure_project("other")
        store.add_datums(
            [
                new_datum(project, "a.bin", size=10, tags=("keep",), execution=execution),
                new_datum(project, "b.bin", size=2000, tags=("keep", "big")),
                new_datum(project, "c.bin", size=5 * 10**9, execution=execution),
                new_datum(project, "d/e.txt", size=10, tags=("keep",)),
                new_datum(other, "a.bin", size=10, tags=("keep",)),
            ]
        )

        def names(**filters: Any) -> list[str]:
            return [d.name for d in store.list_datums(project.id, **filters)]

        assert names() == ["a.bin", "b.bin", "c.bin", "d/e.txt"]
        assert names(tag="keep") == ["a.bin", "b.bin", "d/e.txt"]
        assert names(tag="nope") == []
        assert names(min_size=10, max_size=2000) == ["a.bin", "b.bin", "d/e.txt"]
        assert names(min_size=11) == ["b.bin", "c.bin"]
        assert names(max_size=9) == []
        assert names(min_size=10**9) == ["c.bin"]
        assert names(execution_id=execution.id, name_glob="*.bin") == ["a.bin", "c.bin"]
        assert names(tag="keep", name_glob="*.bin", max_size=100) == ["a.bin"]
        assert names(limit=2) == ["a.bin", "b.bin"]
        assert names(name_glob="[abcd]*", limit=3) == ["a.bin", "b.bin", "c.bin"]
        assert names(limit=0) == []
        listed = store.list_datums(project.id, tag="big")
        assert [d.tags for d in listed] == [("big", "keep")]

    def test_add_datum_tags(self, store: MetadataStore, project: Project) -> None:
        datum = new_datum(project, "a.bin", tags=("old",))
        store.add_datums([datum])
        store.add_datum_tags(datum.id, ["new", "old", "new"])
        store.add_datum_tags(datum.id, [])
        assert store.get_datum(project.id, datum.id).tags == ("new", "old")
        assert [d.id for d in store.list_datums(project.id, tag="new")] == [datum.id]
        with pytest.raises(NotFoundError):
            store.add_datum_tags("no-such-datum", ["x"])

    def test_get_datums_in_given_order(self, store: MetadataStore, project: Project) -> None:
        many = [new_datum(project, f"f{n:04}.bin", tags=("t",)) for n in range(1200)]
        store.add_datums(many)
        elsewhere = new_datum(store.ensure_project("other"), "x.bin")
        store.add_datums([elsewhere])
        wanted = [d.id for d in reversed(many)]
        got = store.get_datums(project.id, wanted)
        assert [d.id for d in got] == wanted
        assert got[0].tags == ("t",)
        picked = store.get_datums(
            project.id, [many[5].id, None, "missing", many[5].id, elsewhere.id, many[1].id]
        )
        assert [d.id for d in picked] == [many[5].id, many[1].id]
        assert store.get_datums(project.id, []) == []

    # -- aliases ----------------------------------------------------------------------
    def test_alias_create_move_and_history(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        first, second = new_datum(project, "m1.onnx"), new_datum(project, "m2.onnx")
        store.add_datums([first, second])
        created = store.set_alias(project.id, "best-model", first.id)
        assert (created.name, created.datum_id, created.execution_id) == (
            "best-model", first.id, None
        )  # fmt: skip
        assert created.uri == "datum://best-model"
        assert created.updated_at.utcoffset() == timedelta(0)
        assert store.get_alias(project.id, "best-model") == created
        moved = store.set_alias(project.id, "best-model", second.id, execution_id=execution.id)
        assert (moved.datum_id, moved.execution_id) == (second.id, execution.id)
        assert moved.updated_at >= created.updated_at
        # Setting it to the datum it already names is a no-op.
        assert store.set_alias(project.id, "best-model", second.id) == moved
        assert store.get_alias(project.id, "best-model") == moved
        history = store.alias_history(project.id, "best-model")
        assert [(e.previous_datum_id, e.datum_id, e.execution_id) for e in history] == [
            (None, first.id, None),
            (first.id, second.id, execution.id),
        ]
        assert all(e.name == "best-model" for e in history)
        assert history[0].at == created.updated_at and history[1].at == moved.updated_at

    def test_list_aliases_by_name_per_project(
        self, store: MetadataStore, project: Project
    ) -> None:
        other = store.ensure_project("other")
        mine, theirs = new_datum(project, "a"), new_datum(other, "a")
        store.add_datums([mine, theirs])
        for name in ("zeta", "alpha", "Mid.1"):
            store.set_alias(project.id, name, mine.id)
        store.set_alias(other.id, "alpha", theirs.id)
        assert [a.name for a in store.list_aliases(project.id)] == ["Mid.1", "alpha", "zeta"]
        assert [a.datum_id for a in store.list_aliases(other.id)] == [theirs.id]
        assert store.list_aliases(store.ensure_project("empty").id) == []
        with pytest.raises(NotFoundError):
            store.get_alias(other.id, "zeta")

    def test_delete_alias_keeps_history(self, store: MetadataStore, project: Project) -> None:
        first, second = new_datum(project, "a"), new_datum(project, "b")
        store.add_datums([first, second])
        store.set_alias(project.id, "prod", first.id)
        store.delete_alias(project.id, "prod")
        with pytest.raises(NotFoundError):
            store.get_alias(project.id, "prod")
        assert [a.name for a in store.list_aliases(project.id)] == []
        with pytest.raises(NotFoundError):
            store.delete_alias(project.id, "prod")
        assert [e.datum_id for e in store.alias_history(project.id, "prod")] == [first.id]
        store.set_alias(project.id, "prod", second.id)
        assert store.get_alias(project.id, "prod").datum_id == second.id
        history = store.alias_history(project.id, "prod")
        assert [(e.previous_datum_id, e.datum_id) for e in history] == [
            (None, first.id),
            (None, second.id),
        ]

    @pytest.mark.parametrize(
        "name",
        [
            "", "a" * 129, "a/b", "..", ".hidden", "a..b", "has space", "tab\t", "ümlaut",
            "x:y", "12345678-1234-4234-8234-123456789abc", "0123456789abcdef0123456789ABCDEF",
        ],
    )  # fmt: skip
    def test_alias_name_rules(self, store: MetadataStore, project: Project, name: str) -> None:
        datum = new_datum(project, "a")
        store.add_datums([datum])
        with pytest.raises(ParameterError) as caught:
            store.set_alias(project.id, name, datum.id)
        assert repr(name) in caught.value.message
        assert caught.value.hint and "letters, digits" in caught.value.hint
        assert store.list_aliases(project.id) == []

    def test_alias_names_that_are_fine(self, store: MetadataStore, project: Project) -> None:
        datum = new_datum(project, "a")
        store.add_datums([datum])
        for name in ("best-model", "v1.2_final", "a" * 128, "A", "12", "model.onnx"):
            assert store.set_alias(project.id, name, datum.id).name == name

    def test_alias_errors_name_the_problem(self, store: MetadataStore, project: Project) -> None:
        datum = new_datum(project, "a")
        foreign = new_datum(store.ensure_project("other"), "b")
        store.add_datums([datum, foreign])
        with pytest.raises(NotFoundError):
            store.set_alias(project.id, "x", "no-such-datum")
        with pytest.raises(NotFoundError):
            store.set_alias(project.id, "x", foreign.id)
        with pytest.raises(NotFoundError):
            store.set_alias(project.id, "x", datum.id[:8])  # a full id is needed
        with pytest.raises(NotFoundError):
            store.set_alias(project.id, "x", datum.id, execution_id="no-such-execution")
        store.set_alias(project.id, "best-model", datum.id)
        with pytest.raises(NotFoundError) as caught:
            store.get_alias(project.id, "best-modle")
        assert caught.value.message == "no alias 'best-modle'"
        assert caught.value.hint and "best-model" in caught.value.hint
        with pytest.raises(NotFoundError):
            store.alias_history(project.id, "never-set")
        assert store.list_aliases(project.id)[0].name == "best-model"

    def test_concurrent_alias_moves_keep_a_consistent_history(
        self, store: MetadataStore, project: Project
    ) -> None:
        targets = [new_datum(project, f"d{n}") for n in range(4)]
        store.add_datums(targets)
        start = threading.Barrier(4)

        def move(worker: int) -> None:
            start.wait()
            for n in range(5):
                store.set_alias(project.id, "hot", targets[(worker + n) % 4].id)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(move, range(4)))
        history = store.alias_history(project.id, "hot")
        assert history[0].previous_datum_id is None
        for before, after in zip(history, history[1:], strict=False):
            assert after.previous_datum_id == before.datum_id != after.datum_id
        assert store.get_alias(project.id, "hot").datum_id == history[-1].datum_id

    # -- resolve_datum ----------------------------------------------------------------
    def test_resolve_datum_order(self, store: MetadataStore, project: Project) -> None:
        weights, metrics, raw = self._datums(project, None)  # ids 0a1b2c3d4e5f, 0a1b2c99ffff,
        store.add_datums([weights, metrics, raw])  # 77aa00000000
        store.set_alias(project.id, "best", weights.id)
        store.set_alias(project.id, "0a1b2c3d", raw.id)  # shadows an id prefix
        store.set_alias(project.id, raw.id, metrics.id)  # an exact id beats an alias

        def resolved(ref: str) -> str:
            return store.resolve_datum(project.id, ref).id

        assert resolved(weights.id) == weights.id
        assert resolved(f"datum://{weights.id}") == weights.id
        assert resolved("best") == weights.id
        assert resolved("datum://best") == weights.id
        assert resolved(" datum://best ") == weights.id
        assert resolved("0a1b2c3d") == raw.id
        assert resolved(raw.id) == raw.id
        assert resolved("0a1b2c9") == metrics.id
        assert resolved("77aa") == raw.id
        assert store.resolve_datum(project.id, "best").tags == ("best", "prod")

    def test_resolve_datum_not_found(self, store: MetadataStore, project: Project) -> None:
        weights, metrics, raw = self._datums(project, None)
        store.add_datums([weights, metrics, raw])
        store.set_alias(project.id, "best-model", weights.id)
        with pytest.raises(NotFoundError) as caught:
            store.resolve_datum(project.id, "datum://0a1b")  # two ids start so
        assert weights.id in str(caught.value) and metrics.id in str(caught.value)
        with pytest.raises(NotFoundError) as caught:
            store.resolve_datum(project.id, "datum://best-modl")
        assert caught.value.hint and "datum://best-model" in caught.value.hint
        for missing in ("ffff0000", "0a", "77a", "", "datum://", "best"):
            with pytest.raises(NotFoundError) as caught:
                store.resolve_datum(project.id, missing)
            assert caught.value.hint
        with pytest.raises(NotFoundError):
            store.resolve_datum(store.ensure_project("other").id, "best-model")

    # -- dataset versions -------------------------------------------------------------
    def add_version(
        self, store: MetadataStore, project: Project, dataset: str, version: str, **kw: Any
    ) -> Any:
        values: dict[str, Any] = {"tree_digest": DIGEST, "file_count": 3, "size": 300}
        values.update(kw)
        return store.create_dataset_version(project.id, dataset, version, **values)

    def test_dataset_version_round_trip(self, store: MetadataStore, project: Project) -> None:
        execution = self.make(store, project)
        made = self.add_version(
            store, project, "images", "v3", tree_digest="cd" * 32, file_count=20_000,
            size=5 * 10**10, source="execution", execution_id=execution.id, from_version="v2",
            metadata={"folder": "/data/images", "n": 1},
        )  # fmt: skip
        assert made.uri == "dataset://images/v3"
        assert (made.dataset, made.version, made.tree_digest) == ("images", "v3", "cd" * 32)
        assert (made.file_count, made.size) == (20_000, 5 * 10**10)
        assert (made.source, made.execution_id, made.from_version) == (
            "execution", execution.id, "v2"
        )  # fmt: skip
        assert made.created_at.utcoffset() == timedelta(0)
        assert store.get_dataset_version(project.id, "images", "v3") == made
        assert store.get_dataset_version(project.id, "images", "latest") == made
        long_origin = "a" * 128 + "/" + "b" * 128
        derived = self.add_version(store, project, "images", "v4", from_version=long_origin)
        assert store.get_dataset_version(project.id, "images", "v4") == derived
        assert derived.from_version == long_origin
        with pytest.raises(ParameterError):
            self.add_version(store, project, "images", "v5", source="")
        with pytest.raises(ParameterError):
            self.add_version(store, project, "images", "v5", source="s" * 33)
        plain = self.add_version(store, project, "text", "first")
        assert (plain.source, plain.execution_id, plain.from_version, plain.metadata) == (
            "upload", None, None, {}
        )  # fmt: skip

    def test_latest_and_listing(self, store: MetadataStore, project: Project) -> None:
        assert store.list_datasets(project.id) == []
        made = [self.add_version(store, project, "images", v) for v in ("v1", "v2", "zz", "v10")]
        audio = self.add_version(store, project, "audio", "v1")
        stamps = [v.created_at for v in made]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert store.get_dataset_version(project.id, "images", "latest") == made[-1]
        assert store.list_dataset_versions(project.id, "images") == made
        assert store.list_datasets(project.id) == [("audio", 1, audio), ("images", 4, made[-1])]
        assert store.next_version_name(project.id, "images") == "v11"
        assert store.next_version_name(project.id, "audio") == "v2"
        assert store.next_version_name(project.id, "new") == "v1"
        other = store.ensure_project("other")
        assert store.list_datasets(other.id) == []
        assert store.next_version_name(other.id, "images") == "v1"
        self.add_version(store, other, "images", "v1")  # versions are per project
        assert len(store.list_dataset_versions(project.id, "images")) == 4

    def test_next_version_name_ignores_other_names(
        self, store: MetadataStore, project: Project
    ) -> None:
        for version in ("final", "v2a", "v007", "V9", "v3"):
            self.add_version(store, project, "d", version)
        assert store.next_version_name(project.id, "d") == "v8"

    def test_versions_are_immutable(self, store: MetadataStore, project: Project) -> None:
        first = self.add_version(store, project, "images", "v3")
        with pytest.raises(ConflictError) as caught:
            self.add_version(store, project, "images", "v3", tree_digest="ee" * 32)
        assert caught.value.message == "dataset version images/v3 already exists"
        assert caught.value.hint == "versions are immutable: pick a new version name, e.g. v4"
        assert store.get_dataset_version(project.id, "images", "v3") == first
        assert store.list_datasets(project.id) == [("images", 1, first)]

    @pytest.mark.parametrize(
        ("dataset", "version"),
        [
            ("", "v1"), ("images", ""), ("a/b", "v1"), ("images", "v1/x"), ("..", "v1"),
            (".images", "v1"), ("images", ".v1"), ("images", "latest"), ("a" * 129, "v1"),
            ("images", "b" * 129), ("im ages", "v1"), ("images", "v1?"),
        ],
    )  # fmt: skip
    def test_dataset_name_rules(
        self, store: MetadataStore, project: Project, dataset: str, version: str
    ) -> None:
        with pytest.raises(ParameterError) as caught:
            self.add_version(store, project, dataset, version)
        assert caught.value.hint
        assert store.list_datasets(project.id) == []

    def test_dataset_names_that_are_fine(self, store: MetadataStore, project: Project) -> None:
        for dataset, version in (("a" * 128, "b" * 128), ("img_2.0-x", "2024.01.01"),
                                 ("images", "Latest"), ("images", "v1")):  # fmt: skip
            self.add_version(store, project, dataset, version)

    def test_dataset_lookups_that_fail(self, store: MetadataStore, project: Project) -> None:
        self.add_version(store, project, "images", "v1")
        self.add_version(store, project, "images", "v2")
        with pytest.raises(NotFoundError) as caught:
            store.get_dataset_version(project.id, "imgs", "v1")
        assert caught.value.hint and "images" in caught.value.hint
        with pytest.raises(NotFoundError) as caught:
            store.get_dataset_version(project.id, "images", "v9")
        assert "images/v9" in caught.value.message
        assert caught.value.hint and "v1, v2" in caught.value.hint
        with pytest.raises(NotFoundError):
            store.list_dataset_versions(project.id, "imgs")
        with pytest.raises(NotFoundError):
            store.get_dataset_version(store.ensure_project("other").id, "images", "latest")
        with pytest.raises(NotFoundError):
            self.add_version(store, project, "images", "v3", execution_id="no-such-execution")
        assert store.next_version_name(project.id, "images") == "v3"

    def test_racing_creators_of_one_version_one_wins(
        self, store: MetadataStore, project: Project
    ) -> None:
        start = threading.Barrier(4)

        def create(_: int) -> str:
            start.wait()
            try:
                self.add_version(store, project, "images", "v1")
                return "created"
            except ConflictError:
                return "conflict"

        with ThreadPoolExecutor(4) as pool:
            outcomes = sorted(pool.map(create, range(4)))
        assert outcomes == ["conflict", "conflict", "conflict", "created"]
        assert store.list_datasets(project.id)[0][1] == 1

    def test_racing_processes_one_version_one_wins(
        self, store: MetadataStore, project: Project
    ) -> None:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(3, mp_context=ctx) as pool:
            futures = [
                pool.submit(_create_version_in_child, type(store), store.url, project.id, "v1")
                for _ in range(3)
            ]
            outcomes = sorted(f.result(timeout=120) for f in futures)
        assert outcomes == ["conflict", "conflict", "created"]

    def test_racing_creators_of_different_versions_all_win(
        self, store: MetadataStore, project: Project
    ) -> None:
        start = threading.Barrier(4)

        def create(n: int) -> Any:
            start.wait()
            return [self.add_version(store, project, "images", f"w{n}-{k}") for k in range(3)]

        with ThreadPoolExecutor(4) as pool:
            made = [v for batch in pool.map(create, range(4)) for v in batch]
        listed = store.list_dataset_versions(project.id, "images")
        assert sorted(v.id for v in listed) == sorted(v.id for v in made)
        stamps = [v.created_at for v in listed]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert store.get_dataset_version(project.id, "images", "latest") == listed[-1]

    # -- lineage ----------------------------------------------------------------------
    def test_consumers_of_datum(self, store: MetadataStore, project: Project) -> None:
        model, other_datum = new_datum(project, "model.onnx"), new_datum(project, "x")
        store.add_datums([model, other_datum])

        def uses(*datum_ids: str) -> list[InputFile]:
            return [
                InputFile("model", f"f{n}", f"datum://{d}", DIGEST, 1, d)
                for n, d in enumerate(datum_ids)
            ]

        first = self.make(store, project, inputs=uses(model.id))
        self.make(store, project, inputs=uses(other_datum.id))
        both = self.make(store, project, inputs=uses(other_datum.id, model.id, model.id))
        self.make(store, project)
        consumers = store.consumers_of_datum(project.id, model.id)
        assert [e.id for e in consumers] == [first.id, both.id]
        assert [f.datum_id for f in consumers[1].inputs] == [other_datum.id, model.id, model.id]
        assert store.consumers_of_datum(project.id, "no-such-datum") == []
        assert store.consumers_of_datum(store.ensure_project("other").id, model.id) == []

    def test_executions_with_input_uri_prefix(
        self, store: MetadataStore, project: Project
    ) -> None:
        long_folder = "s3://bucket/" + "x" * 600

        def consuming(*uris: str) -> Execution:
            files = [InputFile("data", f"f{n}", uri, DIGEST, 1) for n, uri in enumerate(uris)]
            return self.make(store, project, inputs=files)

        v3 = consuming("dataset://images/v3/train/a.png", "dataset://images/v3/b.png")
        exact = consuming("dataset://images/v3")
        v30 = consuming("dataset://images/v30/a.png")
        v3x = consuming("dataset://images/v3_x/a.png", "dataset://images/v3.x")
        under_score = consuming("s3://b/a_b/x", "s3://b/100%/y")
        look_alike = consuming("s3://b/axb/x", "s3://b/1000/y")
        deep = consuming(long_folder + "/file.bin")
        deep_other = consuming(long_folder + "y/file.bin", long_folder[:-1])
        consuming("https://example.com/images/v3/a.png")

        def found(prefix: str) -> list[int]:
            matches = store.executions_with_input_uri_prefix(project.id, prefix)
            return [e.counter for e in matches]

        assert found("dataset://images/v3") == [v3.counter, exact.counter]
        assert found("dataset://images/v3/") == [v3.counter, exact.counter]
        assert found("dataset://images/v3/train") == [v3.counter]
        assert found("dataset://images") == [
            v3.counter, exact.counter, v30.counter, v3x.counter
        ]  # fmt: skip
        assert found("dataset://images/v3_x") == [v3x.counter]
        assert found("s3://b/a_b") == [under_score.counter]
        assert found("s3://b/100%") == [under_score.counter]
        assert found(long_folder) == [deep.counter]
        assert found(long_folder + "/file.bin") == [deep.counter]
        assert found(long_folder[:-1]) == [deep_other.counter]
        assert found("dataset://nothing") == []
        assert found("s3://b/a") == []
        assert found("s3://b") == [under_score.counter, look_alike.counter]  # once each
        assert store.executions_with_input_uri_prefix(
            store.ensure_project("other").id, "dataset://images"
        ) == []  # fmt: skip

    def test_dataset_versions_of_execution(
        self, store: MetadataStore, project: Project
    ) -> None:
        maker, other = self.make(store, project), self.make(store, project)
        first = self.add_version(store, project, "b", "v1", source="execution",
                                 execution_id=maker.id)  # fmt: skip
        second = self.add_version(store, project, "a", "v1", source="execution",
                                  execution_id=maker.id)  # fmt: skip
        self.add_version(store, project, "a", "v2")
        assert store.dataset_versions_of_execution(project.id, maker.id) == [first, second]
        assert store.dataset_versions_of_execution(project.id, other.id) == []
        assert store.dataset_versions_of_execution(project.id, "no-such-execution") == []

    # -- garbage collection support ---------------------------------------------------
    def test_referenced_digests_cover_every_record(self, store: MetadataStore) -> None:
        def digest(n: int) -> str:
            return f"{n:064x}"

        projects = [store.ensure_project("one"), store.ensure_project("two")]
        for base, project in zip((0, 100), projects, strict=True):
            execution = self.make(
                store,
                project,
                inputs=[InputFile("x", "a", "s3://b/a", digest(base + 1), 1)],
                code=CodeSnapshot(digest(base + 2), 1, 1),
                environment={"python": "3.11", "packages_digest": digest(base + 3)},
            )
            self.finish(store, execution, log_digest=digest(base + 4))
            store.add_datums([new_datum(project, "out", digest=digest(base + 5),
                                        execution=execution)])  # fmt: skip
            self.add_version(store, project, "d", "v1", tree_digest=digest(base + 6))
            self.make(store, project)  # no code, log or packages: contributes nothing
        referenced = list(store.referenced_digests())
        assert set(referenced) == {digest(b + n) for b in (0, 100) for n in range(1, 7)}

    def test_referenced_digests_of_an_empty_store(self, store: MetadataStore) -> None:
        assert list(store.referenced_digests()) == []

    def test_oldest_active_start(self, store: MetadataStore, project: Project) -> None:
        assert store.oldest_active_start() is None
        done = self.make(store, project)
        self.finish(store, done)
        assert store.oldest_active_start() is None
        created = self.make(store, project)
        queued = self.make_queued(store, project, Resources())
        other_project = self.make(store, store.ensure_project("other"))
        assert store.oldest_active_start() == created.created_at
        store.transition(created.id, Status.STOPPED)
        assert store.oldest_active_start() == queued.created_at
        store.transition(queued.id, Status.STARTING)
        assert store.oldest_active_start() == queued.created_at
        store.transition(queued.id, Status.RUNNING)
        assert store.oldest_active_start() == queued.created_at
        store.transition(queued.id, Status.CRASHED)
        assert store.oldest_active_start() == other_project.created_at
        store.transition(other_project.id, Status.ERROR)
        assert store.oldest_active_start() is None

    def test_referenced_digests_stream_alongside_writers(
        self, store: MetadataStore, project: Project
    ) -> None:
        digests = {f"{n:064x}" for n in range(1, 6)}
        store.add_datums([new_datum(project, f"f{d[-1]}", digest=d) for d in digests])
        stream = store.referenced_digests()
        first = next(stream)
        self.make(store, project)  # a writer while the stream is open is not blocked
        assert {first, *stream} == digests
        abandoned = store.referenced_digests()
        next(abandoned)
        abandoned.close()  # type: ignore[attr-defined]
        self.make(store, project)

    # -- result cache -----------------------------------------------------------------
    def test_reuse_candidates_are_complete_newest_first(
        self, store: MetadataStore, project: Project
    ) -> None:
        fp = "f0" * 32
        assert store.reuse_candidates(project.id, fp) == []
        failed = self.make(store, project, fingerprint=fp)
        store.transition(failed.id, Status.ERROR)
        assert store.reuse_candidates(project.id, fp) == []
        first = self.make(store, project, fingerprint=fp)
        self.finish(store, first, code_reads={"train.py": DIGEST})
        second = self.make(store, project, fingerprint=fp)
        self.finish(store, second)
        running = self.make(store, project, fingerprint=fp)
        store.transition(running.id, Status.RUNNING)
        found = store.reuse_candidates(project.id, fp)
        assert [e.id for e in found] == [second.id, first.id]
        assert found[0].fingerprint == fp and found[0].code_reads is None
        assert found[1].code_reads == {"train.py": DIGEST}
        assert [e.id for e in store.reuse_candidates(project.id, fp, limit=1)] == [second.id]
        assert store.reuse_candidates(store.ensure_project("other").id, fp) == []
        assert store.reuse_candidates(project.id, "0f" * 32) == []

    # -- flows ------------------------------------------------------------------------
    def make_flow(
        self, store: MetadataStore, project: Project, kind: str = "pipeline", nodes: int = 2
    ) -> Flow:
        return store.create_flow(NewFlow(
            project_id=project.id, kind=kind, name="train-and-eval",
            definition={"nodes": ["a", "b"]}, parameters={"lr": 0.1},
            options={"reuse": True},
            nodes=tuple(NewFlowNode(f"n{i}") for i in range(nodes)),
        ))

    def test_create_and_get_flow(self, store: MetadataStore, project: Project) -> None:
        flow = self.make_flow(store, project)
        assert flow.counter == 1 and flow.kind == "pipeline"
        assert flow.status == FlowStatus.CREATED and not flow.stop_requested
        assert flow.definition == {"nodes": ["a", "b"]} and flow.parameters == {"lr": 0.1}
        assert flow.options == {"reuse": True} and flow.result == {}
        assert [n.name for n in flow.nodes] == ["n0", "n1"]
        assert all(n.status == NodeStatus.PENDING and n.attempts == 0 for n in flow.nodes)
        for ref in (1, "1", "#1", flow.id, flow.id[:8]):
            assert store.get_flow(project.id, "pipeline", ref).id == flow.id
        with pytest.raises(NotFoundError, match="no pipeline #2"):
            store.get_flow(project.id, "pipeline", 2)
        with pytest.raises(NotFoundError):
            store.get_flow(project.id, "task", 1)  # counters are per kind

    def test_flow_counters_are_per_kind(self, store: MetadataStore, project: Project) -> None:
        assert [self.make_flow(store, project).counter for _ in range(2)] == [1, 2]
        assert self.make_flow(store, project, kind="task").counter == 1
        assert [f.counter for f in store.list_flows(project.id, "pipeline")] == [2, 1]
        assert [f.counter for f in store.list_flows(project.id, "pipeline", limit=1)] == [2]
        assert store.list_flows(store.ensure_project("other").id, "pipeline") == []

    def test_list_flows_by_status_without_nodes(self, store: MetadataStore,
                                                project: Project) -> None:
        first, second, third = (self.make_flow(store, project) for _ in range(3))
        for flow in (first, third):
            assert store.update_flow(flow.id, status=FlowStatus.RUNNING, host="h", pid=7)
        running = store.list_flows(project.id, "pipeline", status=FlowStatus.RUNNING,
                                   with_nodes=False)
        assert [(f.counter, f.host, f.pid, f.nodes) for f in running] == [
            (3, "h", 7, ()), (1, "h", 7, ())]
        assert [f.counter for f in store.list_flows(
            project.id, "pipeline", status=FlowStatus.CREATED)] == [2]
        assert [len(f.nodes) for f in store.list_flows(project.id, "pipeline")] == [2, 2, 2]
        assert store.list_flows(project.id, "task", status=FlowStatus.RUNNING) == []

    def test_flow_counters_under_concurrent_threads(
        self, store: MetadataStore, project: Project
    ) -> None:
        with ThreadPoolExecutor(4) as pool:
            counters = list(pool.map(lambda _: self.make_flow(store, project).counter, range(12)))
        assert sorted(counters) == list(range(1, 13))

    def test_duplicate_node_names_are_refused(
        self, store: MetadataStore, project: Project
    ) -> None:
        with pytest.raises(ConflictError, match="'x'"):
            store.create_flow(NewFlow(project.id, "pipeline", "p", {},
                                      nodes=(NewFlowNode("x"), NewFlowNode("x"))))
        flow = self.make_flow(store, project)
        with pytest.raises(ConflictError, match="'n1'"):
            store.add_flow_nodes(flow.id, [NewFlowNode("n1")])

    def test_update_flow_compare_and_set(self, store: MetadataStore, project: Project) -> None:
        flow = self.make_flow(store, project)
        assert store.update_flow(flow.id, expect=[FlowStatus.CREATED], status=FlowStatus.RUNNING,
                                 started_at=T0, host="h", pid=42)
        assert not store.update_flow(flow.id, expect=[FlowStatus.CREATED],
                                     status=FlowStatus.ERROR)
        assert store.update_flow(flow.id, status=FlowStatus.COMPLETE, ended_at=T0,
                                 result={"best": "n1"}, status_detail="done")
        got = store.get_flow(project.id, "pipeline", flow.id)
        assert (got.status, got.host, got.pid, got.result) == (
            FlowStatus.COMPLETE, "h", 42, {"best": "n1"})
        assert got.started_at == T0 and got.ended_at == T0 and got.status_detail == "done"
        with pytest.raises(TypeError, match="counter"):
            store.update_flow(flow.id, counter=3)
        with pytest.raises(NotFoundError):
            store.update_flow(str(uuid.uuid4()), status=FlowStatus.ERROR)

    def test_request_flow_stop(self, store: MetadataStore, project: Project) -> None:
        flow = self.make_flow(store, project)
        assert store.flow_stop_requested(flow.id) is False
        store.request_flow_stop(flow.id)
        assert store.get_flow(project.id, "pipeline", flow.id).stop_requested
        assert store.flow_stop_requested(flow.id) is True
        with pytest.raises(NotFoundError):
            store.request_flow_stop(str(uuid.uuid4()))
        with pytest.raises(NotFoundError):
            store.flow_stop_requested(str(uuid.uuid4()))

    def test_flow_nodes_update_and_append(self, store: MetadataStore, project: Project) -> None:
        flow = self.make_flow(store, project, kind="task", nodes=0)
        added = store.add_flow_nodes(flow.id, [
            NewFlowNode("1", "trial", {"lr": 0.1}), NewFlowNode("2", "trial", {"lr": 0.2})])
        assert [(n.name, n.position, n.parameters) for n in added] == [
            ("1", 0, {"lr": 0.1}), ("2", 1, {"lr": 0.2})]
        more = store.add_flow_nodes(flow.id, [NewFlowNode("3", "trial", {"lr": 0.3})])
        assert more[0].position == 2
        execution = self.make(store, project)
        assert store.update_flow_node(flow.id, "2", expect=[NodeStatus.PENDING],
                                      status=NodeStatus.RUNNING, execution_id=execution.id,
                                      attempts=1, started_at=T0)
        assert not store.update_flow_node(flow.id, "2", expect=[NodeStatus.PENDING],
                                          status=NodeStatus.ERROR)
        assert store.update_flow_node(flow.id, "2", status=NodeStatus.PRUNED, value=0.5,
                                      detail="pruned at step 3", ended_at=T0)
        got = store.get_flow(project.id, "task", 1).node("2")
        assert (got.status, got.execution_id, got.attempts, got.value, got.detail) == (
            NodeStatus.PRUNED, execution.id, 1, 0.5, "pruned at step 3")
        assert got.status.is_final and not got.status.succeeded
        with pytest.raises(NotFoundError, match="'9'"):
            store.update_flow_node(flow.id, "9", status=NodeStatus.ERROR)
        with pytest.raises(TypeError):
            store.update_flow_node(flow.id, "1", position=4)
        assert [(f.id, name) for f, name in store.flows_of_execution(execution.id)] == [
            (flow.id, "2")]
        assert store.flows_of_execution(self.make(store, project).id) == []

    def test_get_executions_in_order_and_only_of_the_project(
        self, store: MetadataStore, project: Project
    ) -> None:
        made = [self.make(store, project) for _ in range(3)]
        other = self.make(store, store.ensure_project("other"))
        ids = [made[2].id, made[0].id, other.id, str(uuid.uuid4()), made[2].id]
        got = store.get_executions(project.id, ids)
        assert [e.id for e in got] == [made[2].id, made[0].id]
        assert store.get_executions(project.id, []) == []

    def test_get_flow_without_nodes(self, store: MetadataStore, project: Project) -> None:
        flow = self.make_flow(store, project)
        store.request_flow_stop(flow.id)
        light = store.get_flow(project.id, "pipeline", flow.id, with_nodes=False)
        assert light.nodes == () and light.stop_requested and light.counter == flow.counter
