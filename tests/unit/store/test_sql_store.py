"""The SQL metadata store: the shared contract on SQLite (and PostgreSQL when configured),
plus what only the SQL backend has: schema versions, SQLite settings, speed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest

from cairn.entities import CodeSnapshot, InputFile, MetricPoint, Project, Status
from cairn.errors import ConfigError, SchemaError, StoreNotWritableError
from cairn.store.sql import convert, orm, schema
from cairn.store.sql.engine import create_store_engine, normalize_url
from cairn.store.sql.orm import metadata
from cairn.store.sql.store import SqlMetadataStore
from cairn.testing.populate import populate
from cairn.testing.store_contract import MetadataStoreContract, new_execution


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class TestSqliteStore(MetadataStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqlMetadataStore]:
        store = SqlMetadataStore(sqlite_url(tmp_path / ".cairn" / "cairn.db"))
        yield store
        store.close()


def _reset_postgres(url: str) -> None:
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    finally:
        engine.dispose()


class TestPostgresStore(MetadataStoreContract):
    """Runs against CAIRN_TEST_POSTGRES_URL (which it wipes) or a throwaway local server."""

    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[SqlMetadataStore]:
        _reset_postgres(postgres_url)
        store = SqlMetadataStore(postgres_url)
        yield store
        store.close()

    def test_migrated_schema_matches_models(self, store: SqlMetadataStore) -> None:
        assert _schema_diffs(store) == []


# -- schema -----------------------------------------------------------------------------
def _schema_diffs(store: SqlMetadataStore) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def _stamp(path: Path, revision: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_new_database_is_created_with_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cairn.db"
    store = SqlMetadataStore(sqlite_url(path))
    try:
        assert path.is_file()
        assert schema.current_revision(store.engine) == schema.HEAD_REVISION
        assert _schema_diffs(store) == []
    finally:
        store.close()


def test_known_revisions_match_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(schema.alembic_config("sqlite://"))
    history = [script.revision for script in scripts.walk_revisions()]
    assert tuple(reversed(history)) == schema.KNOWN_REVISIONS
    assert scripts.get_current_head() == schema.HEAD_REVISION


def test_sqlite_settings(tmp_path: Path) -> None:
    store = SqlMetadataStore(sqlite_url(tmp_path / "cairn.db"))
    try:
        with store.engine.connect() as conn:

            def pragma(name: str) -> object:
                return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert int(pragma("busy_timeout")) >= 30_000  # type: ignore[call-overload]
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 1  # NORMAL
    finally:
        store.close()


def test_database_from_a_newer_cairn_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cairn.db"
    SqlMetadataStore(sqlite_url(path)).close()
    _stamp(path, "9999_from_the_future")
    with pytest.raises(SchemaError) as caught:
        SqlMetadataStore(sqlite_url(path))
    assert "newer version of cairn" in caught.value.message
    assert caught.value.hint and "pip install -U cairn" in caught.value.hint


def test_database_at_an_older_revision_names_the_upgrade(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cairn.db")
    schema.upgrade(url, "0001")
    with pytest.raises(SchemaError) as caught:
        SqlMetadataStore(url)
    assert caught.value.message == (
        f"database schema is at 0001, this cairn needs {schema.HEAD_REVISION}"
    )
    assert caught.value.hint and "`cairn db upgrade`" in caught.value.hint


def test_upgrade_creates_then_leaves_a_current_database_alone(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cairn.db")
    schema.upgrade(url)
    schema.upgrade(url)
    store = SqlMetadataStore(url)
    try:
        assert schema.current_revision(store.engine) == schema.HEAD_REVISION
    finally:
        store.close()


def test_upgrade_refuses_a_database_from_a_newer_cairn(tmp_path: Path) -> None:
    path = tmp_path / "cairn.db"
    SqlMetadataStore(sqlite_url(path)).close()
    _stamp(path, "9999_from_the_future")
    with pytest.raises(SchemaError, match="newer version of cairn"):
        schema.upgrade(sqlite_url(path))


def test_database_with_foreign_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cairn.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE executions (id TEXT)")
    with pytest.raises(SchemaError, match="no cairn schema version"):
        SqlMetadataStore(sqlite_url(path))


def _sqlite_structure(path: Path) -> dict[str, object]:
    """Every table of a SQLite database as SQLite itself reads it back: columns (type,
    null, default, key), foreign keys, indexes with their columns, and WITHOUT ROWID."""
    with sqlite3.connect(path) as conn:
        tables = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        structure: dict[str, object] = {}
        for name, sql in tables:
            indexes = sorted(
                (index[1], index[2], index[3], index[4],
                 [col[2] for col in conn.execute(f"PRAGMA index_xinfo('{index[1]}')")])
                for index in conn.execute(f"PRAGMA index_list('{name}')")
            )
            structure[name] = {
                "columns": conn.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
                "foreign keys": conn.execute(f"PRAGMA foreign_key_list('{name}')").fetchall(),
                "indexes": indexes,
                "without rowid": "WITHOUT ROWID" in sql.upper(),
            }
    return structure


def test_a_new_sqlite_database_equals_a_migrated_one(tmp_path: Path) -> None:
    """New SQLite databases are created from the models, not by the migrations: both
    routes must give the same tables, columns, keys and indexes, and the same version."""
    schema.upgrade(sqlite_url(tmp_path / "created.db"))
    schema.upgrade(sqlite_url(tmp_path / "migrated.db"), replay=True)
    created = _sqlite_structure(tmp_path / "created.db")
    migrated = _sqlite_structure(tmp_path / "migrated.db")
    assert set(created) == set(migrated)
    assert {"alembic_version", "metric_points"} <= set(created)
    for table in created:
        assert created[table] == migrated[table], table
    for name in ("created.db", "migrated.db"):
        engine = create_store_engine(sqlite_url(tmp_path / name))
        try:
            assert schema.current_revision(engine) == schema.HEAD_REVISION
        finally:
            engine.dispose()


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_opening_a_sqlite_store_does_not_import_alembic(tmp_path: Path, existing: bool) -> None:
    url = sqlite_url(tmp_path / "cairn.db")
    if existing:
        SqlMetadataStore(url).close()
    code = (
        "import sys\n"
        "from cairn.store.sql.store import SqlMetadataStore\n"
        f"SqlMetadataStore({url!r}).ensure_project('p')\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def _open_and_count(url: str) -> int:
    store = SqlMetadataStore(url)
    try:
        project = store.ensure_project("race")
        store.create_execution(new_execution(project))
        return store.count_executions(project.id)
    finally:
        store.close()


def test_processes_opening_a_new_database_at_once(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cairn.db")
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        counts = list(pool.map(_open_and_count, [url] * 3, timeout=120))
    assert max(counts) == 3


def _create_one(store: SqlMetadataStore, project_id: str) -> None:
    store.create_execution(new_execution(Project(id=project_id, name="")))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connections(tmp_path: Path) -> None:
    store = SqlMetadataStore(sqlite_url(tmp_path / "cairn.db"))
    try:
        project = store.ensure_project("p")
        _create_one(store, project.id)  # the parent now holds a pooled connection
        child = get_context("fork").Process(target=_create_one, args=(store, project.id))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        _create_one(store, project.id)
        assert [e.counter for e in store.list_executions(project.id)] == [3, 2, 1]
    finally:
        store.close()


# -- upgrading a database from 0001 ------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, on each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "cairn.db")
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


def _seed_at_0001(url: str) -> dict[str, str]:
    """Write a project, an execution with inputs, tags and metrics, and datums, with the
    0001 schema's columns only (as a cairn of that schema would have)."""
    project_id, execution_id = "p" * 36, "e" * 36
    datum_id = "d0123456-0000-4000-8000-000000000000"
    engine = create_store_engine(url)
    now = datetime.now(UTC)
    long_uri = "s3://bucket/" + "x" * 700 + "/f.bin"
    inputs = [
        InputFile("images", "a.png", "dataset://images/v3/a.png", "a1" * 32, 10),
        InputFile("model", "m.onnx", f"datum://{datum_id}", "b2" * 32, 20, datum_id),
        InputFile("big", "f.bin", long_uri, "c3" * 32, 30),
    ]
    try:
        with engine.begin() as conn:
            conn.execute(orm.projects.insert().values(id=project_id, name="old", created_at=now))
            conn.execute(orm.counters.insert().values(project_id=project_id, value=1))
            conn.execute(
                orm.executions.insert().values(
                    id=execution_id, project_id=project_id, counter=1, step="train",
                    status="running", parameters={"lr": 0.1}, command=["python", "t.py"],
                    code=convert.code_to_json(CodeSnapshot("c0" * 32, 2, 20)),
                    environment={"packages_digest": "e0" * 32}, step_config={},
                    resources={"cpus": 1.0}, created_at=now, gpu_ids=[],
                    stop_requested=False, log_digest=None,
                )
            )  # fmt: skip
            rows = convert.input_rows(execution_id, inputs)
            for row in rows:
                del row["uri_head"]  # not a column at 0001
            conn.execute(orm.execution_inputs.insert(), rows)
            conn.execute(orm.execution_tags.insert().values(execution_id=execution_id, tag="t"))
            conn.execute(
                orm.datums.insert().values(
                    id=datum_id, project_id=project_id, name="model.onnx", digest="d4" * 32,
                    size=20, execution_id=execution_id, created_at=now, metadata={"k": 1},
                )
            )  # fmt: skip
            conn.execute(orm.datum_tags.insert().values(datum_id=datum_id, tag="best"))
            conn.execute(
                orm.metric_latest.insert().values(
                    execution_id=execution_id, key="acc", value=0.9, step=1, time=1.0
                )
            )
    finally:
        engine.dispose()
    return {"project": project_id, "execution": execution_id, "datum": datum_id,
            "long_uri": long_uri}  # fmt: skip


