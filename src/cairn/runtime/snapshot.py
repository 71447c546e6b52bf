"""Code snapshots: the exact bytes of the files an execution runs.

In a git repository the files are the tracked ones plus untracked files that are not
ignored (``git ls-files -co --exclude-standard``), read from the working tree, so
uncommitted edits are captured. Outside git every file is taken except cairn's own data
folder and well-known caches. The result is a tree in the content store.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from cairn.entities import CodeSnapshot, FileEntry
from cairn.store.cas import ContentStore

# Never part of a snapshot outside git (git's own ignore rules apply inside a repository).
_SKIP_DIRS = {".git", ".cairn", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache",
              ".ruff_cache", "node_modules", ".ipynb_checkpoints", ".tox"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def snapshot_code(root: Path, content: ContentStore, *, data_dir: Path | None = None) -> CodeSnapshot:
    """Store the project's files and return the snapshot (tree digest plus git facts)."""
    root = root.resolve()
    git = _git_info(root)
    files = list(_git_files(root)) if git is not None else list(_walk_files(root))
    skip_prefix = None
    if data_dir is not None:
        try:
            skip_prefix = data_dir.resolve().relative_to(root).as_posix() + "/"
        except ValueError:
            skip_prefix = None
    entries: list[FileEntry] = []
    total = 0
    for rel in files:
        if skip_prefix and rel.startswith(skip_prefix):
            continue
        path = root / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # listed by git but deleted in the working tree
        if not stat.S_ISREG(st.st_mode):
            continue  # symlinks and sockets are not code; submodule dirs are walked by git
        digest, size = content.put_file(path)
        entries.append(FileEntry(rel, digest, size, bool(st.st_mode & stat.S_IXUSR)))
        total += size
    tree = content.put_tree(entries)
    commit, dirty, branch = git if git is not None else (None, False, None)
    return CodeSnapshot(tree, len(entries), total, commit, dirty, branch)


def restore_code(tree_digest: str, content: ContentStore, dest: Path) -> int:
    """Write a snapshot's files under ``dest`` as private, writable copies; returns count."""
    entries = content.get_tree(tree_digest)
    for entry in entries:
        content.materialize(entry.digest, dest / entry.path, link=False, executable=entry.executable)
    return len(entries)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            check=True,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.decode("utf-8", "surrogateescape")


def _git_info(root: Path) -> tuple[str | None, bool, str | None] | None:
    """(commit, dirty, branch) if ``root`` is inside a git work tree, else None."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    commit = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    branch = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    return (
        commit.strip() if commit else None,
        bool(status and status.strip()),
        branch.strip() if branch else None,
    )


def _git_files(root: Path) -> Iterator[str]:
    out = _git(root, "ls-files", "-z", "-co", "--exclude-standard", "--recurse-submodules")
    if out is None:  # old git without --recurse-submodules with -o
        out = _git(root, "ls-files", "-z", "-co", "--exclude-standard") or ""
    seen: set[str] = set()
    for rel in out.split("\0"):
        if rel and rel not in seen:
            seen.add(rel)
            yield rel


def _walk_files(root: Path) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        rel_folder = os.path.relpath(folder, root)
        for name in sorted(files):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            yield rel.replace(os.sep, "/")
