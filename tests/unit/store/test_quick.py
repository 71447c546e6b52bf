"""Quick SQLite reads without SQLAlchemy: they agree with the store, or answer None."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