def test_a_0001_database_upgrades_and_keeps_its_data(empty_database_url: str) -> None:
    url = empty_database_url
    schema.upgrade(url, "0001")
    ids = _seed_at_0001(url)
    with pytest.raises(SchemaError, match="cairn db upgrade"):
        SqlMetadataStore(url)
    schema.upgrade(url)  # what `cairn db upgrade` runs
    store = SqlMetadataStore(url)
    try:
        assert schema.current_revision(store.engine) == schema.HEAD_REVISION
        assert _schema_diffs(store) == []
        project_id = ids["project"]
        execution = store.get_execution(project_id, 1)
        assert execution.id == ids["execution"] and execution.tags == ("t",)
        assert [f.uri for f in execution.inputs] == [
            "dataset://images/v3/a.png", f"datum://{ids['datum']}", ids["long_uri"]
        ]  # fmt: skip
        assert execution.metrics == {"acc": 0.9}
        datum = store.get_datum(project_id, ids["datum"])
        assert (datum.name, datum.tags, datum.metadata) == ("model.onnx", ("best",), {"k": 1})
        # The new indexes and columns cover the old rows.
        found = store.executions_with_input_uri_prefix(project_id, "dataset://images/v3")
        assert [e.id for e in found] == [execution.id]
        found = store.executions_with_input_uri_prefix(project_id, ids["long_uri"])
        assert [e.id for e in found] == [execution.id]
        assert [e.id for e in store.consumers_of_datum(project_id, datum.id)] == [execution.id]
        assert set(store.referenced_digests()) >= {"a1" * 32, "c0" * 32, "e0" * 32, "d4" * 32}
        assert store.oldest_active_start() == execution.created_at
        # The new tables work.
        project = Project(id=project_id, name="old")
        store.set_alias(project_id, "best-model", datum.id)
        assert store.resolve_datum(project_id, "best-model") == datum
        made = store.create_dataset_version(
            project_id, "images", "v3", tree_digest="f5" * 32, file_count=1, size=10
        )
        assert store.get_dataset_version(project_id, "images", "latest") == made
        assert store.create_execution(new_execution(project)).counter == 2
    finally:
        store.close()


