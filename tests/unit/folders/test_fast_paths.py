"""The fast paths of versioning give the same versions as the plain ones.

Small files in the page cache are done on the walking thread and the others by the
workers; large files in link mode are hashed through a memory map under a read lease.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from cairn.store import ContentStore
from cairn.store import _fileops, folders
from cairn.store.cas import hash_bytes
from cairn.store.folders import checkout, version_folder

from .conftest import read_folder, store_files

MakeFiles = Callable[[dict], Path]

FILES = {f"d{i % 5}/f{i:03d}": os.urandom(i * 37 % 3000) for i in range(300)}


def _age(root: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def _expected(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hash_bytes(data) for path, data in files.items()}


def _digests(content: ContentStore, tree: str) -> dict[str, str]:
    return {e.path: e.digest for e in content.iter_tree(tree)}


@pytest.mark.parametrize("link", [False, True])
@pytest.mark.parametrize("failure", [errno.EAGAIN, errno.EOPNOTSUPP])
def test_files_not_in_the_page_cache_go_to_the_workers(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, link: bool, failure: int) -> None:
    real = folders._preadv
    refused: list[int] = []

    def preadv(fd: int, buffers: list, offset: int, flags: int = 0) -> int:
        if flags and len(refused) % 3 == 0:  # every third read would wait for the disk
            refused.append(fd)
            raise OSError(failure, os.strerror(failure))
        if flags:
            refused.append(-1)
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(folders, "_preadv", preadv)
    src = make_files(FILES)
    _age(src)
    info = version_folder(src, content, link=link)
    assert any(fd >= 0 for fd in refused)
    assert _digests(content, info.tree_digest) == _expected(FILES)
    checkout(info.tree_digest, tmp_path / "out", content)
    assert read_folder(tmp_path / "out") == {k: (v, False) for k, v in FILES.items()}
    assert not list((tmp_path / "store" / "tmp").rglob("*.*"))


def test_a_file_that_grew_after_the_walk_saw_it_is_stored_whole(
        content: ContentStore, make_files: MakeFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({"a": b"a" * 100, "b": b"b" * 100})
    real = os.lstat

    def lstat_then_grow(path: str, *args: object, **kwargs: object) -> os.stat_result:
        st = real(path, *args, **kwargs)  # type: ignore[arg-type]
        if str(path).endswith("/a"):
            with open(path, "ab") as fh:
                fh.write(b"+more")
        return st

    monkeypatch.setattr(folders.os, "lstat", lstat_then_grow)
    info = version_folder(src, content)
    monkeypatch.undo()
    assert _digests(content, info.tree_digest) == {"a": hash_bytes(b"a" * 100 + b"+more"),
                                                   "b": hash_bytes(b"b" * 100)}


def test_a_remote_store_never_sees_the_reused_read_buffer(
        make_files: MakeFiles, tmp_path: Path) -> None:
    from cairn.store.blobs import BlobStore, LocalBlobStore

    kept: list[bytes] = []

    class Remote(BlobStore):
        """Keeps what it is handed, like a store that uploads later."""

        url = "remote://test"

        def __init__(self, root: Path) -> None:
            self.local = LocalBlobStore(root)

        def put_bytes(self, digest: str, data: bytes) -> None:
            kept.append(data)
            self.local.put_bytes(digest, data)

        def has(self, digest: str) -> bool:
            return self.local.has(digest)

        def put_path(self, digest: str, path: Path, *, move: bool = False) -> None:
            self.local.put_path(digest, path, move=move)

        def open(self, digest: str) -> BinaryIO:
            return self.local.open(digest)

        def fetch(self, digest: str, dest: Path) -> None:
            self.local.fetch(digest, dest)

        def iter_digests(self) -> Iterator[str]:
            return self.local.iter_digests()

        def delete(self, digest: str) -> None:
            self.local.delete(digest)

    content = ContentStore(Remote(tmp_path / "remote"))
    files = {f"f{i}": os.urandom(100 + i) for i in range(50)}
    info = version_folder(make_files(files), content)
    assert _digests(content, info.tree_digest) == _expected(files)
    assert kept and all(isinstance(data, bytes) for data in kept)
    assert {hash_bytes(bytes(data)) for data in kept} == set(_expected(files).values())


# -- large files in link mode ----------------------------------------------------------------
def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY)


def test_a_leased_hash_equals_the_read_one(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fileops, "_MAP_WINDOW", 1 << 16)  # several windows
    data = os.urandom((1 << 18) + 12345)
    path = tmp_path / "big"
    path.write_bytes(data)
    fd = _open(path)
    try:
        digest = _fileops._hash_leased(fd, len(data))
        if digest is None:  # a filesystem granting no read leases: the caller reads instead
            digest, _ = _fileops._hash_fd(fd)
        assert digest == hash_bytes(data)
        assert _fileops._hash_fd(fd) == (hash_bytes(data), len(data))  # offset untouched
    finally:
        os.close(fd)
    with open(path, "ab") as fh:  # the lease was given back: writers are not held up
        fh.write(b"x")


def test_no_lease_while_a_writer_has_the_file_open(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(100_000))
    fd = _open(path)
    try:
        with open(path, "r+b"):
            assert _fileops._hash_leased(fd, 100_000) is None
    finally:
        os.close(fd)


def test_no_mapping_of_a_file_that_is_no_longer_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(100_000))
    fd = _open(path)
    try:
        assert _fileops._hash_leased(fd, 200_000) is None  # mapping it would be fatal
    finally:
        os.close(fd)


def test_a_waiting_writer_ends_the_leased_hash(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    monkeypatch.setattr(_fileops, "_MAP_WINDOW", 1 << 16)
    path = tmp_path / "big"
    path.write_bytes(os.urandom(1 << 18))
    real = fcntl.fcntl
    asked: list[int] = []

    def fake(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_GETLEASE:
            asked.append(fd)
            if len(asked) == 2:  # as if someone were waiting to write after a window
                return fcntl.F_UNLCK
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", fake)
    fd = _open(path)
    try:
        result = _fileops._hash_leased(fd, 1 << 18)
    finally:
        os.close(fd)
    # Ended by the writer after the first window (or, where no read lease is granted, never
    # mapped at all): either way not a hash of a file someone may be changing.
    assert result is None


def test_large_files_in_link_mode_held_open_by_a_writer_are_read_instead(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folders, "SMALL_FILE", 1000)
    files = {"big1": os.urandom(300_000), "big2": os.urandom(200_000), "small": b"s"}
    src = make_files(files)
    _age(src)
    with open(src / "big2", "rb+"):  # a writer: no lease, hashed by reading
        info = version_folder(src, content, link=True)
    assert _digests(content, info.tree_digest) == _expected(files)
    for name in ("big1", "big2"):
        blob = content.blobs.local_path(hash_bytes(files[name]))
        assert blob is not None and blob.stat().st_ino == (src / name).stat().st_ino
    assert len([p for p in store_files(tmp_path / "store") if "objects" in p.parts]) == 4
