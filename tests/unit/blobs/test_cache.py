"""CachedBlobStore: a bounded LRU copy of a remote store, fetching only what it lacks."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from cairn.store.blobs import LocalBlobStore
from cairn.store.cache import CachedBlobStore
from cairn.store.cas import hash_bytes
from cairn.store.s3 import S3BlobStore
from cairn.testing.s3server import s3_calls


def _blob(i: int, size: int = 1000) -> tuple[str, bytes]:
    data = bytes([i]) * size
    return hash_bytes(data), data


def _cached(tmp_path: Path, store: CachedBlobStore) -> set[str]:
    return set(store.cache.iter_digests())


@pytest.fixture
def remote(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "remote")
    for i in range(6):
        store.put_bytes(*_blob(i))
    return store


def test_eviction_keeps_the_bound_and_the_recently_used(
    remote: LocalBlobStore, tmp_path: Path
) -> None:
    store = CachedBlobStore(remote, tmp_path / "cache", max_bytes=3500, grace_s=0)
    a, b, c, d = (_blob(i)[0] for i in range(4))
    for digest in (a, b, c, a):  # a is used again: b is now the least recently used
        assert store.local_path(digest) is not None
    assert _cached(tmp_path, store) == {a, b, c}
    store.local_path(d)
    assert _cached(tmp_path, store) == {a, c, d}
    store.local_path(b)  # back, in place of c: used before a was used again
    assert _cached(tmp_path, store) == {a, d, b}
    objects = tmp_path / "cache" / "objects"
    total = sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())
    assert total <= 3500


def test_the_blob_in_use_is_never_evicted(remote: LocalBlobStore, tmp_path: Path) -> None:
    store = CachedBlobStore(remote, tmp_path / "cache", max_bytes=500, grace_s=0)
    a, b = _blob(0)[0], _blob(1)[0]
    path = store.local_path(a)
    assert path is not None and path.read_bytes() == _blob(0)[1]  # alone over the bound
    assert store.local_path(b) is not None
    assert _cached(tmp_path, store) == {b}


def test_blobs_used_within_the_grace_period_stay(remote: LocalBlobStore, tmp_path: Path) -> None:
    store = CachedBlobStore(remote, tmp_path / "cache", max_bytes=1500, grace_s=60)
    digests = [_blob(i)[0] for i in range(3)]
    for digest in digests:
        store.local_path(digest)
    assert _cached(tmp_path, store) == set(digests)  # another process may be linking them


def test_only_missing_blobs_are_fetched(s3_bucket_url: str, tmp_path: Path) -> None:
    remote = S3BlobStore(s3_bucket_url)
    blobs = dict(_blob(i) for i in range(3))
    for digest, data in blobs.items():
        remote.put_bytes(digest, data)
    store = CachedBlobStore(remote, tmp_path / "cache")
    first = next(iter(blobs))
    with s3_calls(remote.client, "GetObject") as gets:
        store.local_path(first)
        store.local_path(first)
        with store.open(first) as fh:
            assert fh.read() == blobs[first]
    assert gets.count == 1
    with s3_calls(remote.client, "GetObject") as gets:
        result = store.prefetch(blobs)
    assert gets.count == 2 and set(result.digests) == set(blobs) - {first}
    assert result.present == 1


def test_writes_reach_the_cache_and_the_remote(s3_bucket_url: str, tmp_path: Path) -> None:
    remote = S3BlobStore(s3_bucket_url)
    store = CachedBlobStore(remote, tmp_path / "cache")
    digest, data = _blob(7)
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    store.put_path(digest, source, move=True)
    assert store.cache.has(digest) and remote.has(digest)
    assert not source.exists()


def test_a_batch_uploads_in_parallel_at_its_end(s3_bucket_url: str, tmp_path: Path) -> None:
    remote = S3BlobStore(s3_bucket_url)
    store = CachedBlobStore(remote, tmp_path / "cache", max_bytes=1, grace_s=0)
    blobs = dict(_blob(i) for i in range(10, 16))
    with s3_calls(remote.client, "PutObject") as puts, store.batch():
        for digest, data in blobs.items():
            store.put_bytes(digest, data)
        assert remote.has_many(blobs) == set()
        # Not yet uploaded, so kept although far over the bound.
        assert _cached(tmp_path, store) == set(blobs)
    assert puts.count == len(blobs)
    assert remote.has_many(blobs) == set(blobs)
    assert _cached(tmp_path, store) == set()  # uploaded, then evicted: the bound is 1 byte


def test_the_cached_store_survives_pickling(remote: LocalBlobStore, tmp_path: Path) -> None:
    store = CachedBlobStore(remote, tmp_path / "cache", max_bytes=10_000)
    copy = pickle.loads(pickle.dumps(store))
    digest = _blob(0)[0]
    assert copy.local_path(digest) is not None and copy.max_bytes == 10_000
