"""A team's shared store: blobs in an S3 bucket, a local cache per machine, push and pull."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.func.test_data import DATA_YAML, MAKE


def cairn_on(machine: Path, project: Path, *args: str, store_url: str, db_url: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`cairn` as run on one machine: its own data folder (cache), the shared DB and store."""
    full = {**os.environ, "CAIRN_DATA_DIR": str(machine), "CAIRN_STORE_URL": store_url,
            "CAIRN_DATABASE_URL": db_url, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cairn", *args], cwd=project, env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def team(tmp_path: Path) -> tuple[Path, str]:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "cairn.yaml").write_text(DATA_YAML)
    (project / "make.py").write_text(MAKE)
    return project, f"sqlite:///{tmp_path / 'shared.db'}"


def test_two_machines_share_runs_datums_and_datasets_through_s3(
        team: tuple[Path, str], s3_bucket_url: str, tmp_path: Path) -> None:
    project, db = team
    one, two = tmp_path / "machine-one", tmp_path / "machine-two"
    run = cairn_on(one, project, "run", "make", "--tag=z", store_url=s3_bucket_url, db_url=db)
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "pics"
    (folder / "a").mkdir(parents=True)
    for i in range(30):
        (folder / "a" / f"{i}.txt").write_text(f"picture {i}\n")
    add = cairn_on(one, project, "dataset", "add", "pics", str(folder), store_url=s3_bucket_url,
                   db_url=db)
    assert add.returncode == 0, add.stderr

    # Machine two starts with an empty cache and sees everything through the bucket.
    get = cairn_on(two, project, "data", "get", "datum://latest-model", str(tmp_path / "m"),
                   store_url=s3_bucket_url, db_url=db)
    assert get.returncode == 0, get.stderr
    assert (tmp_path / "m").read_bytes() == b"z" * 10
    co = cairn_on(two, project, "dataset", "checkout", "pics/v1", str(tmp_path / "co"),
                  store_url=s3_bucket_url, db_url=db)
    assert co.returncode == 0, co.stderr
    assert (tmp_path / "co" / "a" / "7.txt").read_text() == "picture 7\n"
    read = cairn_on(two, project, "run", "read", "--input", "data=dataset://pics/v1/a/*",
                    store_url=s3_bucket_url, db_url=db)
    assert read.returncode == 0, read.stderr
    assert read.stdout.count(".txt") == 30
    assert list((two / "cache" / "blobs").rglob("*")), "machine two cached what it fetched"


def test_push_and_pull_restore_lost_blobs(team: tuple[Path, str], s3_bucket_url: str,
                                           tmp_path: Path) -> None:
    project, db = team
    local = str(tmp_path / "local-store")
    machine = tmp_path / "m"
    assert cairn_on(machine, project, "run", "make", store_url=local, db_url=db).returncode == 0
    push = cairn_on(machine, project, "data", "push", "dataset://shapes/v1",
                    "datum://latest-model", "--to", s3_bucket_url, store_url=local, db_url=db)
    assert push.returncode == 0, push.stderr
    assert "5 of 5 blobs copied" in push.stderr  # the tree, its 3 files and the model
    again = cairn_on(machine, project, "data", "push", "dataset://shapes/v1", "--to",
                     s3_bucket_url, store_url=local, db_url=db)
    assert "0 of 4 blobs copied" in again.stderr
    # Lose the local copies, then pull them back from the bucket.
    for blob in Path(local, "objects").rglob("*"):
        if blob.is_file():
            blob.chmod(0o644)
            blob.unlink()
    pull = cairn_on(machine, project, "data", "pull", "dataset://shapes/v1", "--from",
                    s3_bucket_url, store_url=local, db_url=db)
    assert pull.returncode == 0, pull.stderr
    co = cairn_on(machine, project, "dataset", "checkout", "shapes/v1", str(tmp_path / "co"),
                  store_url=local, db_url=db)
    assert co.returncode == 0, co.stderr
    assert (tmp_path / "co" / "train" / "2.txt").read_text() == "a2\n"


def test_wrong_credentials_and_missing_bucket_are_clear(
        team: tuple[Path, str], s3_env, tmp_path: Path) -> None:  # noqa: ANN001
    project, db = team
    missing = cairn_on(tmp_path / "m1", project, "run", "make",
                       store_url="s3://no-such-bucket-here/x", db_url=db)
    assert missing.returncode == 5
    assert "no-such-bucket-here" in missing.stderr and "does not exist" in missing.stderr
    bucket = f"s3://{s3_env.create_bucket()}/x"
    with s3_env.require_auth():
        denied = cairn_on(tmp_path / "m2", project, "run", "make", store_url=bucket, db_url=db,
                          env={"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert denied.returncode == 5
    assert "access denied" in denied.stderr and "AWS_ACCESS_KEY_ID" in denied.stderr
