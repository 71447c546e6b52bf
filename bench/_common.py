"""Shared helpers for the side-by-side benchmarks: tables, timing, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# `make bench` runs `.venv/bin/python bench/run_all.py`: then sys.executable is cairn's.
CAIRN_PYTHON = Path(sys.executable)
CAIRN_BIN = CAIRN_PYTHON.parent / "cairn"


def compile_trees(*extra: Path) -> list[str]:
    """Precompile cairn's source and its venv (PYTHONDONTWRITEBYTECODE=1 is set here).

    Without it every process would compile SQLAlchemy, click, ... from source on each
    start, which is not what a user's installed cairn does. Returns what was compiled.
    """
    venv_lib = CAIRN_PYTHON.parent.parent / "lib"
    trees = [SRC / "cairn", venv_lib, *extra]
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for tree in trees:
        subprocess.run([str(CAIRN_PYTHON), "-m", "compileall", "-q", "-j", "0", str(tree)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=False)
    return [str(t) for t in trees]


def cairn_version() -> str:
    try:
        import importlib.metadata as md

        return md.version("cairn")
    except Exception:  # pragma: no cover - not installed
        return "?"


def machine_line() -> str:
    cpus = os.cpu_count()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = cpus
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"machine: {affinity} CPUs usable ({cpus} online){', ' + model if model else ''}; "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}")


def median_time(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn()`` over ``runs`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def time_command(argv: Sequence[str], *, cwd: Path | None = None, env: dict | None = None,
                 check: bool = True) -> float:
    """Wall seconds of one subprocess run (its output discarded)."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def fmt_rate(points_per_s: float | None) -> str:
    if points_per_s is None:
        return "—"
    if points_per_s >= 1e6:
        return f"{points_per_s / 1e6:.2f}M pts/s"
    if points_per_s >= 1e3:
        return f"{points_per_s / 1e3:.1f}k pts/s"
    return f"{points_per_s:.0f} pts/s"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def ratio(cairn_speed: float | None, peer_speed: float | None) -> str:
    """cairn speed / peer speed (for times, pass 1/time), e.g. ``"31.2×"``."""
    if not cairn_speed or not peer_speed:
        return "—"
    r = cairn_speed / peer_speed
    return f"{r:,.1f}×" if r >= 10 else f"{r:.2f}×"


def print_table(title: str, rows: Sequence[Sequence[str]], notes: Sequence[str] = (),
                headers: Sequence[str] = ("work", "peer", "cairn", "ratio")) -> str:
    """Print (and return) a plain-text table with a title and notes under it."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return " | ".join([first, *rest])

    out = [f"== {title} ==", line(cells[0]), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    out += [f"  {n}" for n in notes]
    text = "\n".join(out)
    print(text, flush=True)
    return text
