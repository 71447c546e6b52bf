"""Which files of its code snapshot an execution read (for the result cache).

:func:`trace_environment` adds what a Python step needs to record its reads;
:func:`code_reads` turns the records into ``{path: digest}`` over the snapshot, or None when
the step could not be traced (a command that does not start with ``python``), in which case
the whole snapshot counts.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = str(Path(__file__).parent)

_PYTHONS = ("python", "python3")


def traceable(command: Sequence[str]) -> bool:
    """Whether every line of the command starts a Python interpreter."""
    lines = [c.strip() for c in command if c.strip()]
    if not lines:
        return False
    for line in lines:
        try:
            first = shlex.split(line)[0]
        except (ValueError, IndexError):
            return False
        name = os.path.basename(first)
        if not (name in _PYTHONS or (name.startswith("python3.") and name[8:].isdigit())):
            return False
    return True


def trace_environment(env: dict[str, str], trace_dir: Path) -> None:
    """Make Python processes started with ``env`` record the files they open."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    env["CAIRN_CODE_TRACE"] = str(trace_dir)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = HERE + (os.pathsep + path if path else "")


def code_reads(
    trace_dir: Path, command: Sequence[str], tree: Iterable[tuple[str, str]]
) -> dict[str, str] | None:
    """``{path: digest}`` of the snapshot files the step read, or None if it left no trace."""
    try:
        records = [p for p in trace_dir.iterdir() if p.suffix == ".txt"]
    except OSError:
        return None
    if not records:
        return None
    read: set[str] = set()
    for record in records:
        try:
            read.update(line for line in record.read_text(encoding="utf-8").splitlines() if line)
        except OSError:
            return None
    for line in command:  # files the command names (python train.py) count as read
        try:
            read.update(shlex.split(line))
        except ValueError:
            pass
    return {path: digest for path, digest in tree if path in read}
