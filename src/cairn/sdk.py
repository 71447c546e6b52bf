"""Helpers for code running inside an execution: sugar over the execution contract.

Everything here also works outside an execution: parameters are empty, inputs are read
from ``./inputs/<name>/``, outputs go to ``./outputs/`` and :func:`log` prints nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cairn.errors import InputError, OutputError


def _dir(kind: str, fallback: str) -> Path:
    value = os.environ.get(f"CAIRN_{kind}_DIR") or os.environ.get(f"VH_{kind}_DIR")
    return Path(value) if value else Path.cwd() / fallback


def in_execution() -> bool:
    """Whether this process runs inside a cairn (or Valohai) execution."""
    return bool(os.environ.get("CAIRN_EXECUTION_ID") or os.environ.get("VH_JOB_ID"))


class Parameters(Mapping[str, Any]):
    """The execution's parameters as resolved (``parameters.json``); empty outside a run."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._values is None:
            path = _dir("CONFIG", ".cairn-config") / "parameters.json"
            self._values = json.loads(path.read_text()) if path.is_file() else {}
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"Parameters({self._load()!r})"


class Input:
    """One named input: its files under ``$CAIRN_INPUTS_DIR/<name>/``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = _dir("INPUTS", "inputs") / name

    def paths(self, pattern: str = "**/*") -> list[Path]:
        """The input's files (sorted), optionally filtered by a glob pattern."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob(pattern) if p.is_file())

    def path(self) -> Path:
        """The input's only file; an error if it has none or several."""
        files = self.paths()
        if len(files) != 1:
            raise InputError(
                f"input '{self.name}' has {len(files)} files, expected exactly one",
                "use inputs(name).paths() for inputs with several files",
            )
        return files[0]

    def __repr__(self) -> str:
        return f"Input({self.name!r}, dir={str(self.dir)!r})"


def inputs(name: str) -> Input:
    """The input called ``name``."""
    return Input(name)


class Outputs:
    """Where outputs go: every file written under :attr:`dir` becomes a datum."""

    @property
    def dir(self) -> Path:
        return _dir("OUTPUTS", "outputs")

    def path(self, name: str) -> Path:
        """A path for the output file ``name`` (folders are created); never outside the dir."""
        from cairn.runtime.outputs import safe_relative

        rel = safe_relative(name)
        if rel is None:
            raise OutputError(
                f"output name {name!r} leaves the outputs directory",
                "use a relative name without '..', like 'model.onnx' or 'plots/loss.png'",
            )
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


outputs = Outputs()


def log(step: int | None = None, **metrics: Any) -> dict[str, Any]:
    """Record metrics (one event) inside a run: ``cairn.log(step=3, loss=0.2, acc=0.9)``.

    Prints one JSON line on stdout, which cairn stores as metric points. Outside an
    execution nothing is printed; the event is returned either way.
    """
    event: dict[str, Any] = {"step": step, **metrics} if step is not None else dict(metrics)
    if in_execution():
        sys.stdout.write(json.dumps(event, default=float) + "\n")
        sys.stdout.flush()
    return event