# -- URLs and permissions ---------------------------------------------------------------
def test_postgresql_urls_use_psycopg() -> None:
    assert normalize_url("postgresql://me@db/cairn").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://me@db/cairn").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigError):
        normalize_url("mysql://me@db/cairn")


def test_in_memory_sqlite_store() -> None:
    store = SqlMetadataStore("sqlite://")
    try:
        project = store.ensure_project("p")
        assert store.create_execution(new_execution(project)).counter == 1
    finally:
        store.close()


def test_store_under_a_file_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StoreNotWritableError) as caught:
        SqlMetadataStore(sqlite_url(blocker / "sub" / "cairn.db"))
    assert caught.value.message.startswith(f"cannot write the cairn store at {blocker}")
    assert caught.value.hint and "CAIRN_DATA_DIR" in caught.value.hint


def test_read_only_database_is_not_writable(tmp_path: Path) -> None:
    path = tmp_path / "cairn.db"
    SqlMetadataStore(sqlite_url(path)).close()
    with pytest.raises(StoreNotWritableError) as caught:
        SqlMetadataStore(f"sqlite:///file:{path}?mode=ro&uri=true").ensure_project("p")
    assert caught.value.message.startswith(f"cannot write the cairn store at {path}: ")


def test_store_in_a_read_only_folder_is_not_writable(tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        try:
            (folder / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip("permissions do not stop this user from writing (running as root?)")
        with pytest.raises(StoreNotWritableError, match="cannot write the cairn store at"):
            SqlMetadataStore(sqlite_url(folder / "cairn.db"))
    finally:
        folder.chmod(0o700)


# -- speed ------------------------------------------------------------------------------
def test_metric_ingestion_rate(tmp_path: Path) -> None:
    store = SqlMetadataStore(sqlite_url(tmp_path / "cairn.db"))
    try:
        project = store.ensure_project("p")
        execution = store.create_execution(new_execution(project))
        batch = 5_000
        best = 0.0
        for attempt in range(4):
            points = [
                MetricPoint("loss" if i % 2 else "acc", i / batch, attempt * batch + i, 1.0 * i)
                for i in range(batch)
            ]
            started = time.perf_counter()
            store.add_metrics(execution.id, points)
            best = max(best, batch / (time.perf_counter() - started))
        assert len(store.get_metrics(execution.id)) == 4 * batch
        assert best >= 100_000, f"{best:,.0f} points/s"
    finally:
        store.close()


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqlMetadataStore, str]]:
    store = SqlMetadataStore(sqlite_url(tmp_path_factory.mktemp("big") / "cairn.db"))
    project = store.ensure_project("big")
    populate(store, project.id, 100_000)
    yield store, project.id
    store.close()


