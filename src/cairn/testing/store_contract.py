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
    InputFile,
    MetricPoint,
    Project,
    Resources,
    Status,
)
from cairn.errors import CairnError, NotFoundError
from cairn.store.base import Allocation, MetadataStore, NewExecution

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


class MetadataStoreContract:
    """Behaviour every metadata store backend must show. Needs a ``store`` fixture."""

    # -- helpers ----------------------------------------------------------------------
    @pytest.fixture
    def project(self, store: MetadataStore) -> Project:
        return store.ensure_project("demo")

    def make(self, store: MetadataStore, project: Project, **overrides: Any) -> Execution:
        return store.create_execution(new_execution(project, **overrides))

    def make_queued(
        self, store: MetadataStore, project: Project, resources: Resources
    ) -> Execution:
        execution = self.make(store, project, resources=resources)
        assert store.transition(execution.id, Status.QUEUED, queued_at=T0)
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
        store.request_stop(execution.id)
        assert store.get_execution(project.id, execution.id).stop_requested is True
        with pytest.raises(NotFoundError):
            store.request_stop("no-such-id")

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

    def test_metrics_of_a_new_execution_are_empty(
        self, store: MetadataStore, project: Project
    ) -> None:
        assert store.get_metrics(self.make(store, project).id) == []
