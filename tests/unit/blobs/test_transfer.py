"""push/pull copy only the blobs the destination lacks, in parallel, each verified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.errors import CorruptBlobError, NotFoundError
from cairn.store.blobs import LocalBlobStore
from cairn.store.cas import hash_bytes
from cairn.store.s3 import S3BlobStore
from cairn.store.transfer import pull, push
from cairn.testing.s3server import S3Server, s3_calls


def _blobs(n: int, size: int = 20_000) -> dict[str, bytes]:
    out = {}
    for _ in range(n):
        data = os.urandom(size)
        out[hash_bytes(data)] = data
    return out


def test_push_copies_only_missing_blobs_and_reports_progress(
    s3_bucket_url: str, tmp_path: Path
) -> None:
    local = LocalBlobStore(tmp_path / "local")
    remote = S3BlobStore(s3_bucket_url)
    blobs = _blobs(5)
    for digest, data in blobs.items():
        local.put_bytes(digest, data)
    already = list(blobs)[:2]
    for digest in already:
        remote.put_bytes(digest, blobs[digest])
    calls: list[tuple[int, int, int, int]] = []
    with s3_calls(remote.client, "PutObject") as puts:
        result = push(blobs, local, remote, workers=4, progress=lambda *a: calls.append(a))
    assert puts.count == 3
    assert set(result.digests) == set(blobs) - set(already)
    assert (result.copied, result.present) == (3, 2)
    assert result.bytes == 3 * 20_000
    assert calls[0] == (0, 3, 0, 60_000) and calls[-1] == (3, 3, 60_000, 60_000)
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert set(remote.iter_digests()) == set(blobs)
    assert push(blobs, local, remote).copied == 0


def test_pull_copies_only_missing_blobs(s3_bucket_url: str, tmp_path: Path) -> None:
    remote = S3BlobStore(s3_bucket_url)
    local = LocalBlobStore(tmp_path / "local")
    blobs = _blobs(4)
    for digest, data in blobs.items():
        remote.put_bytes(digest, data)
    first = next(iter(blobs))
    local.put_bytes(first, blobs[first])
    with s3_calls(remote.client, "GetObject") as gets:
        result = pull(blobs, remote, local, workers=3)
    assert gets.count == 3 and result.present == 1
    for digest, data in blobs.items():
        assert local.open(digest).read() == data
    assert list((tmp_path / "local" / "tmp").iterdir()) == []


def test_pull_refuses_a_corrupted_remote_blob(
    s3_bucket_url: str, s3_env: S3Server, tmp_path: Path
) -> None:
    remote = S3BlobStore(s3_bucket_url)
    local = LocalBlobStore(tmp_path / "local")
    digest = hash_bytes(b"what it should be")
    s3_env.client().put_object(Bucket=remote.bucket, Key=remote.key(digest), Body=b"tampered")
    with pytest.raises(CorruptBlobError, match=digest):
        pull([digest], remote, local)
    assert not local.has(digest)
    assert list((tmp_path / "local" / "tmp").iterdir()) == []


def test_push_refuses_a_corrupted_local_blob(s3_bucket_url: str, tmp_path: Path) -> None:
    local = LocalBlobStore(tmp_path / "local")
    remote = S3BlobStore(s3_bucket_url)
    digest = hash_bytes(b"original")
    local.put_bytes(digest, b"original")
    path = local.local_path(digest)
    assert path is not None
    path.chmod(0o644)
    path.write_bytes(b"bit rot!")
    with pytest.raises(CorruptBlobError, match=digest):
        push([digest], local, remote)
    assert not remote.has(digest)


def test_a_blob_missing_at_the_source_stops_before_copying(tmp_path: Path) -> None:
    src, dst = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    present = hash_bytes(b"here")
    src.put_bytes(present, b"here")
    with pytest.raises(NotFoundError):
        push([present, hash_bytes(b"nowhere")], src, dst)
    assert not dst.has(present)


def test_local_to_local_copy_verifies_and_links_nothing(tmp_path: Path) -> None:
    src, dst = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    blobs = _blobs(3)
    for digest, data in blobs.items():
        src.put_bytes(digest, data)
    assert pull(blobs, src, dst).copied == 3
    for digest in blobs:
        a, b = src.local_path(digest), dst.local_path(digest)
        assert a and b and a.stat().st_ino != b.stat().st_ino
