"""Helper processes that share a big walk's hashing and storing.

Each case runs in a fresh interpreter: helpers are forked only from a process with a
single thread, which this test process (with BLAKE3's thread pool started by earlier
tests) may no longer be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PRELUDE = """
import json, os, sys
from pathlib import Path
import cairn.store.folders as folders
from cairn.errors import CairnError
from cairn.store import ContentStore, open_blob_store

forks = []
_Helpers = folders._Helpers
class Counted(_Helpers):
    def __init__(self, count, *args):
        forks.append(count)
        super().__init__(count, *args)
folders._Helpers = Counted
def wanted():
    return min(1, folders._HELPERS_MAX) if folders.forking.can_fork() else 0
folders._helpers_wanted = wanted

def version(src, store, helpers, **kw):
    folders._HELPERS_MAX = helpers
    content = ContentStore(open_blob_store(store))
    return folders.version_folder(src, content, **kw)

def children():
    pid = os.getpid()
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
"""


def _run(tmp_path: Path, body: str) -> dict:
    script = PRELUDE + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _make(root: Path, count: int) -> None:
    """``count`` small files, a third of them alike, and two large twins."""
    for i in range(count):
        folder = root / f"d{i // 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        data = b"same" if i % 3 == 0 else os.urandom(200 + i % 50)
        (folder / f"f{i:04d}.bin").write_bytes(data)
    big = os.urandom(3 << 20)
    (root / "big-1.bin").write_bytes(big)
    (root / "big-2.bin").write_bytes(big)


def _store_problems(store: Path) -> list[str]:
    """Blobs whose bytes do not hash to their name, and anything left in tmp/."""
    from blake3 import blake3

    problems = []
    for path in (store / "objects").rglob("*"):
        if path.is_file() and len(path.parent.name) == 2:
            if blake3(path.read_bytes()).hexdigest() != path.parent.name + path.name:
                problems.append(f"bad blob {path}")
    tmp = store / "tmp"
    if tmp.exists():
        problems += [f"left behind {p}" for p in tmp.rglob("*")]
    return problems


def _blobs(store: Path) -> set[str]:
    return {p.parent.name + p.name for p in (store / "objects").rglob("*")
            if p.is_file() and len(p.parent.name) == 2}


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_helpers_store_the_same_tree_and_blobs(tmp_path: Path, link: bool) -> None:
    _make(tmp_path / "a", 1500)
    subprocess.run(["cp", "-a", str(tmp_path / "a"), str(tmp_path / "b")], check=True)
    if link:  # old enough to be linked
        for path in tmp_path.rglob("*.bin"):
            os.utime(path, (1_600_000_000, 1_600_000_000))
    # Two fresh interpreters: hashing the large files starts BLAKE3's thread pool, after
    # which a process may not fork.
    alone = _run(tmp_path, f"""
        info = version("a", "store-one", 0, link={link})
        print(json.dumps({{"tree": [info.tree_digest, info.file_count, info.size],
                          "forks": forks}}))
    """)
    out = _run(tmp_path, f"""
        info = version("b", "store-two", 1, link={link})
        print(json.dumps({{"tree": [info.tree_digest, info.file_count, info.size],
                          "forks": forks, "children": children()}}))
    """)
    assert alone["forks"] == [] and out["forks"] == [1]  # the second walk had a helper
    assert out["tree"] == alone["tree"]
    assert out["tree"][1] == 1502
    assert out["children"] == []  # the helper ended and was reaped
    assert _blobs(tmp_path / "store-one") == _blobs(tmp_path / "store-two")
    assert _store_problems(tmp_path / "store-two") == []


def test_an_error_in_a_helper_fails_the_walk_cleanly(tmp_path: Path) -> None:
    """The second batch (files 128-255) goes to the idle helper: its error is raised
    here, with its message, and nothing of the walk stays (no tree, no temp file)."""
    _make(tmp_path / "a", 600)
    for big in ("big-1.bin", "big-2.bin"):
        (tmp_path / "a" / big).unlink()
    out = _run(tmp_path, """
        from cairn.errors import InputError
        read_small = folders._read_small
        def failing(path, size, view=None):
            if path.endswith("f0200.bin"):
                raise InputError(f"cannot read {path} (in process {os.getpid()})", "a hint")
            return read_small(path, size, view)
        folders._read_small = failing
        try:
            version("a", "store", 1)
        except InputError as exc:
            error = [exc.message, exc.hint]
        trees = [p.name for p in Path("store/objects").rglob("*") if p.is_file()
                 and Path(p).read_bytes().startswith(b"cairn-tree")]
        print(json.dumps({"error": error, "parent": os.getpid(), "forks": forks,
                          "children": children(), "trees": trees}))
    """)
    message, hint = out["error"]
    assert "f0200.bin" in message and hint == "a hint"
    assert f"in process {out['parent']})" not in message  # the helper raised it
    assert out["forks"] == [1] and out["children"] == [] and out["trees"] == []
    assert _store_problems(tmp_path / "store") == []


def test_a_helper_that_dies_fails_the_walk_with_a_clear_error(tmp_path: Path) -> None:
    _make(tmp_path / "a", 600)
    out = _run(tmp_path, """
        parent = os.getpid()
        work = folders._hash_and_stage
        def dying(*args):
            if os.getpid() != parent:
                os._exit(9)  # as if killed
            return work(*args)
        folders._hash_and_stage = dying
        try:
            version("a", "store", 1)
        except CairnError as exc:
            error = [type(exc).__name__, exc.message, exc.hint]
        print(json.dumps({"error": error, "children": children()}))
    """)
    kind, message, hint = out["error"]
    assert kind == "StoreError" and "ended without its results" in message
    assert "dmesg" in hint
    assert out["children"] == []
    assert _store_problems(tmp_path / "store") == []
