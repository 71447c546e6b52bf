from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.store import ContentStore, open_blob_store


@pytest.fixture
def content(tmp_path: Path) -> ContentStore:
    return ContentStore(open_blob_store(str(tmp_path / "store")))


@pytest.fixture
def make_files(tmp_path: Path) -> Callable[[dict[str, bytes | tuple[bytes, bool]]], Path]:
    """Write {relative path: bytes or (bytes, executable)} under a new folder."""
    counter = iter(range(1000))

    def make(files: dict[str, bytes | tuple[bytes, bool]]) -> Path:
        root = tmp_path / f"src{next(counter)}"
        root.mkdir()
        for rel, value in files.items():
            data, executable = value if isinstance(value, tuple) else (value, False)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, 0o755 if executable else 0o644)
        return root

    return make


def read_folder(root: Path) -> dict[str, tuple[bytes, bool]]:
    """{relative path: (bytes, executable)} of every regular file under ``root``."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return out


def store_files(store_root: Path) -> list[Path]:
    """Every file under a store folder (blobs and anything left in tmp/)."""
    return [p for p in store_root.rglob("*") if p.is_file()]
