"""Quick SQLite reads without SQLAlchemy: they agree with the store, or answer None."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from cairn.errors import ParameterError
from cairn.store import peek_dataset_version
from cairn.store.sql import quick
from cairn.store.sql.store import SqlMetadataStore


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, SqlMetadataStore]]:
    url = f"sqlite:///{tmp_path / '.cairn' / 'cairn.db'}"
    store = SqlMetadataStore(url)
    yield url, store
    store.close()


def test_it_reads_what_the_store_reads(db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    other = store.ensure_project("other")
    store.create_dataset_version(other.id, "images", "v1", tree_digest="00" * 32,
                                 file_count=1, size=1)
    for n in (1, 2, 3):
        store.create_dataset_version(
            project.id, "images", f"v{n}", tree_digest=f"{n:02d}" * 32, file_count=20_000 + n,
            size=5 * 10**10 + n, from_version=f"v{n - 1}" if n > 1 else None,
            metadata={"folder": "/data/images", "n": n})
    store.create_dataset_version(project.id, "labels", "first", tree_digest="ab" * 32,
                                 file_count=0, size=0)
    for name, version in [("images", "v1"), ("images", "v3"), ("images", "latest"),
                          ("labels", "first"), ("labels", "latest")]:
        expected = store.get_dataset_version(project.id, name, version)
        assert quick.dataset_version(url, "proj", name, version) == expected
        assert peek_dataset_version(url, "proj", name, version) == expected
    assert quick.dataset_version(url, "proj", "images", "latest").version == "v3"
    assert quick.dataset_version(url, "other", "images", "latest").tree_digest == "00" * 32


def test_what_does_not_resolve_is_left_to_the_store(db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    store.create_dataset_version(project.id, "images", "v1", tree_digest="01" * 32,
                                 file_count=1, size=1)
    assert quick.dataset_version(url, "proj", "images", "v2") is None
    assert quick.dataset_version(url, "proj", "nope", "latest") is None
    assert quick.dataset_version(url, "nobody", "images", "v1") is None


def test_only_a_plain_sqlite_file_at_the_current_revision(
        tmp_path: Path, db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    store.create_dataset_version(project.id, "images", "v1", tree_digest="01" * 32,
                                 file_count=1, size=1)
    assert quick.dataset_version(url, "proj", "images", "v1") is not None
    for other in ("postgresql://u@localhost/db", "sqlite://", "sqlite:///:memory:",
                  f"sqlite:///{tmp_path}/x.db?mode=ro"):
        assert peek_dataset_version(other, "proj", "images", "v1") is None
    missing = tmp_path / "missing" / "cairn.db"
    assert quick.dataset_version(f"sqlite:///{missing}", "proj", "images", "v1") is None
    assert not missing.parent.exists()  # nothing created
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert quick.dataset_version(f"sqlite:///{garbage}", "proj", "images", "v1") is None
    store.close()
    path = quick.sqlite_file(url)
    assert path is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert quick.dataset_version(url, "proj", "images", "v1") is None


def test_it_does_not_import_sqlalchemy(db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    store.create_dataset_version(project.id, "images", "v1", tree_digest="01" * 32,
                                 file_count=1, size=1)
    code = ("import sys; from cairn.store import peek_dataset_version as p; "
            f"v = p({url!r}, 'proj', 'images', 'latest'); "
            "print(v.version, 'sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["v1", "False"]


# -- the one write: a version of an uploaded folder ---------------------------------------
def _add(url: str, dataset: str = "images", version: str | None = None, tree: str = "01",
         **meta: object) -> tuple[object, bool] | None:
    return quick.add_dataset_version(url, "proj", dataset, version, tree_digest=tree * 32,
                                     file_count=3, size=30, metadata=dict(meta))


def test_a_version_written_here_is_the_one_the_store_writes(
        db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    assert quick.project_id(url, "proj") == project.id
    added = _add(url, tree="01", folder="/data/a", linked=True)
    assert added is not None
    made, new = added
    assert new and made.uri == "dataset://images/v1" and made.from_version is None
    assert store.get_dataset_version(project.id, "images", "v1") == made
    by_store = store.create_dataset_version(
        project.id, "images", "v2", tree_digest="02" * 32, file_count=3, size=30,
        source="upload", from_version="v1", metadata={"folder": "/data/a", "linked": True})
    added = _add(url, tree="03", folder="/data/a", linked=True)
    assert added is not None and added[0].version == "v3" and added[0].from_version == "v2"
    assert store.get_dataset_version(project.id, "images", "latest") == added[0]
    store.close()
    # Byte for byte the same kind of row as the store's (times, JSON).
    with sqlite3.connect(quick.sqlite_file(url)) as conn:
        rows = conn.execute("SELECT version, created_at, metadata, typeof(size), "
                            "typeof(execution_id) FROM dataset_versions ORDER BY created_at"
                            ).fetchall()
    (_, t1, m1, *k1), (_, t2, m2, *k2), (_, t3, m3, *k3) = rows
    assert len(t1) == len(t2) == len(t3) == len("2026-01-01 00:00:00.000000")
    assert m1 == m2 == m3 and k1 == k2 == k3
    assert by_store.created_at < added[0].created_at


def test_an_unchanged_tree_makes_no_version(db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    first, _ = _add(url, tree="01")
    again = _add(url, tree="01")
    assert again == (first, False)
    named = _add(url, version="named", tree="01")  # asked for by name: made anyway
    assert named is not None and named[1] and named[0].version == "named"
    assert [v.version for v in store.list_dataset_versions(project.id, "images")] == [
        "v1", "named"]
    assert _add(url, tree="02")[0].version == "v2"  # the next vN, whatever the names


def test_what_the_store_must_answer_is_left_to_it(tmp_path: Path,
                                                   db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    assert _add(url) is None  # no project yet: the store makes it
    project = store.ensure_project("proj")
    assert _add(url, version="v1") is not None
    assert _add(url, version="v1", tree="02") is None  # exists: the store says so
    assert quick.add_dataset_version("postgresql://u@h/db", "proj", "images", None,
                                     tree_digest="0" * 64, file_count=0, size=0,
                                     metadata={}) is None
    assert quick.project_id(f"sqlite:///{tmp_path}/none.db", "proj") is None
    with pytest.raises(ParameterError):
        _add(url, dataset="../up")
    with pytest.raises(ParameterError):
        _add(url, version="latest")
    assert [v.version for v in store.list_dataset_versions(project.id, "images")] == ["v1"]


def test_latest_never_steps_back(db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    _add(url, tree="01")
    with sqlite3.connect(quick.sqlite_file(url)) as conn:  # a clock that was ahead
        conn.execute("UPDATE dataset_versions SET created_at = '2999-01-01 00:00:00.000000'")
    made, _ = _add(url, tree="02")
    assert made.created_at.isoformat() == "2999-01-01T00:00:00.000001+00:00"
    assert store.get_dataset_version(project.id, "images", "latest").version == "v2"


def _add_one(url: str, tree: str) -> str:
    added = _add(url, tree=tree)
    assert added is not None
    return added[0].version


def test_writers_at_once_each_get_their_own_version(db: tuple[str, SqlMetadataStore]) -> None:
    url, store = db
    project = store.ensure_project("proj")
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        versions = list(pool.map(_add_one, [url] * 8, [f"{i:02d}" for i in range(8)]))
    assert sorted(versions) == sorted(f"v{i}" for i in range(1, 9))
    assert len(store.list_dataset_versions(project.id, "images")) == 8


def test_the_columns_written_are_all_of_the_table() -> None:
    """A column added to the models must be written here too (or this path retired)."""
    from cairn.store.sql.orm import dataset_versions, datasets

    assert set(quick._VERSION_COLUMNS) == set(dataset_versions.c.keys())
    assert set(datasets.c.keys()) == {"project_id", "name", "created_at"}
