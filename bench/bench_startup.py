"""Start-up cost: ``cairn --help`` and a no-op execution end to end (no peer).

- ``python -c pass`` with cairn's interpreter: the floor any Python CLI pays;
- ``cairn --help``: median of 10 runs;
- ``cairn run noop -q`` of a step whose command is ``true``, in a temporary project:
  median of 10 runs after 1 warm-up run (which creates the database).

Run with cairn's interpreter: ``.venv/bin/python bench/bench_startup.py``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def _median_command(argv: list[str], runs: int, warmup: int, cwd: Path | None = None
                    ) -> tuple[float, list[float]]:
    for _ in range(warmup):
        C.time_command(argv, cwd=cwd)
    times = [C.time_command(argv, cwd=cwd) for _ in range(runs)]
    return statistics.median(times), times


def profile_noop(folder: Path) -> list[str]:
    """Where a no-op `cairn run` spends its import time (``-X importtime``, top level)."""
    proc = subprocess.run([str(C.CAIRN_PYTHON), "-X", "importtime", str(C.CAIRN_BIN), "run",
                           "noop", "-q"], cwd=folder, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        if name.startswith("  "):  # nested import: counted in its parent
            continue
        rows.append((int(cumulative), name.strip()))
    rows.sort(reverse=True)
    total = sum(us for us, _ in rows)
    top = ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in rows[:8])
    return [f"`cairn run noop` imports {total / 1000:.0f} ms in all (-X importtime); "
            f"largest top-level: {top}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-peers", action="store_true", help="(no peers here; accepted)")
    parser.add_argument("--no-importtime", action="store_true",
                        help="skip showing which imports dominate a no-op run")
    args = parser.parse_args(argv)
    if not args.no_compile:
        C.compile_trees()

    base = Path(tempfile.mkdtemp(prefix="cairn-bench-startup-"))
    try:
        folder = base / "noopbench"
        folder.mkdir()
        (folder / "cairn.yaml").write_text(
            '- step:\n    name: noop\n    image: python:3.11\n    command: "true"\n')
        floor, floor_times = _median_command([str(C.CAIRN_PYTHON), "-c", "pass"], args.runs, 1)
        helps, help_times = _median_command([str(C.CAIRN_BIN), "--help"], args.runs, 1)
        noop, noop_times = _median_command([str(C.CAIRN_BIN), "run", "noop", "-q"], args.runs, 1,
                                           cwd=folder)
        import cairn

        with cairn.Client(folder) as client:
            runs = client.executions()
            statuses = {r.status.value for r in runs}
            count = len(runs)
        if statuses != {"complete"} or count != args.runs + 1:
            raise SystemExit(f"no-op runs ended {statuses} ({count} of {args.runs + 1})")
        extra = [] if args.no_importtime else profile_noop(folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rows = [
        ["`python -c pass` (floor)", "—", C.fmt_seconds(floor), "—"],
        ["`cairn --help`", "—", C.fmt_seconds(helps), "—"],
        ["no-op execution end to end (`cairn run noop -q`, command `true`)", "—",
         C.fmt_seconds(noop), "—"],
    ]
    notes = [
        C.machine_line(),
        f"cairn {C.cairn_version()} ({C.CAIRN_PYTHON}); no peer for this work.",
        f"median of {args.runs} runs after 1 warm-up each; all {args.runs + 1} no-op "
        f"executions verified complete.",
        f"no-op runs: {', '.join(f'{t:.3f}' for t in noop_times)} s; --help: "
        f"{', '.join(f'{t:.3f}' for t in help_times)} s",
        *extra,
        "bytecode precompiled (compileall) for src/cairn and .venv before timing."
        if not args.no_compile else "no compileall",
    ]
    C.print_table("start-up", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
