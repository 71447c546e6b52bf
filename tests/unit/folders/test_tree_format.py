"""Tree manifests, format 2: streaming writes, validated reads, old JSON trees still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.entities import FileEntry
from cairn.errors import CorruptBlobError, InputError, StoreNotWritableError
from cairn.store import ContentStore, open_blob_store
from cairn.store.cas import TREE_MAGIC, hash_bytes

D = hash_bytes(b"x")


def manifest(*lines: str, count: int = 0, size: int = 0) -> bytes:
    head = b"%s%020d %020d\n" % (TREE_MAGIC, count, size)
    return head + "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")


def test_round_trip_sorted_with_exec_bits_and_odd_names(content: ContentStore) -> None:
    names = ["b/x.py", "a.txt", "a/b", "a-b", "a0", "line\nbreak", "back\\slash", "été/日本.bin"]
    entries = [FileEntry(n, D, i, executable=n.endswith(".py")) for i, n in enumerate(names)]
    tree = content.put_tree(entries)
    assert content.put_tree(reversed(entries)) == tree  # order-independent
    got = content.get_tree(tree)
    assert [e.path for e in got] == sorted(names)
    assert {e.path: e for e in got} == {e.path: e for e in entries}
    assert content.tree_totals(tree) == (len(names), sum(range(len(names))))
    raw = content.read_bytes(tree)
    assert raw.startswith(b"cairn-tree 2 ")
    assert b"line\\nbreak" in raw and b"back\\\\slash" in raw  # one line per entry


def test_presorted_streams_and_checks_the_order(content: ContentStore) -> None:
    gen = (FileEntry(f"f{i:05d}", D, 1) for i in range(3000))
    tree = content.put_tree(gen, presorted=True)
    rows = content.iter_tree(tree)
    assert next(rows).path == "f00000"  # a generator: entries stream
    assert sum(1 for _ in rows) == 2999
    with pytest.raises(InputError, match="out of order"):
        content.put_tree([FileEntry("b", D, 1), FileEntry("a", D, 1)], presorted=True)


def test_writer_refuses_duplicates_unsafe_paths_and_file_folder_clashes(
        content: ContentStore) -> None:
    with pytest.raises(InputError, match="listed twice"):
        content.put_tree([FileEntry("a", D, 1), FileEntry("a", D, 2)])
    with pytest.raises(InputError, match="both a file|as a file and as a folder"):
        content.put_tree([FileEntry("a", D, 1), FileEntry("a.txt", D, 1),
                          FileEntry("a/b", D, 1)])
    for bad in ("/etc/passwd", "../up", "a/../../b", "a//b", "a/./b", "a/", "nul\0"):
        with pytest.raises(InputError, match="cannot store"):
            content.put_tree([FileEntry(bad, D, 1)])


def test_old_json_trees_are_still_read(content: ContentStore) -> None:
    old = content.put_json({"cairn-tree": 1, "files": [["a.txt", D, 1, 0], ["b/run.sh", D, 1, 1]]})
    assert content.get_tree(old) == [FileEntry("a.txt", D, 1, False),
                                     FileEntry("b/run.sh", D, 1, True)]
    assert content.tree_totals(old) == (2, 2)
    evil = content.put_json({"cairn-tree": 1, "files": [["../../etc/cron.d/x", D, 1, 0]]})
    with pytest.raises(CorruptBlobError, match=r"refusing path '\.\./\.\./etc/cron\.d/x'"):
        content.get_tree(evil)


@pytest.mark.parametrize("path", ["/abs/olute", "../escape", "a/../../b", "a//b", "a/./b",
                                  "a/", "nul\0byte", "x/.."])
def test_reader_refuses_unsafe_paths_naming_them(content: ContentStore, path: str) -> None:
    tree = content.put_bytes(manifest(f"{D} 1 - {path}"))
    with pytest.raises(CorruptBlobError, match="refusing path"):
        content.get_tree(tree)


@pytest.mark.parametrize("lines,match", [
    ((f"{D} 1 - b", f"{D} 1 - a"), "out of order"),
    ((f"{D} 1 - a", f"{D} 1 - a"), "listed twice"),
    ((f"{D} 1 - a", f"{D} 1 - a/b"), "file and as a folder"),
    ((f"{D[:-1]} 1 - a",), "unreadable line"),
    ((f"{D} -1 - a",), "unreadable line"),
    ((f"{D} 1 y a",), "unreadable line"),
    ((f"{D} 1 - bad\\escape",), "bad escape"),
])
def test_reader_refuses_damaged_manifests(content: ContentStore, lines: tuple[str, ...],
                                          match: str) -> None:
    tree = content.put_bytes(manifest(*lines))
    with pytest.raises(CorruptBlobError, match=match):
        list(content.iter_tree(tree))


def test_a_tampered_manifest_is_refused_before_any_entry(content: ContentStore) -> None:
    tree = content.put_tree([FileEntry("a", D, 1)])
    path = content.blobs.local_path(tree)
    assert path is not None
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b" a\n", b" b\n"))
    with pytest.raises(CorruptBlobError, match="no longer match"):
        next(content.iter_tree(tree))


def test_empty_tree(content: ContentStore) -> None:
    tree = content.put_tree([])
    assert content.get_tree(tree) == []
    assert content.tree_totals(tree) == (0, 0)


def test_tree_in_a_store_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    content = ContentStore(open_blob_store(str(blocker / "store")))
    with pytest.raises(StoreNotWritableError, match="cannot write the blob store"):
        content.put_tree([FileEntry("a", D, 1)])
