"""The contract every :class:`~cairn.store.blobs.BlobStore` backend must pass.

Subclass :class:`BlobStoreContract` in a test module and provide a ``store`` fixture that
yields an empty store; optionally a ``break_writes`` fixture: a function that takes the
store and returns a context manager inside which the store's writes fail part-way (after
some bytes have moved), so the suite can check that nothing half-written shows::

    class TestLocalBlobStore(BlobStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return LocalBlobStore(tmp_path / "store")

Without ``break_writes`` that test is skipped. The large-file test writes a ~70 MB file
(past the usual multipart threshold of 64 MB) and is marked ``slow``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from cairn.entities import Digest
from cairn.errors import NotFoundError
from cairn.store.blobs import BlobStore
from cairn.store.cas import ContentStore, hash_bytes, hash_file

BreakWrites = Callable[[BlobStore], AbstractContextManager[None]]
LARGE_FILE_BYTES = 70 * (1 << 20)


def _write(path: Path, data: bytes) -> tuple[Path, Digest]:
    path.write_bytes(data)
    return path, hash_bytes(data)


def _read(store: BlobStore, digest: Digest) -> bytes:
    with store.open(digest) as fh:
        return fh.read()


class BlobStoreContract:
    """Behaviour shared by every blob backend. Subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> BlobStore:
        raise NotImplementedError("subclasses provide a `store` fixture")

    @pytest.fixture
    def break_writes(self) -> BreakWrites:
        pytest.skip("this backend's suite gives no way to break a write part-way")

    # -- round trips -------------------------------------------------------------------
    def test_put_bytes_then_read_it_back_every_way(self, store: BlobStore, tmp_path: Path) -> None:
        data = b"hello blobs\n" * 100
        digest = hash_bytes(data)
        store.put_bytes(digest, data)
        assert store.has(digest)
        assert store.size(digest) == len(data)
        assert _read(store, digest) == data
        store.fetch(digest, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == data
        local = store.local_path(digest)
        if local is not None:
            assert local.read_bytes() == data
            assert not local.stat().st_mode & 0o222

    def test_put_path_copies_and_keeps_the_source(self, store: BlobStore, tmp_path: Path) -> None:
        path, digest = _write(tmp_path / "a.bin", os.urandom(300_000))
        store.put_path(digest, path)
        assert path.exists()
        assert _read(store, digest) == path.read_bytes()

    def test_put_path_move_stores_the_bytes(self, store: BlobStore, tmp_path: Path) -> None:
        data = os.urandom(50_000)
        path, digest = _write(tmp_path / "m.bin", data)
        store.put_path(digest, path, move=True)
        assert _read(store, digest) == data

    def test_an_absent_blob_is_absent_everywhere(self, store: BlobStore, tmp_path: Path) -> None:
        digest = hash_bytes(b"never stored")
        assert not store.has(digest)
        assert store.has_many([digest]) == set()
        assert store.local_path(digest) is None
        with pytest.raises(NotFoundError):
            store.open(digest)
        with pytest.raises(NotFoundError):
            store.size(digest)
        with pytest.raises(NotFoundError):
            store.fetch(digest, tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_puts_are_idempotent(self, store: BlobStore, tmp_path: Path) -> None:
        data = b"same bytes"
        digest = hash_bytes(data)
        path, _ = _write(tmp_path / "s.bin", data)
        store.put_bytes(digest, data)
        store.put_bytes(digest, data)
        store.put_path(digest, path)
        store.put_path(digest, path, move=True)
        assert list(store.iter_digests()) == [digest]
        assert _read(store, digest) == data

    def test_iter_digests_and_has_many_list_what_is_stored(self, store: BlobStore) -> None:
        blobs = {hash_bytes(b"%d" % i): b"%d" % i for i in range(12)}
        for digest, data in blobs.items():
            store.put_bytes(digest, data)
        absent = hash_bytes(b"absent")
        assert set(store.iter_digests()) == set(blobs)
        assert store.has_many([*blobs, absent]) == set(blobs)

    def test_iter_blobs_gives_sizes_and_times_and_delete_removes(self, store: BlobStore) -> None:
        import time

        before = time.time() - 5
        keep, drop = hash_bytes(b"keep me"), hash_bytes(b"drop")
        store.put_bytes(keep, b"keep me")
        store.put_bytes(drop, b"drop")
        listed = {d: (size, when) for d, size, when in store.iter_blobs()}
        assert listed[keep][0] == 7 and listed[drop][0] == 4
        assert all(before <= when <= time.time() + 5 for _, when in listed.values())
        store.delete(drop)
        store.delete(drop)  # a missing blob is not an error
        assert not store.has(drop) and store.has(keep)
        assert set(store.iter_digests()) == {keep}

    def test_an_empty_blob(self, store: BlobStore, tmp_path: Path) -> None:
        digest = hash_bytes(b"")
        store.put_bytes(digest, b"")
        assert store.has(digest) and store.size(digest) == 0
        store.fetch(digest, tmp_path / "empty")
        assert (tmp_path / "empty").read_bytes() == b""

    def test_content_store_round_trip_and_materialize(
        self, store: BlobStore, tmp_path: Path
    ) -> None:
        content = ContentStore(store)
        path, _ = _write(tmp_path / "f.txt", b"materialize me")
        digest, size = content.put_file(path)
        assert content.read_bytes(digest) == b"materialize me" and size == 14
        how = content.materialize(digest, tmp_path / "ws" / "f.txt")
        assert how in ("link", "copy")
        assert (tmp_path / "ws" / "f.txt").read_bytes() == b"materialize me"
        assert content.verify(digest)

    def test_open_a_blob_larger_than_memory_reads(self, store: BlobStore, tmp_path: Path) -> None:
        data = os.urandom(9 << 20)
        path, digest = _write(tmp_path / "nine.bin", data)
        store.put_path(digest, path)
        with store.open(digest) as fh:
            assert fh.read() == data

    def test_batch_puts_are_all_stored_when_the_block_ends(self, store: BlobStore) -> None:
        blobs = {hash_bytes(b"batch %d" % i): b"batch %d" % i for i in range(10)}
        with store.batch():
            for digest, data in blobs.items():
                store.put_bytes(digest, data)
        assert store.has_many(blobs) == set(blobs)

    # -- atomicity and concurrency -----------------------------------------------------
    def test_a_failed_write_leaves_nothing_visible(self, store: BlobStore, tmp_path: Path) -> None:
        digest = hash_bytes(b"gone before it was read")
        with pytest.raises(OSError):
            store.put_path(digest, tmp_path / "missing.bin")
        assert not store.has(digest)
        assert list(store.iter_digests()) == []

    @pytest.mark.parametrize("size", [200_000, 12 << 20], ids=["200KB", "12MB"])
    def test_a_write_broken_part_way_never_shows_half_a_blob(
        self, store: BlobStore, break_writes: BreakWrites, tmp_path: Path, size: int
    ) -> None:
        data = os.urandom(size)
        path, digest = _write(tmp_path / "b.bin", data)
        with break_writes(store), pytest.raises(Exception):  # noqa: B017
            store.put_path(digest, path)
        # Absent, or (a cache keeping its local copy) complete and intact.
        if store.has(digest):
            assert _read(store, digest) == data
        assert set(store.iter_digests()) <= {digest}
        store.put_path(digest, path)
        assert _read(store, digest) == data

    def test_concurrent_puts_of_one_digest(self, store: BlobStore, tmp_path: Path) -> None:
        data = os.urandom(1 << 20)
        digest = hash_bytes(data)
        paths = [_write(tmp_path / f"c{i}.bin", data)[0] for i in range(8)]
        errors: list[BaseException] = []
        start = threading.Barrier(len(paths))

        def put(i: int) -> None:
            try:
                start.wait()
                if i % 2:
                    store.put_bytes(digest, data)
                else:
                    store.put_path(digest, paths[i], move=i % 4 == 0)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(len(paths))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert list(store.iter_digests()) == [digest]
        assert _read(store, digest) == data

    @pytest.mark.slow
    def test_a_large_file_round_trip(self, store: BlobStore, tmp_path: Path) -> None:
        path = tmp_path / "large.bin"
        block = os.urandom(1 << 20)
        with open(path, "wb") as fh:
            for i in range(LARGE_FILE_BYTES >> 20):
                fh.write(block[i:] + block[:i])
        digest, size = hash_file(path)
        store.put_path(digest, path)
        assert store.has(digest) and store.size(digest) == size
        store.fetch(digest, tmp_path / "back.bin")
        assert hash_file(tmp_path / "back.bin") == (digest, size)
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
