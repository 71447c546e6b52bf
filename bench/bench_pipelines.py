"""Pipelines side by side with ``dvc repro``: a cached re-run, a first run, scheduling overhead.

(a) A 50-stage DAG (5 chains of 10 stages; each stage writes one small file from the one
    before it) run by ``dvc repro`` and by ``cairn pipeline run --reuse``: first run and a
    fully cached re-run, each timed end to end (process start to exit). DVC runs stages one
    at a time; cairn runs independent nodes in parallel.
(b) Scheduling overhead: a 200-node pipeline of no-op steps (``true``) against the same 200
    processes started directly (``subprocess``) with the same parallelism (this machine's
    CPUs: each step asks for one).

    .venv/bin/python bench/bench_pipelines.py              # (a) with DVC and (b)
    .venv/bin/python bench/bench_pipelines.py --no-peers   # cairn only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

CHAINS, DEPTH = 5, 10


def _stage_name(chain: int, level: int) -> str:
    return f"s{chain}_{level}"


def cairn_dag_project(root: Path) -> None:
    """cairn.yaml: the 50-node DAG; each node copies its input and appends a line."""
    lines = [
        "- step:\n    name: stage\n    image: python:3.11\n    command: python stage.py\n"
        "    inputs:\n      - name: prev\n        optional: true\n",
        "- step:\n    name: noop\n    image: python:3.11\n    command: \"true\"\n",
        "- pipeline:\n    name: dag\n    reuse-executions: true\n    nodes:\n",
    ]
    for c in range(CHAINS):
        for level in range(DEPTH):
            lines.append(f"      - {{name: {_stage_name(c, level)}, type: execution, step: stage}}\n")
    lines.append("    edges:\n")
    for c in range(CHAINS):
        for level in range(1, DEPTH):
            lines.append(f"      - [{_stage_name(c, level - 1)}.output.out.txt, "
                         f"{_stage_name(c, level)}.input.prev]\n")
    lines.append("- pipeline:\n    name: wide\n    nodes:\n")
    for i in range(200):
        lines.append(f"      - {{name: n{i}, type: execution, step: noop}}\n")
    lines.append("    edges: []\n")
    (root / "cairn.yaml").write_text("".join(lines))
    (root / "stage.py").write_text(
        "import glob, os\n"
        "prev = glob.glob(os.environ['CAIRN_INPUTS_DIR'] + '/prev/*')\n"
        "text = open(prev[0]).read() if prev else ''\n"
        "open(os.environ['CAIRN_OUTPUTS_DIR'] + '/out.txt', 'w').write(text + 'x\\n')\n")


def dvc_dag_project(root: Path, dvc: str, env: dict[str, str]) -> None:
    """dvc.yaml: the same DAG; each stage copies the previous file and appends a line."""
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    stages = ["stages:\n"]
    for c in range(CHAINS):
        for level in range(DEPTH):
            name = _stage_name(c, level)
            out = f"out/{name}.txt"
            if level == 0:
                cmd = f"mkdir -p out && echo x > {out}"
                deps = ""
            else:
                prev = f"out/{_stage_name(c, level - 1)}.txt"
                cmd = f"cp {prev} {out} && echo x >> {out}"
                deps = f"    deps:\n      - {prev}\n"
            stages.append(f"  {name}:\n    cmd: {cmd}\n{deps}    outs:\n      - {out}\n")
    (root / "dvc.yaml").write_text("".join(stages))


def cairn_run(root: Path, *args: str) -> float:
    return C.time_command([str(C.CAIRN_BIN), "pipeline", "run", *args], cwd=root)


def direct(count: int, parallel: int) -> float:
    """``count`` runs of ``true`` with ``parallel`` at once, straight from Python."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: subprocess.run(["true"], check=True), range(count)))
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-peers", action="store_true", help="cairn only, no DVC")
    args = p.parse_args(argv)
    C.compile_trees()
    rows: list[list[str]] = []
    notes = [C.machine_line()]
    with tempfile.TemporaryDirectory(prefix="cairn-bench-pipes-") as tmp:
        work = Path(tmp)
        project = work / "cairn"
        project.mkdir()
        cairn_dag_project(project)
        first = cairn_run(project, "dag")
        cached = [cairn_run(project, "dag") for _ in range(3)]
        cached_s = sorted(cached)[1]
        dvc_first = dvc_cached = None
        if not args.no_peers:
            import _peers

            dvc = str(_peers.ensure_dvc())
            env = _peers.dvc_env()
            version = subprocess.run([dvc, "--version"], capture_output=True, text=True,
                                     env=env).stdout.strip()
            repo = work / "dvc"
            repo.mkdir()
            dvc_dag_project(repo, dvc, env)
            dvc_first = C.time_command([dvc, "repro", "-q"], cwd=repo, env=env)
            dvc_cached = sorted(C.time_command([dvc, "repro", "-q"], cwd=repo, env=env)
                                for _ in range(3))[1]
            notes.append(f"DVC {version}: `dvc repro` of the same 50 stages")
        rows.append(["50-node DAG, first run", C.fmt_seconds(dvc_first), C.fmt_seconds(first),
                     C.ratio(1 / first, 1 / dvc_first if dvc_first else None)])
        rows.append(["50-node DAG, fully cached re-run (median of 3)", C.fmt_seconds(dvc_cached),
                     C.fmt_seconds(cached_s),
                     C.ratio(1 / cached_s, 1 / dvc_cached if dvc_cached else None)])
        parallel = max(1, os.cpu_count() or 1)
        base = min(direct(200, parallel) for _ in range(3))
        wide = cairn_run(project, "wide")
        rows.append([f"200 no-op steps, {parallel} at a time: direct vs cairn pipeline",
                     C.fmt_seconds(base), C.fmt_seconds(wide), f"{wide / base:.1f}× the time"])
        # What the whole command costs before its first node: the CLI's start, and the
        # CLI plus opening the metadata database (`cairn queue`, here an empty list).
        start = min(C.time_command([str(C.CAIRN_BIN), "--version"], cwd=project)
                    for _ in range(3))
        opened = min(C.time_command([str(C.CAIRN_BIN), "queue"], cwd=project)
                     for _ in range(3))
        rows.append(["  floor: `cairn --version` (the CLI's start)", "", C.fmt_seconds(start),
                     f"{start / base:.1f}× direct"])
        rows.append(["  floor: `cairn queue` (start + metadata database)", "",
                     C.fmt_seconds(opened), f"{opened / base:.1f}× direct"])
        rows.append(["  per node: (200-node run − `cairn queue`) / 200 vs per process",
                     C.fmt_seconds(base / 200), C.fmt_seconds((wide - opened) / 200),
                     f"{(wide - opened) / base:.0f}×"])
        notes.append("cairn: whole `cairn pipeline run` commands (interpreter start, project "
                     "file, code snapshot, every execution recorded with its logs and outputs)")
        notes.append("targets: cached 50-node re-run < 1 s; 200-node overhead < 2× direct")
        shutil.rmtree(work / "cairn" / ".cairn", ignore_errors=True)
    C.print_table("pipelines: cairn vs DVC", rows, notes,
                  headers=("work", "DVC / direct", "cairn", "ratio"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
