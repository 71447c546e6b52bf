"""Every blob backend passes the same contract: local folder, S3 (moto), S3 behind a cache."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.store.blobs import BlobStore, LocalBlobStore
from cairn.store.cache import CachedBlobStore
from cairn.store.s3 import S3BlobStore
from cairn.testing.blob_contract import BlobStoreContract, BreakWrites
from cairn.testing.s3server import s3_calls


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "store")

    @pytest.fixture
    def break_writes(self, monkeypatch: pytest.MonkeyPatch) -> BreakWrites:
        @contextlib.contextmanager
        def broken(store: BlobStore) -> Iterator[None]:
            def fail(fd: int) -> None:
                raise OSError(errno.EIO, "disk gone")

            with monkeypatch.context() as patch:
                patch.setattr(os, "fsync", fail)  # after the bytes, before the rename
                yield
            assert list((store.root / "tmp").iterdir()) == []  # type: ignore[attr-defined]

        return broken


@contextlib.contextmanager
def _broken_s3(store: S3BlobStore) -> Iterator[None]:
    # The object is never created: a single put, or the multipart upload's completion.
    with (
        s3_calls(store.client, "PutObject", fail_from=1),
        s3_calls(store.client, "CompleteMultipartUpload", fail_from=1),
    ):
        yield


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_bucket_url: str) -> BlobStore:
        return S3BlobStore(s3_bucket_url)

    @pytest.fixture
    def break_writes(self) -> BreakWrites:
        return _broken_s3  # type: ignore[return-value]


class TestCachedS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_bucket_url: str, tmp_path: Path) -> BlobStore:
        return CachedBlobStore(S3BlobStore(s3_bucket_url), tmp_path / "cache", 1 << 30)

    @pytest.fixture
    def break_writes(self) -> BreakWrites:
        def broken(store: BlobStore) -> contextlib.AbstractContextManager[None]:
            assert isinstance(store, CachedBlobStore)
            return _broken_s3(store.remote)  # type: ignore[arg-type]

        return broken