def _best_ms(run: object, repeat: int = 5) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sort", "filters"),
    [
        ("metric:accuracy", {}),
        ("metric:loss", {"descending": False}),
        ("metric:accuracy", {"tag": "sweep"}),
        ("metric:accuracy", {"step": "train", "statuses": [Status.COMPLETE]}),
        ("counter", {}),
        ("created", {"descending": False}),
        ("duration", {}),
    ],
)
def test_listing_100k_executions_is_fast(
    big_store: tuple[SqlMetadataStore, str], sort: str, filters: dict[str, object]
) -> None:
    store, project_id = big_store
    page = store.list_executions(project_id, sort=sort, limit=50, **filters)  # type: ignore[arg-type]
    assert len(page) == 50
    if sort.startswith("metric:"):
        values = [e.metrics[sort[7:]] for e in page]
        descending = filters.get("descending", True)
        assert values == sorted(values, reverse=bool(descending))
    elapsed = _best_ms(
        lambda: store.list_executions(project_id, sort=sort, limit=50, **filters)  # type: ignore[arg-type]
    )
    assert elapsed < 50, f"{sort} {filters}: {elapsed:.1f} ms"


@pytest.mark.slow
def test_populated_executions_read_back(big_store: tuple[SqlMetadataStore, str]) -> None:
    store, project_id = big_store
    assert store.count_executions(project_id) == 100_000
    first = store.get_execution(project_id, 1)
    assert first.status is Status.COMPLETE and first.tags == ("sweep",)
    assert first.created_at.tzinfo is not None and first.duration is not None
    assert set(first.metrics) == {"accuracy", "loss"}


