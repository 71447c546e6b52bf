"""Versioning folders and checking them out: bytes, modes, links, globs, failures."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.entities import FileEntry
from cairn.errors import CorruptBlobError, InputError, NotFoundError, StoreNotWritableError
from cairn.store import ContentStore
from cairn.store import checkout as checkout_module
from cairn.store import folders
from cairn.store.cas import TREE_MAGIC, hash_bytes
from cairn.store.folders import checkout, version_folder
from cairn.store.hashcache import HashCache

from .conftest import read_folder, store_files

MakeFiles = Callable[[dict], Path]

FILES = {
    "a.txt": b"alpha",
    "a-b": b"dash sorts before slash",
    "a/b/c/deep.bin": os.urandom(3000),
    "a0": b"zero",
    "empty": b"",
    "also-empty": b"",
    "run.sh": (b"#!/bin/sh\necho hi\n", True),
    "données/été.txt": "unicode names".encode(),
    "日本/語.bin": b"\x00\x01",
    "odd/line\nbreak": b"newline in a name",
    "odd/back\\slash": b"backslash in a name",
    "dup1": b"same bytes",
    "dup2": b"same bytes",
}


def test_version_then_checkout_round_trips(content: ContentStore, make_files: MakeFiles,
                                           tmp_path: Path) -> None:
    src = make_files(FILES)
    info = version_folder(src, content)
    assert info.file_count == len(FILES)
    assert info.size == sum(len(v[0] if isinstance(v, tuple) else v) for v in FILES.values())
    assert info.skipped == ()
    assert [e.path for e in content.iter_tree(info.tree_digest)] == sorted(FILES)
    out = checkout(info.tree_digest, tmp_path / "out", content)
    assert out.files == len(FILES) and out.bytes == info.size
    assert read_folder(tmp_path / "out") == read_folder(src)
    assert version_folder(src, content).tree_digest == info.tree_digest  # deterministic
    assert not list((tmp_path / "store" / "tmp").iterdir())  # no temp files left


def test_blobs_are_copies_not_links_of_the_users_files(content: ContentStore,
                                                       make_files: MakeFiles) -> None:
    src = make_files({"weights.bin": b"v1" * 100})
    info = version_folder(src, content)
    (src / "weights.bin").write_bytes(b"v2" * 100)  # edited in place later
    entry = content.get_tree(info.tree_digest)[0]
    assert content.read_bytes(entry.digest) == b"v1" * 100
    blob = content.blobs.local_path(entry.digest)
    assert blob is not None and stat.S_IMODE(blob.stat().st_mode) == 0o444


def test_large_files_take_the_copy_path(content: ContentStore, make_files: MakeFiles,
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(folders, "SMALL_FILE", 1000)
    monkeypatch.setattr(checkout_module, "_READ_WHOLE", 1000)
    big = os.urandom(50_000)
    src = make_files({"big.bin": big, "big-again.bin": big, "small": b"s"})
    info = version_folder(src, content)
    digests = {e.path: e.digest for e in content.iter_tree(info.tree_digest)}
    assert digests["big.bin"] == digests["big-again.bin"] == hash_bytes(big)
    checkout(info.tree_digest, tmp_path / "w", content, writable=True)
    assert (tmp_path / "w" / "big.bin").read_bytes() == big


def test_symlinks_and_special_files_are_skipped_and_listed(content: ContentStore,
                                                           make_files: MakeFiles,
                                                           tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not part of the folder")
    src = make_files({"real.txt": b"r"})
    (src / "link-to-file").symlink_to(src / "real.txt")
    (src / "link-to-dir").symlink_to(outside)
    os.mkfifo(src / "fifo")
    info = version_folder(src, content)
    assert [e.path for e in content.get_tree(info.tree_digest)] == ["real.txt"]
    assert dict(info.skipped) == {"fifo": "not a regular file", "link-to-dir": "symlink",
                                  "link-to-file": "symlink"}


def test_the_store_inside_the_folder_is_not_versioned(make_files: MakeFiles) -> None:
    from cairn.store import open_blob_store

    src = make_files({"data.txt": b"d"})
    inner = ContentStore(open_blob_store(str(src / ".cairn" / "store")))
    first = version_folder(src, inner)
    second = version_folder(src, inner)
    assert first.tree_digest == second.tree_digest
    assert [e.path for e in inner.get_tree(second.tree_digest)] == ["data.txt"]


def test_not_a_folder(content: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        version_folder(tmp_path / "nope", content)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        version_folder(tmp_path / "f", content)


def test_progress_reports_the_totals_at_the_end(content: ContentStore, make_files: MakeFiles,
                                                tmp_path: Path) -> None:
    src = make_files({f"f{i}": b"x" * i for i in range(300)})
    calls: list[tuple] = []
    info = version_folder(src, content, progress=lambda *a: calls.append(a))
    assert calls[-1] == (300, 300, info.size, info.size)
    assert all(c[0] <= 300 for c in calls)
    calls.clear()
    checkout(info.tree_digest, tmp_path / "o", content, progress=lambda *a: calls.append(a))
    assert calls[-1] == (300, 300, info.size, info.size)


# -- hash cache ----------------------------------------------------------------------------
def _trusting_cache(path: Path) -> HashCache:
    # A negative racy window trusts even files written a moment ago (tests cannot wait).
    return HashCache(path, racy_window_ns=-10**9)


def test_unchanged_files_are_not_read_again(content: ContentStore, make_files: MakeFiles,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({"a": b"a" * 10, "b/c": b"c" * 10})
    with _trusting_cache(tmp_path / "hashes.db") as cache:
        first = version_folder(src, content, hash_cache=cache)
        assert cache.get(os.path.realpath(src), "b/c") is not None

        def no_reads(path: str, size: int) -> bytes:
            raise AssertionError(f"{path} was read again")

        monkeypatch.setattr(folders, "_read_small", no_reads)
        assert version_folder(src, content, hash_cache=cache).tree_digest == first.tree_digest


def test_cache_sees_a_change_with_the_same_size_and_mtime(content: ContentStore,
                                                          make_files: MakeFiles,
                                                          tmp_path: Path) -> None:
    src = make_files({"in-place": b"aaaa", "replaced": b"bbbb", "same": b"ssss"})
    with _trusting_cache(tmp_path / "hashes.db") as cache:
        info = version_folder(src, content, hash_cache=cache)
        before = {e.path: e.digest for e in content.iter_tree(info.tree_digest)}
        mtimes = {n: (src / n).stat().st_mtime_ns for n in before}
        # Same inode, same size, mtime set back: only ctime tells.
        (src / "in-place").write_bytes(b"AAAA")
        # A new inode renamed over it, same size, mtime set back.
        (src / "new").write_bytes(b"BBBB")
        os.replace(src / "new", src / "replaced")
        for name in ("in-place", "replaced"):
            os.utime(src / name, ns=(mtimes[name], mtimes[name]))
            assert (src / name).stat().st_mtime_ns == mtimes[name]
        after = {e.path: e.digest
                 for e in content.iter_tree(version_folder(src, content,
                                                           hash_cache=cache).tree_digest)}
    assert after["in-place"] == hash_bytes(b"AAAA")
    assert after["replaced"] == hash_bytes(b"BBBB")
    assert after["same"] == before["same"]


def test_files_just_written_are_not_cached(content: ContentStore, make_files: MakeFiles,
                                           tmp_path: Path) -> None:
    src = make_files({"fresh": b"f"})
    with HashCache(tmp_path / "hashes.db") as cache:  # the default 2 s racy window
        version_folder(src, content, hash_cache=cache)
        assert cache.get(os.path.realpath(src), "fresh") is None


def test_a_cached_digest_whose_blob_was_removed_is_stored_again(content: ContentStore,
                                                                make_files: MakeFiles,
                                                                tmp_path: Path) -> None:
    src = make_files({"a": b"precious"})
    digest = hash_bytes(b"precious")
    with _trusting_cache(tmp_path / "hashes.db") as cache:
        version_folder(src, content, hash_cache=cache)
        assert content.blobs.local_path(digest) is not None
        content.blobs.delete(digest)  # what `cairn gc` does
        version_folder(src, content, hash_cache=cache)
    assert content.read_bytes(digest) == b"precious"


def test_an_unchanged_store_is_not_asked_about_cached_blobs(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({"a": b"one", "b/c": b"two"})
    asked: list[str] = []
    real_has = folders._LocalStager.has

    def has(self: folders._LocalStager, digest: str) -> bool:
        asked.append(digest)
        return real_has(self, digest)

    monkeypatch.setattr(folders._LocalStager, "has", has)
    with _trusting_cache(tmp_path / "hashes.db") as cache:
        first = version_folder(src, content, hash_cache=cache).tree_digest
        asked.clear()
        assert version_folder(src, content, hash_cache=cache).tree_digest == first
        assert asked == []  # nothing was removed since: the cache's blobs are stored
        content.blobs.delete(hash_bytes(b"nothing of ours"))  # any removal moves the mark
        assert version_folder(src, content, hash_cache=cache).tree_digest == first
        assert sorted(asked) == sorted([hash_bytes(b"one"), hash_bytes(b"two")])


def test_the_removal_mark_moves_on_every_removal(content: ContentStore) -> None:
    blobs = content.blobs
    marks = {blobs.removal_mark()}
    for i in range(20):  # quicker than the filesystem's clock ticks
        blobs.put_bytes(hash_bytes(b"%d" % i), b"%d" % i)
        blobs.delete(hash_bytes(b"%d" % i))
        marks.add(blobs.removal_mark())
    assert len(marks) == 21


def test_cache_forgets_deleted_files(content: ContentStore, make_files: MakeFiles,
                                     tmp_path: Path) -> None:
    src = make_files({"keep": b"k", "gone": b"g"})
    root = os.path.realpath(src)
    with _trusting_cache(tmp_path / "hashes.db") as cache:
        version_folder(src, content, hash_cache=cache)
        (src / "gone").unlink()
        version_folder(src, content, hash_cache=cache)
        assert cache.get(root, "gone") is None and cache.get(root, "keep") is not None


# -- checkout ------------------------------------------------------------------------------
def test_read_only_checkout_hardlinks_the_store(content: ContentStore, make_files: MakeFiles,
                                                tmp_path: Path) -> None:
    src = make_files({"data.bin": b"d" * 100, "tool.sh": (b"#!/bin/sh\n", True), "e": b""})
    info = version_folder(src, content)
    out = checkout(info.tree_digest, tmp_path / "ro", content)
    blob = content.blobs.local_path(hash_bytes(b"d" * 100))
    assert blob is not None
    data = tmp_path / "ro" / "data.bin"
    assert data.stat().st_ino == blob.stat().st_ino
    assert stat.S_IMODE(data.stat().st_mode) == 0o444
    tool = tmp_path / "ro" / "tool.sh"  # a link would share the blob's mode: copied
    assert tool.stat().st_ino != content.blobs.local_path(hash_bytes(b"#!/bin/sh\n")).stat().st_ino
    assert stat.S_IMODE(tool.stat().st_mode) == 0o555
    assert out.method == "mixed"


def test_writable_checkout_gives_private_copies(content: ContentStore, make_files: MakeFiles,
                                                tmp_path: Path) -> None:
    src = make_files({"data.bin": b"d" * 100, "tool.sh": (b"#!/bin/sh\n", True)})
    info = version_folder(src, content)
    out = checkout(info.tree_digest, tmp_path / "rw", content, writable=True)
    assert out.method in ("copy", "reflink")
    data = tmp_path / "rw" / "data.bin"
    assert stat.S_IMODE(data.stat().st_mode) & 0o200
    assert os.access(tmp_path / "rw" / "tool.sh", os.X_OK)
    data.write_bytes(b"edited")
    assert content.read_bytes(hash_bytes(b"d" * 100)) == b"d" * 100


def test_checkout_to_another_filesystem_copies(content: ContentStore, make_files: MakeFiles) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm to stand for another filesystem")
    if shm.stat().st_dev == Path(content.blobs.url).parent.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    info = version_folder(make_files({"a": b"a", "b/c": b"c"}), content)
    with tempfile.TemporaryDirectory(dir=shm) as other:
        out = checkout(info.tree_digest, Path(other) / "co", content)
        assert out.method == "copy"
        assert (Path(other) / "co" / "b" / "c").read_bytes() == b"c"


def test_copies_are_verified(content: ContentStore, make_files: MakeFiles,
                             tmp_path: Path) -> None:
    info = version_folder(make_files({"a": b"original"}), content)
    blob = content.blobs.local_path(hash_bytes(b"original"))
    assert blob is not None
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    with pytest.raises(CorruptBlobError, match="corrupt"):
        checkout(info.tree_digest, tmp_path / "rw", content, writable=True)
    assert not (tmp_path / "rw").exists()


def test_missing_blob(content: ContentStore, tmp_path: Path) -> None:
    ghost = hash_bytes(b"never stored")
    tree = content.put_tree([FileEntry("g", ghost, 12)])
    with pytest.raises(NotFoundError, match="not in the store"):
        checkout(tree, tmp_path / "o", content)
    assert not (tmp_path / "o").exists()


def test_dest_must_be_empty_unless_forced(content: ContentStore, make_files: MakeFiles,
                                          tmp_path: Path) -> None:
    info = version_folder(make_files({"a": b"new a", "sub/b": b"new b"}), content)
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "a").write_bytes(b"old a")
    (dest / "other").write_bytes(b"mine")
    with pytest.raises(InputError, match="is not empty") as caught:
        checkout(info.tree_digest, dest, content)
    assert caught.value.hint == "use --force to write into it"
    assert (dest / "a").read_bytes() == b"old a"
    checkout(info.tree_digest, dest, content, force=True)
    assert (dest / "a").read_bytes() == b"new a"
    assert (dest / "sub" / "b").read_bytes() == b"new b"
    assert (dest / "other").read_bytes() == b"mine"  # left alone
    empty = tmp_path / "empty"
    empty.mkdir()
    checkout(info.tree_digest, empty, content)  # an empty folder is fine
    assert (empty / "a").read_bytes() == b"new a"


def test_force_never_writes_through_a_symlink(content: ContentStore, make_files: MakeFiles,
                                              tmp_path: Path) -> None:
    info = version_folder(make_files({"sub/x": b"x", "top": b"t"}), content)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "top").symlink_to(outside / "target")
    with pytest.raises(InputError, match="symlink"):
        checkout(info.tree_digest, dest, content, force=True)
    assert list(outside.iterdir()) == []


def test_manifest_paths_escaping_dest_are_refused(content: ContentStore, tmp_path: Path) -> None:
    d = content.put_bytes(b"evil")
    evil = content.put_bytes(b"%s%020d %020d\n%s 4 - ../escaped\n"
                             % (TREE_MAGIC, 1, 4, d.encode()))
    with pytest.raises(CorruptBlobError, match="refusing path '../escaped'"):
        checkout(evil, tmp_path / "dest" / "inner", content)
    assert not (tmp_path / "dest" / "escaped").exists()
    assert not (tmp_path / "dest" / "inner").exists()


@pytest.mark.parametrize("pattern,expected", [
    ("*.txt", ["a.txt"]),
    ("**/*.png", ["img/1.png", "img/sub/2.png", "top.png"]),
    ("img/*.png", ["img/1.png"]),
    ("img", ["img/1.png", "img/sub/2.png", "img/sub/notes.txt"]),
    ("img/**", ["img/1.png", "img/sub/2.png", "img/sub/notes.txt"]),
    ("img/**/notes.txt", ["img/sub/notes.txt"]),
    ("[at]*", ["a.txt", "top.png"]),
    ("?.txt", ["a.txt"]),
    (["a.txt", "top.png"], ["a.txt", "top.png"]),
])
def test_glob(content: ContentStore, make_files: MakeFiles, tmp_path: Path,
              pattern: str | list[str], expected: list[str]) -> None:
    src = make_files({"a.txt": b"a", "top.png": b"t", "img/1.png": b"1",
                      "img/sub/2.png": b"2", "img/sub/notes.txt": b"n"})
    info = version_folder(src, content)
    out = checkout(info.tree_digest, tmp_path / "g", content, glob=pattern)
    assert sorted(read_folder(tmp_path / "g")) == expected
    assert out.files == len(expected)


def test_a_glob_matching_nothing_is_an_error_and_leaves_nothing(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path) -> None:
    info = version_folder(make_files({"img/1.png": b"1"}), content)
    with pytest.raises(InputError, match="no file matches 'train/\\*\\*'") as err:
        checkout(info.tree_digest, tmp_path / "g", content, glob="train/**")
    assert "whole paths" in (err.value.hint or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src0", "store"]  # no "g", no temp
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no file matches"):
        checkout(info.tree_digest, tmp_path / "empty", content, glob=["a", "b"])
    assert list((tmp_path / "empty").iterdir()) == []


# -- disk full -----------------------------------------------------------------------------
def _fail_after(n: int, real: Callable) -> Callable:
    lock = threading.Lock()
    calls = [0]

    def wrapper(*args: object) -> object:
        with lock:
            calls[0] += 1
            if calls[0] > n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    return wrapper


def _assert_no_tree_and_no_temp(store_root: Path) -> None:
    for path in store_files(store_root):
        assert "objects" in path.parts, f"left behind: {path}"
        assert not path.read_bytes().startswith(b"cairn-tree"), "a tree was stored"


def test_disk_full_while_adding_leaves_no_tree_and_no_temp_files(
        content: ContentStore, make_files: MakeFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({f"f{i:03d}": os.urandom(100) for i in range(400)})
    monkeypatch.setattr(folders, "_write_all", _fail_after(150, folders._write_all))
    with pytest.raises(StoreNotWritableError, match="no space left"):
        version_folder(src, content)
    _assert_no_tree_and_no_temp(tmp_path / "store")


def test_disk_full_while_copying_a_large_file(content: ContentStore, make_files: MakeFiles,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folders, "SMALL_FILE", 1000)
    src = make_files({"small": b"s", "big": os.urandom(20_000)})
    monkeypatch.setattr(folders, "_copy_fd", _fail_after(0, folders._copy_fd))
    with pytest.raises(StoreNotWritableError, match="no space left"):
        version_folder(src, content)
    _assert_no_tree_and_no_temp(tmp_path / "store")


def test_disk_full_while_checking_out_leaves_nothing(content: ContentStore,
                                                    make_files: MakeFiles, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    info = version_folder(make_files({f"d{i % 7}/f{i:03d}": os.urandom(50)
                                      for i in range(400)}), content)
    monkeypatch.setattr(checkout_module, "_link", _fail_after(200, checkout_module._link))
    parent = tmp_path / "parent"
    parent.mkdir()
    with pytest.raises(StoreNotWritableError, match="no space left"):
        checkout(info.tree_digest, parent / "dest", content)
    assert list(parent.iterdir()) == []  # neither the folder nor its hidden staging copy
    empty = tmp_path / "was-empty"
    empty.mkdir()
    monkeypatch.setattr(checkout_module, "_write_all",
                        _fail_after(100, checkout_module._write_all))
    with pytest.raises(StoreNotWritableError, match="no space left"):
        checkout(info.tree_digest, empty, content, writable=True)
    assert list(empty.iterdir()) == []


def test_blobs_are_synced_before_they_get_their_names(content: ContentStore,
                                                      make_files: MakeFiles,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    objects = tmp_path / "store" / "objects"
    seen: list[int] = []
    real = folders._syncfs

    def syncfs(fd: int) -> None:
        seen.append(sum(1 for p in objects.rglob("*") if p.is_file()))
        real(fd)

    monkeypatch.setattr(folders, "_syncfs", syncfs)
    version_folder(make_files({f"f{i}": os.urandom(10) for i in range(20)}), content)
    assert seen == [0]  # one sync for the batch, before any blob was renamed into place


def test_a_new_checkout_folder_gets_the_usual_mode(content: ContentStore,
                                                   make_files: MakeFiles,
                                                   tmp_path: Path) -> None:
    info = version_folder(make_files({"a": b"a"}), content)
    checkout(info.tree_digest, tmp_path / "new" / "dest", content)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new" / "dest").stat().st_mode) == 0o777 & ~umask
