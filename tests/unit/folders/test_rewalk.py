"""Re-versioning compares the folder with its last tree first (``rewalk``): an unchanged
folder costs a stat walk; a changed one gives exactly the tree a full walk gives."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.store import ContentStore, open_blob_store
from cairn.store import folders
from cairn.store.cas import hash_bytes
from cairn.store.folders import rewalk, version_folder
from cairn.store.hashcache import HashCache

MakeFiles = Callable[[dict[str, bytes | tuple[bytes, bool]]], Path]


def _trusting_cache(path: Path) -> HashCache:
    # A negative racy window trusts even files written a moment ago (tests cannot wait).
    return HashCache(path, racy_window_ns=-10**9)


def _many(n: int = 600) -> dict[str, bytes | tuple[bytes, bool]]:
    """Files over a few folders: past a first batch, so helper processes join in."""
    return {f"d{i % 3}/f{i:04d}.bin": b"%d" % i * (1 + i % 7) for i in range(n)}


def test_an_unchanged_folder_is_only_walked(content: ContentStore, make_files: MakeFiles,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files(_many())
    with _trusting_cache(tmp_path / "hashes") as cache:
        first = version_folder(src, content, hash_cache=cache)
        record = cache.file_for(os.path.realpath(src))
        before = record.read_bytes()
        last = cache.last_tree(os.path.realpath(src))
        assert last is not None and (last.tree, last.files, last.size) == (
            first.tree_digest, first.file_count, first.size)

        def refuse(*_: object) -> None:
            raise AssertionError("an unchanged folder was versioned again")

        monkeypatch.setattr(folders, "_read_small", refuse)
        monkeypatch.setattr(ContentStore, "tree_writer", refuse)
        walked = rewalk(src, content, cache)
        assert walked is not None and walked.unchanged and walked.same == 600
        calls: list[tuple[int, int | None, int, int | None]] = []
        again = version_folder(src, content, hash_cache=cache,
                               progress=lambda *a: calls.append(a))
        assert again == first
        assert calls[-1] == (600, 600, first.size, first.size)
        assert record.read_bytes() == before  # nothing rewritten


def _edit(src: Path, change: str) -> None:
    if change == "modify first":
        (src / "d0/f0000.bin").write_bytes(b"changed")
    elif change == "modify middle":
        (src / "d1/f0301.bin").write_bytes(b"changed")
    elif change == "modify last":
        (src / "d2/f0599.bin").write_bytes(b"changed")
    elif change == "add first":
        (src / "a.bin").write_bytes(b"new")
    elif change == "add middle":
        (src / "d1/f0301.a").write_bytes(b"new")  # just before d1/f0301.bin
    elif change == "add last":
        (src / "z" / "y").mkdir(parents=True)
        (src / "z/y/x.bin").write_bytes(b"new")
    elif change == "delete first":
        (src / "d0/f0000.bin").unlink()
    elif change == "delete middle":
        (src / "d1/f0301.bin").unlink()
    elif change == "delete last":
        (src / "d2/f0599.bin").unlink()
    elif change == "make executable":
        os.chmod(src / "d1/f0301.bin", 0o755)
    elif change == "replace by a symlink":
        (src / "d1/f0301.bin").unlink()
        os.symlink("f0304.bin", src / "d1/f0301.bin")
    elif change == "same bytes, new inode":
        os.replace(src / "d1/f0301.bin", src / "d1/moved")
        (src / "d1/f0301.bin").write_bytes((src / "d1/moved").read_bytes())
        (src / "d1/moved").unlink()
    else:
        raise AssertionError(change)


@pytest.mark.parametrize("change", [
    "modify first", "modify middle", "modify last", "add first", "add middle", "add last",
    "delete first", "delete middle", "delete last", "make executable",
    "replace by a symlink", "same bytes, new inode"])
def test_a_change_anywhere_gives_the_tree_of_a_full_walk(content: ContentStore,
                                                         make_files: MakeFiles,
                                                         tmp_path: Path, change: str) -> None:
    src = make_files(_many())
    root = os.path.realpath(src)
    with _trusting_cache(tmp_path / "hashes") as cache:
        first = version_folder(src, content, hash_cache=cache)
        _edit(src, change)
        walked = rewalk(src, content, cache)
        assert walked is not None and not walked.unchanged
        if change.endswith("middle") or change in ("make executable", "replace by a symlink",
                                                    "same bytes, new inode"):
            assert walked.same == 300  # d0/* (200 files) and d1's first 100 unchanged
        info = version_folder(src, content, hash_cache=cache, walked=walked)
        fresh = ContentStore(open_blob_store(str(tmp_path / "fresh")))
        full = version_folder(src, fresh)  # no cache, no last tree: every file read
        assert (info.tree_digest, info.file_count, info.size) == (
            full.tree_digest, full.file_count, full.size)
        assert info.tree_digest != first.tree_digest or change == "same bytes, new inode"
        # The cache holds every file again, the unchanged ones before the change too,
        # and names the new tree: the next walk is a stat walk.
        assert cache.get(root, "d0/f0003.bin") is not None
        last = cache.last_tree(root)
        assert last is not None and last.tree == info.tree_digest
        walked = rewalk(src, content, cache)
        assert walked is not None and walked.unchanged


def test_a_file_not_cached_leaves_no_last_tree(content: ContentStore, make_files: MakeFiles,
                                               tmp_path: Path) -> None:
    src = make_files({"a": b"a", "b": b"b"})
    with HashCache(tmp_path / "hashes") as cache:  # the default 2 s racy window
        version_folder(src, content, hash_cache=cache)
        assert cache.last_tree(os.path.realpath(src)) is None
        assert rewalk(src, content, cache) is None


def test_a_removal_from_the_store_ends_the_trust(content: ContentStore, make_files: MakeFiles,
                                                 tmp_path: Path) -> None:
    src = make_files({"a": b"precious", "b": b"other"})
    with _trusting_cache(tmp_path / "hashes") as cache:
        first = version_folder(src, content, hash_cache=cache)
        assert rewalk(src, content, cache) is not None
        content.blobs.delete(hash_bytes(b"precious"))  # what `cairn gc` does
        assert rewalk(src, content, cache) is None
        assert version_folder(src, content, hash_cache=cache) == first
    assert content.read_bytes(hash_bytes(b"precious")) == b"precious"  # stored again


def test_a_damaged_cache_file_is_no_last_tree(content: ContentStore, make_files: MakeFiles,
                                              tmp_path: Path) -> None:
    src = make_files(_many(50))
    root = os.path.realpath(src)
    with _trusting_cache(tmp_path / "hashes") as cache:
        first = version_folder(src, content, hash_cache=cache)
        record = cache.file_for(root)
        lines = record.read_text().splitlines(True)
        record.write_text("".join(lines[:20] + lines[21:]))  # a record lost
        walked = rewalk(src, content, cache)
        assert walked is not None and walked.same == 19 and not walked.unchanged
        assert version_folder(src, content, hash_cache=cache, walked=walked) == first
        record.write_text("".join(lines[:-1]) + lines[-1][:-1])  # trailer cut short
        assert cache.last_tree(root) is None
        record.write_text("garbage\n" + "".join(lines[1:]))
        assert cache.last_tree(root) is None
        assert version_folder(src, content, hash_cache=cache) == first


def test_odd_names_compare_too(content: ContentStore, make_files: MakeFiles,
                               tmp_path: Path) -> None:
    src = make_files({"back\\slash": b"1", "new\nline": b"2", "carriage\rreturn": b"3",
                      "sp ace/x": b"4", "\u2028sep": b"5"})
    with _trusting_cache(tmp_path / "hashes") as cache:
        first = version_folder(src, content, hash_cache=cache)
        walked = rewalk(src, content, cache)
        assert walked is not None and walked.unchanged and walked.same == 5
        (src / "new\nline").write_bytes(b"two")
        walked = rewalk(src, content, cache)
        assert walked is not None and not walked.unchanged
        assert version_folder(src, content, hash_cache=cache,
                              walked=walked).tree_digest != first.tree_digest


def test_a_cache_file_replaced_meanwhile_is_read_whole(content: ContentStore,
                                                       make_files: MakeFiles,
                                                       tmp_path: Path) -> None:
    """The last tree and the records it vouches for come from one file, even when
    another walk replaces it in between."""
    src = make_files(_many(50))
    root = os.path.realpath(src)
    with _trusting_cache(tmp_path / "hashes") as cache:
        version_folder(src, content, hash_cache=cache)
        read = cache.read_last(root)
        assert read is not None
        last, records = read
        (src / "d0/f0000.bin").write_bytes(b"changed")
        second = version_folder(src, content, hash_cache=cache)  # replaces the file
        assert second.tree_digest != last.tree
        assert len(list(records)) == 50  # still the first walk's records
