"""Output collection: every file under the outputs directory becomes a datum.

Sidecar metadata attaches tags and properties to outputs: ``<file>.metadata.json`` beside
a file, or lines ``{"file": "<path>", "metadata": {...}}`` in ``cairn.metadata.jsonl`` (or
``valohai.metadata.jsonl``). Keys ``cairn.tags`` / ``valohai.tags`` become datum tags; the
rest is kept as the datum's metadata. Nothing outside the outputs directory is ever stored:
links that point outside it and sidecar entries naming ``../`` paths are refused.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cairn.entities import Datum
from cairn.store.cas import ContentStore

SIDECAR_SUFFIX = ".metadata.json"
JSONL_NAMES = ("cairn.metadata.jsonl", "valohai.metadata.jsonl")
TAG_KEYS = ("cairn.tags", "valohai.tags")


@dataclass
class CollectedOutputs:
    datums: list[Datum] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one message per refused output


def safe_relative(name: str) -> str | None:
    """``name`` as a clean relative POSIX path inside the outputs dir, or None if it escapes."""
    if not name or name.startswith(("/", "\\")) or os.path.isabs(name):
        return None
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm


def collect_outputs(
    outputs_dir: Path,
    content: ContentStore,
    *,
    project_id: str,
    execution_id: str,
    move: bool,
) -> CollectedOutputs:
    """Store every output file and return the new datums (not yet recorded)."""
    result = CollectedOutputs()
    root = outputs_dir.resolve()
    files: dict[str, Path] = {}
    sidecars: dict[str, dict[str, Any]] = {}
    jsonl: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs):  # links to folders: refused if they leave, else walked
            full = Path(folder) / name
            if full.is_symlink():
                _refuse_or_walk_dir_link(full, root, files, result)
        for name in sorted(names):
            full = Path(folder) / name
            rel = full.relative_to(root).as_posix()
            if rel in JSONL_NAMES:
                jsonl.append(full)
                continue
            if full.is_symlink():
                target = Path(os.path.realpath(full))
                if not _inside(target, root):
                    result.refused.append(
                        f"output '{rel}' links to {target}, outside the outputs directory"
                    )
                    continue
                if not target.is_file():
                    continue
            files[rel] = full
    for rel in list(files):
        if rel.endswith(SIDECAR_SUFFIX) and rel[: -len(SIDECAR_SUFFIX)] in files:
            sidecars[rel[: -len(SIDECAR_SUFFIX)]] = _read_json(files.pop(rel), result, rel)
    for path in jsonl:
        _read_jsonl(path, files, sidecars, result)

    now = datetime.now(timezone.utc)
    for rel in sorted(files):
        path = files[rel]
        real_move = move and not path.is_symlink()
        digest, size = content.put_file(path.resolve() if path.is_symlink() else path,
                                        move=real_move)
        meta = dict(sidecars.get(rel, {}))
        tags: list[str] = []
        for key in TAG_KEYS:
            value = meta.pop(key, None)
            if isinstance(value, str):
                tags.append(value)
            elif isinstance(value, list):
                tags.extend(str(t) for t in value)
        result.datums.append(Datum(
            id=str(uuid.uuid4()), project_id=project_id, name=rel, digest=digest, size=size,
            execution_id=execution_id, created_at=now, metadata=meta,
            tags=tuple(dict.fromkeys(tags)),
        ))
    return result


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _refuse_or_walk_dir_link(link: Path, root: Path, files: dict[str, Path],
                             result: CollectedOutputs) -> None:
    rel = link.relative_to(root).as_posix()
    target = Path(os.path.realpath(link))
    if not _inside(target, root):
        result.refused.append(f"output '{rel}' links to {target}, outside the outputs directory")


def _read_json(path: Path, result: CollectedOutputs, rel: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        result.refused.append(f"metadata file '{rel}' is not valid JSON: {exc}")
        return {}
    if not isinstance(value, dict):
        result.refused.append(f"metadata file '{rel}' must hold a JSON object")
        return {}
    return value


def _read_jsonl(path: Path, files: dict[str, Path], sidecars: dict[str, dict[str, Any]],
                result: CollectedOutputs) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name, meta = entry["file"], entry["metadata"]
            if not isinstance(meta, dict):
                raise TypeError("metadata must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            result.refused.append(
                f"{path.name}:{number}: expected {{\"file\": ..., \"metadata\": {{...}}}}: {exc}")
            continue
        rel = safe_relative(str(name))
        if rel is None:
            result.refused.append(
                f"{path.name}:{number}: file '{name}' is outside the outputs directory")
            continue
        if rel not in files:
            result.refused.append(f"{path.name}:{number}: no output file '{rel}'")
            continue
        sidecars.setdefault(rel, {}).update(meta)


class LiveOutputs:
    """Outputs uploaded while the step runs: a file it marks read-only (``chmod 0444``, as
    Valohai's live outputs) is stored and recorded at once, then removed from the folder.
    Checkpoints so written survive the machine dying mid-run; an automatic restart gets
    them as its ``_restart`` input.
    """

    def __init__(self, outputs_dir: Path, content: ContentStore, *, project_id: str,
                 execution_id: str, record: Callable[[list[Datum]], None],
                 every: float = 1.0) -> None:
        self.root = outputs_dir
        self.content = content
        self.project_id = project_id
        self.execution_id = execution_id
        self.record = record
        self.every = every
        self.datums: list[Datum] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cairn-live-outputs",
                                        daemon=True)

    def __enter__(self) -> LiveOutputs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sweep()

    def sweep(self) -> None:
        """Store the read-only files of the outputs folder now."""
        for folder, _dirs, names in os.walk(self.root, followlinks=False):
            for name in sorted(names):
                path = Path(folder) / name
                rel = path.relative_to(self.root).as_posix()
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if (rel in JSONL_NAMES or rel.endswith(SIDECAR_SUFFIX)
                        or not stat.S_ISREG(st.st_mode) or st.st_mode & 0o222):
                    continue
                try:
                    digest, size = self.content.put_file(path, move=True)
                    datum = Datum(
                        id=str(uuid.uuid4()), project_id=self.project_id, name=rel,
                        digest=digest, size=size, execution_id=self.execution_id,
                        created_at=datetime.now(timezone.utc), metadata={})
                    self.record([datum])
                except Exception as exc:  # noqa: BLE001 - the file stays for the final collection
                    self.errors.append(f"{rel}: {exc}")
                    continue
                path.unlink(missing_ok=True)  # a store that copied (remote) leaves it
                self.datums.append(datum)
