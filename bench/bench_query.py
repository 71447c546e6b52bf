"""List executions sorted by a metric: cairn vs MLflow ``search_runs`` (SQLite).

cairn: a temporary project (a ``cairn.yaml``; the project name is the folder's name, the
database ``.cairn/cairn.db`` inside it, as ``cairn`` itself derives them) filled with
``cairn.testing.populate`` up to each size N, then

- ``store.list_executions(project_id, sort="metric:accuracy", limit=50)`` in process
  (median of several calls after one warm-up), and
- the whole ``cairn ls --sort accuracy -n 50`` command run from the project folder
  (subprocess wall time, median of several runs after one warm-up).

MLflow (``bench/_mlflow_query.py`` in ``.bench-venv``): the same runs in a SQLite tracking
store, ``MlflowClient().search_runs(order_by=["metrics.accuracy DESC"], max_results=50)``
in process and from a fresh interpreter. See that file for how its runs are created.

Run with cairn's interpreter: ``.venv/bin/python bench/bench_query.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import _peers  # noqa: E402


def cairn_side(base: Path, sizes: list[int], repeat: int, cli_repeat: int) -> list[dict]:
    from cairn.orchestration.context import Context
    from cairn.testing.populate import populate

    folder = base / "querybench"
    folder.mkdir()
    (folder / "cairn.yaml").write_text(
        "- step:\n    name: train\n    image: python:3.11\n    command: python train.py\n")
    ctx = Context.load(folder)
    assert ctx.settings.project_name == folder.name
    assert ctx.settings.database_url == f"sqlite:///{folder / '.cairn' / 'cairn.db'}"
    store, project_id = ctx.store, ctx.project_id
    results = []
    have = 0
    try:
        for size in sizes:
            t0 = time.perf_counter()
            populate(store, project_id, size - have, seed=size)
            have = size
            build = time.perf_counter() - t0
            count = store.count_executions(project_id)

            def query():
                return store.list_executions(project_id, sort="metric:accuracy", limit=50)

            median, times = C.median_time(query, repeat, warmup=1)
            rows = query()
            values = [e.metrics["accuracy"] for e in rows]
            ok = len(rows) == 50 and values == sorted(values, reverse=True) and count == size

            argv = [str(C.CAIRN_BIN), "ls", "--sort", "accuracy", "-n", "50"]
            out = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
            ok = ok and out.returncode == 0 and len(out.stdout.splitlines()) == 51
            cli_times = [C.time_command(argv, cwd=folder) for _ in range(cli_repeat)]
            results.append({"n": size, "count": count, "build_seconds": build,
                            "median": median, "times": times,
                            "cli_median": statistics.median(cli_times), "cli_times": cli_times,
                            "ok": ok, "top": values[:3]})
            print(f"[cairn] N={size:,}: populate {build:.2f}s, list {median * 1000:.2f} ms, "
                  f"`cairn ls` {statistics.median(cli_times):.3f}s", file=sys.stderr, flush=True)
    finally:
        ctx.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,10000,100000",
                        help="comma list of execution counts (cairn and MLflow)")
    parser.add_argument("--mlflow-sizes", default="2000,10000",
                        help="sizes for MLflow. Its search_runs time grows faster than "
                             "linearly (trial here: 0.28 s at 2,000, 2.6 s at 5,000, 7.5 s "
                             "at 10,000; at 100,000 one call had not returned after 14 min), "
                             "so 100,000 is left out by default")
    parser.add_argument("--mlflow-api-runs", type=int, default=2000,
                        help="runs MLflow creates through its public API (rest: bulk copies)")
    parser.add_argument("--repeat", type=int, default=7, help="timed in-process calls")
    parser.add_argument("--cli-repeat", type=int, default=5, help="timed `cairn ls` runs")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    mlflow_sizes = sorted(int(s) for s in args.mlflow_sizes.split(","))

    if not args.no_compile:
        C.compile_trees()
    if not args.no_peers:
        _peers.ensure_peers()
        if not args.no_compile:
            _peers.compile_peers()

    base = Path(tempfile.mkdtemp(prefix="cairn-bench-query-"))
    started = time.perf_counter()
    try:
        cairn = cairn_side(base, sizes, args.repeat, args.cli_repeat)
        peer = None
        if not args.no_peers:
            peer = _peers.run_peer("_mlflow_query.py", str(base / "mlflow.db"),
                                   ",".join(map(str, mlflow_sizes)), str(args.mlflow_api_runs),
                                   str(min(args.repeat, 3)), timeout=1800)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    total = time.perf_counter() - started

    for r in cairn:
        if not r["ok"]:
            raise SystemExit(f"cairn result at N={r['n']} is wrong: {r}")
    by_n = {r["n"]: r for r in (peer["results"] if peer else [])}
    for r in by_n.values():
        if not r["ok"]:
            raise SystemExit(f"MLflow result at N={r['n']} is wrong: {r}")

    rows = []
    for r in cairn:
        p = by_n.get(r["n"])
        rows.append([f"top 50 by accuracy, N={r['n']:,}, in process",
                     C.fmt_seconds(p["search_median"]) if p else "—",
                     C.fmt_seconds(r["median"]),
                     C.ratio(1 / r["median"], 1 / p["search_median"]) if p else "—"])
    for r in cairn:
        p = by_n.get(r["n"])
        rows.append([f"  whole command, N={r['n']:,} (`cairn ls --sort accuracy -n 50`)",
                     C.fmt_seconds(p["one_shot"]) if p else "—",
                     C.fmt_seconds(r["cli_median"]),
                     C.ratio(1 / r["cli_median"], 1 / p["one_shot"]) if p else "—"])
    for n, p in by_n.items():  # sizes only MLflow was built at
        if n not in {r["n"] for r in cairn}:
            rows.append([f"top 50 by accuracy, N={n:,}, in process",
                         C.fmt_seconds(p["search_median"]), "—", "—"])
    notes = [
        C.machine_line(),
        f"cairn {C.cairn_version()}; "
        + (f"mlflow {peer['version']} (.bench-venv), SQLite tracking URI" if peer else
           "peers skipped"),
        f"cairn: SQLite store filled by cairn.testing.populate; in process = median of "
        f"{args.repeat} list_executions calls after 1 warm-up; command = median of "
        f"{args.cli_repeat} `cairn ls` runs after 1 untimed run.",
        "cairn populate: " + ", ".join(f"N={r['n']:,} {r['build_seconds']:.1f}s" for r in cairn),
    ]
    if peer:
        api_rate = peer["api_made"] / peer["api_seconds"] if peer["api_seconds"] else 0
        notes += [
            f"MLflow: first {peer['api_made']:,} runs via the public API ({api_rate:.0f} runs/s:"
            f" create_run + log_batch + set_terminated), the rest bulk copies of an API run "
            f"through MLflow's own SQLAlchemy tables; in process = median of "
            f"{min(args.repeat, 3)} search_runs calls after 1 warm-up (1 call when a call "
            f"takes > 5 s); command = one fresh interpreter importing mlflow and searching.",
            "MLflow built at N=" + ", ".join(f"{p['n']:,} ({p['build_seconds']:.1f}s)"
                                             for p in peer["results"])
            + "; not at larger N: search_runs grows superlinearly (see --mlflow-sizes).",
        ]
    notes.append(f"whole bench took {total:.0f}s; "
                 + ("bytecode precompiled (compileall) for src/cairn, .venv, .bench-venv."
                    if not args.no_compile else "no compileall"))
    C.print_table("list executions sorted by a metric", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