@pytest.fixture(scope="module")
def lineage_store(
    big_store: tuple[SqlMetadataStore, str],
) -> tuple[SqlMetadataStore, str, list[str]]:
    """The 100,000 executions of ``big_store``, each with two inputs: a file of one of 1,000
    dataset versions and a datum (one of 50,000); plus 100,000 datums in 1,000 folders."""
    store, project_id = big_store
    with store.engine.connect() as conn:
        ids = list(
            conn.execute(
                orm.executions.select()
                .with_only_columns(orm.executions.c.id)
                .where(orm.executions.c.project_id == project_id)
                .order_by(orm.executions.c.counter)
            ).scalars()
        )
    datum_ids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(50_000)]
    inputs = []
    for n, execution_id in enumerate(ids):
        uri = f"dataset://images/v{n % 1000}/train/{n}.png"
        datum = datum_ids[n % len(datum_ids)]
        inputs.append((execution_id, 0, "images", f"{n}.png", uri, "ab" * 32, 1, None, uri))
        inputs.append((execution_id, 1, "model", "m.onnx", f"datum://{datum}", "cd" * 32, 1,
                       datum, f"datum://{datum}"))  # fmt: skip
    names = [f"run{n % 1000}/file{n}.bin" for n in range(100_000)]
    when = "2025-01-01 00:00:00.000000"  # the SQLite text form of a UTC time
    datums = [
        (f"{n:08x}-1111-4000-8000-000000000000", project_id, names[n], "ef" * 32, n, None,
         when, "{}")
        for n in range(100_000)
    ]  # fmt: skip
    with store._write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO execution_inputs (execution_id, position, input_name, name, uri, "
            "digest, size, datum_id, uri_head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            inputs,
        )
        conn.exec_driver_sql(
            "INSERT INTO datums (id, project_id, name, digest, size, execution_id, created_at, "
            "metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            datums,
        )
    return store, project_id, datum_ids


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (lambda s, p, d: s.consumers_of_datum(p, d[123]), 2),
        (lambda s, p, d: s.consumers_of_datum(p, "no-such-datum"), 0),
        (lambda s, p, d: s.executions_with_input_uri_prefix(p, "dataset://images/v7"), 100),
        (lambda s, p, d: s.executions_with_input_uri_prefix(p, "dataset://images/v7/train/7.png"),
         1),
        (lambda s, p, d: s.list_datums(p, name_glob="run7/*", limit=50), 50),
        (lambda s, p, d: s.list_datums(p, name_glob="run7/file[0-9]*7.bin", limit=50), 50),
        (lambda s, p, d: s.get_datums(p, [f"{n:08x}-1111-4000-8000-000000000000"
                                          for n in range(0, 100_000, 500)]), 200),
    ],
    ids=["consumers", "consumers-none", "dataset-prefix", "one-file", "glob", "glob-class",
         "get-datums"],
)  # fmt: skip
def test_lineage_and_datum_queries_at_100k_are_fast(
    lineage_store: tuple[SqlMetadataStore, str, list[str]], query: Any, expected: int
) -> None:
    store, project_id, datum_ids = lineage_store
    assert len(query(store, project_id, datum_ids)) == expected
    elapsed = _best_ms(lambda: query(store, project_id, datum_ids))
    assert elapsed < 50, f"{elapsed:.1f} ms"
