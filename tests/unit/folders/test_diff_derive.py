"""Comparing trees and deriving a version from a previous one plus changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.entities import FileEntry
from cairn.errors import InputError, NotFoundError
from cairn.store import ContentStore
from cairn.store import folders
from cairn.store.folders import checkout, derive_tree, diff_trees, folder_diff, version_folder
from cairn.store.hashcache import HashCache

from .conftest import read_folder


def _objects(content: ContentStore) -> list[Path]:
    return sorted(p for p in Path(content.blobs.root).rglob("*") if p.is_file())


def test_folder_diff_against_a_tree_stores_nothing(
        content: ContentStore, make_files: Callable[[dict], Path]) -> None:
    src = make_files({"same": b"s", "gone": b"g", "changed": b"1", "mode": b"m",
                      "d/keep": b"k" * (3 << 20)})
    tree = version_folder(src, content).tree_digest
    (src / "gone").unlink()
    (src / "changed").write_bytes(b"2")
    (src / "mode").chmod(0o755)
    (src / "d" / "e").mkdir()
    (src / "d" / "e" / "new").write_bytes(b"n")
    (src / "link").symlink_to(src / "same")  # not versioned, so not a change
    stored = _objects(content)
    seen: list[tuple] = []
    diff = folder_diff(tree, src, content, progress=lambda *a: seen.append(a))
    assert [e.path for e in diff.added] == ["d/e/new"]
    assert [e.path for e in diff.removed] == ["gone"]
    assert [m.path for m in diff.modified] == ["changed", "mode"]
    assert diff.unchanged_count == 2  # same, and d/keep (3 MB: hashed by the big-file path)
    assert seen[-1] == (5, 5, (3 << 20) + 4, (3 << 20) + 4)
    assert _objects(content) == stored
    assert diff == diff_trees(tree, version_folder(src, content).tree_digest, content)
    with pytest.raises(InputError, match="is not a folder"):
        folder_diff(tree, src / "same", content)


def test_folder_diff_hashes_only_what_the_hash_cache_cannot_vouch_for(
        content: ContentStore, make_files: Callable[[dict], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({f"f{i}": b"%d" % i for i in range(50)})
    with HashCache(tmp_path / "hashes", racy_window_ns=-10**9) as cache:
        tree = version_folder(src, content, hash_cache=cache).tree_digest
        (src / "f7").write_bytes(b"seven")
        hashed: list[str] = []
        real = folders._digest_of
        monkeypatch.setattr(folders, "_digest_of",
                            lambda path, size: hashed.append(path) or real(path, size))
        diff = folder_diff(tree, src, content, cache)
    assert [m.path for m in diff.modified] == ["f7"] and diff.unchanged_count == 49
    assert hashed == [str(src / "f7")]


def test_folder_diff_of_a_folder_as_last_versioned_is_a_stat_walk(
        content: ContentStore, make_files: Callable[[dict], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_files({f"d{i % 3}/f{i}": b"%d" % i for i in range(40)})
    with HashCache(tmp_path / "hashes", racy_window_ns=-10**9) as cache:
        tree = version_folder(src, content, hash_cache=cache).tree_digest

        def refuse(*_: object) -> None:
            raise AssertionError("read more than the stat of each file")

        monkeypatch.setattr(folders, "_digest_of", refuse)
        monkeypatch.setattr(ContentStore, "iter_rows", refuse)
        assert folder_diff(tree, src, content, cache) == folders.TreeDiff(unchanged_count=40)
        monkeypatch.undo()
        (src / "d1" / "f1").unlink()
        diff = folder_diff(tree, src, content, cache)  # a change: the whole comparison
    assert [e.path for e in diff.removed] == ["d1/f1"] and diff.unchanged_count == 39


def test_diff(content: ContentStore, make_files: Callable[[dict], Path]) -> None:
    a = version_folder(make_files({"same": b"s", "gone": b"g", "changed": b"1",
                                   "mode": b"m", "d/keep": b"k"}), content)
    b = version_folder(make_files({"same": b"s", "new": b"n", "changed": b"2",
                                   "mode": (b"m", True), "d/keep": b"k", "d/e/new": b"x"}),
                       content)
    diff = diff_trees(a.tree_digest, b.tree_digest, content)
    assert [e.path for e in diff.added] == ["d/e/new", "new"]
    assert [e.path for e in diff.removed] == ["gone"]
    assert [m.path for m in diff.modified] == ["changed", "mode"]
    changed = diff.modified[0]
    assert changed.old.digest != changed.new.digest
    assert diff.unchanged_count == 2
    back = diff_trees(b.tree_digest, a.tree_digest, content)
    assert [e.path for e in back.removed] == ["d/e/new", "new"]
    assert diff_trees(a.tree_digest, a.tree_digest, content).unchanged_count == 5


def test_derive_adds_replaces_and_excludes(content: ContentStore,
                                           make_files: Callable[[dict], Path],
                                           tmp_path: Path) -> None:
    base = version_folder(make_files({"keep": b"k", "replace": b"old", "drop": b"d",
                                      "logs/1": b"1", "logs/2": b"2", "logs-x": b"x"}), content)
    new = content.put_bytes(b"new")
    extra = content.put_bytes(b"extra")
    tree = derive_tree(base.tree_digest, content,
                       add={"replace": FileEntry("replace", new, 3),
                            "sub/extra": FileEntry("ignored-name", extra, 5)},
                       exclude={"drop", "logs"})
    was = {e.path: e.digest for e in content.iter_tree(base.tree_digest)}
    assert [(e.path, e.digest) for e in content.iter_tree(tree)] == [
        ("keep", was["keep"]), ("logs-x", was["logs-x"]), ("replace", new),
        ("sub/extra", extra),
    ]
    checkout(tree, tmp_path / "out", content)
    assert read_folder(tmp_path / "out")["replace"] == (b"new", False)
    assert derive_tree(base.tree_digest, content) == base.tree_digest  # nothing changed
    only_new = derive_tree(None, content, add=[FileEntry("a", new, 3)])
    assert [e.path for e in content.iter_tree(only_new)] == ["a"]


def test_derive_refuses_missing_blobs_and_clashes(content: ContentStore,
                                                  make_files: Callable[[dict], Path]) -> None:
    base = version_folder(make_files({"a": b"file named a"}), content)
    with pytest.raises(NotFoundError, match="not in the store"):
        derive_tree(base.tree_digest, content, add={"b": FileEntry("b", "0" * 64, 1)})
    d = content.put_bytes(b"x")
    with pytest.raises(InputError, match="file and as a folder"):
        derive_tree(base.tree_digest, content, add={"a/inside": FileEntry("a/inside", d, 1)})
    with pytest.raises(InputError, match="'..' segment"):
        derive_tree(base.tree_digest, content, add={"../up": FileEntry("../up", d, 1)})
