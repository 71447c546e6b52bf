"""Versioning by hardlink (``link=True``): originals become read-only store blobs."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.errors import CorruptBlobError, InputError
from cairn.store import ContentStore
from cairn.store import folders
from cairn.store.cas import hash_bytes
from cairn.store.folders import checkout, version_folder
from cairn.store.hashcache import HashCache

from .conftest import read_folder, store_files

MakeFiles = Callable[[dict], Path]

FILES = {
    "a.txt": b"alpha",
    "d/b.bin": os.urandom(3000),
    "d/e/c.txt": b"gamma" * 100,
    "same-as-a.txt": b"alpha",
    "empty": b"",
}


def _age(root: Path, seconds: float = 3600) -> None:
    """Set every file's mtime in the past, out of the racy window (as for real datasets)."""
    past = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def _blob(content: ContentStore, digest: str) -> Path:
    path = content.blobs.local_path(digest)
    assert path is not None
    return path


def test_link_mode_shares_the_originals_with_the_store_and_makes_them_read_only(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path) -> None:
    src = make_files(FILES)
    _age(src)
    info = version_folder(src, content, link=True)
    copied = version_folder(make_files(FILES), ContentStore(
        type(content.blobs)(tmp_path / "other-store")))
    assert info.tree_digest == copied.tree_digest  # the same version either way
    inodes: dict[str, set[int]] = {}
    for entry in content.iter_tree(info.tree_digest):
        original = src / entry.path
        assert not original.stat().st_mode & 0o222, f"{entry.path} is still writable"
        inodes.setdefault(entry.digest, set()).add(original.stat().st_ino)
    for digest, originals in inodes.items():  # one of identical files is the blob
        assert _blob(content, digest).stat().st_ino in originals
    checkout(info.tree_digest, tmp_path / "out", content)
    assert read_folder(tmp_path / "out") == {k: (v, False) for k, v in FILES.items()}
    assert not list((tmp_path / "store" / "tmp").rglob("*.*"))  # nothing left staged


def test_link_mode_copies_what_it_cannot_share(content: ContentStore,
                                               make_files: MakeFiles) -> None:
    src = make_files({"old.txt": b"old", "tool.sh": (b"#!/bin/sh\n", True)})
    _age(src)
    (src / "fresh.txt").write_bytes(b"just written")  # inside the racy window
    info = version_folder(src, content, link=True)
    digests = {e.path: e.digest for e in content.iter_tree(info.tree_digest)}
    assert (src / "old.txt").stat().st_nlink == 2
    for name in ("fresh.txt", "tool.sh"):
        original = src / name
        assert original.stat().st_nlink == 1, f"{name} was linked"
        assert original.stat().st_mode & 0o200, f"{name} was made read-only"
        assert _blob(content, digests[name]).stat().st_ino != original.stat().st_ino
    assert stat.S_IMODE((src / "tool.sh").stat().st_mode) == 0o755


def test_an_original_edited_after_a_link_mode_add_is_never_handed_out(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path) -> None:
    src = make_files({"keep.txt": b"kept", "data.txt": b"version one"})
    _age(src)
    info = version_folder(src, content, link=True)
    digest = hash_bytes(b"version one")
    original = src / "data.txt"
    os.chmod(original, 0o644)
    original.write_bytes(b"version two")  # in place: the store's blob changes with it
    with pytest.raises(CorruptBlobError, match="modified in place"):
        checkout(info.tree_digest, tmp_path / "ro", content)
    assert not (tmp_path / "ro").exists()
    with pytest.raises(CorruptBlobError):
        checkout(info.tree_digest, tmp_path / "rw", content, writable=True)
    with pytest.raises(CorruptBlobError):
        content.read_bytes(digest)
    assert not content.verify(digest)
    # The folder itself is simply a new version.
    _age(src)
    again = version_folder(src, content, link=True)
    assert {e.path: e.digest for e in content.iter_tree(again.tree_digest)}["data.txt"] \
        == hash_bytes(b"version two")


def test_a_file_changed_between_hash_and_link_stores_no_version(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({f"f{i}.txt": f"file {i}".encode() for i in range(10)})
    _age(src)
    real = folders._Linker._link

    def link_after_a_write(self: folders._Linker, path: str, digest: str,
                           key: tuple[int, int, int, int]) -> object:
        if path.endswith("f5.txt"):
            os.chmod(path, 0o644)
            with open(path, "ab") as fh:
                fh.write(b" and more")
        return real(self, path, digest, key)

    monkeypatch.setattr(folders._Linker, "_link", link_after_a_write)
    with pytest.raises(InputError, match="changed while it was being versioned"):
        version_folder(src, content, link=True)
    for path in store_files(tmp_path / "store"):
        assert not path.read_bytes().startswith(b"cairn-tree"), "a tree was stored"
        assert path.read_bytes() != b"file 5 and more", "the changed file got a name"


def test_link_mode_re_add_answers_from_the_hash_cache(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files(FILES)
    _age(src)
    with HashCache(tmp_path / "hashes") as cache:
        first = version_folder(src, content, hash_cache=cache, link=True)

        def no_reads(*_: object) -> None:
            raise AssertionError("an unchanged file was read again")

        monkeypatch.setattr(folders, "_read_small", no_reads)
        monkeypatch.setattr(folders._Linker, "store", no_reads)
        again = version_folder(src, content, hash_cache=cache, link=True)
    assert again.tree_digest == first.tree_digest


def test_large_files_are_linked_too(content: ContentStore, make_files: MakeFiles,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folders, "SMALL_FILE", 1000)
    big = os.urandom(50_000)
    src = make_files({"big.bin": big, "small": b"s"})
    _age(src)
    info = version_folder(src, content, link=True)
    digests = {e.path: e.digest for e in content.iter_tree(info.tree_digest)}
    assert digests["big.bin"] == hash_bytes(big)
    assert _blob(content, digests["big.bin"]).stat().st_ino == (src / "big.bin").stat().st_ino


def test_checkouts_hash_only_blobs_modified_after_their_tree(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cairn.store import checkout as checkout_module

    src = make_files({f"f{i}.txt": f"file {i}".encode() for i in range(20)})
    _age(src)
    info = version_folder(src, content, link=True)
    hashed: list[str] = []
    real = checkout_module._hash_path

    def counting(path: str) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(checkout_module, "_hash_path", counting)
    checkout(info.tree_digest, tmp_path / "a", content)
    assert hashed == []  # untouched originals are linked without reading them
    os.chmod(src / "f3.txt", 0o644)
    (src / "f3.txt").write_bytes(b"file 3")  # rewritten with the same bytes: still valid
    checkout(info.tree_digest, tmp_path / "b", content)
    assert [Path(p).name for p in hashed] == ["f3.txt"]
    assert (tmp_path / "b" / "f3.txt").read_bytes() == b"file 3"
