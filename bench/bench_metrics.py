"""Metric ingestion from a running step: cairn vs MLflow (SQLite tracking store).

cairn: a temporary project whose one step (``bench/_emit_metrics.py``) prints N JSON
events ``{"step": i, "loss": ..., "accuracy": ...}`` (2 points each) as fast as it can,
run with ``cairn run emit -q``. Measured:

- points/s end to end: 2N / wall time of the whole ``cairn run`` command (interpreter
  start, code snapshot, run, every point in the DB, exit) and 2N / (``started_at`` →
  ``ended_at`` of the execution as stored, i.e. step process start → all points stored
  and outputs collected);
- the step's own runtime (it times itself) under cairn vs run bare with stdout to
  /dev/null and to a pipe drained by a plain reader;
- the DB holds exactly 2N points (``cairn.Client(...).execution(1).metric_points()``).

MLflow: the same events logged from the step itself into ``sqlite:///.../mlflow.db`` with
``mlflow.log_metric`` per point (a smaller N, rate extrapolated) and
``MlflowClient().log_batch`` in batches of 1000 (MLflow's maximum per call).

Run with cairn's interpreter: ``.venv/bin/python bench/bench_metrics.py``.
"""

from __future__ import annotations

import argparse
import json
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

EMIT = C.ROOT / "bench" / "_emit_metrics.py"


def _project(base: Path, name: str, events: int) -> tuple[Path, Path]:
    folder = base / name
    folder.mkdir(parents=True)
    shutil.copy(EMIT, folder / "emit.py")
    report = base / f"{name}.report.json"
    (folder / "cairn.yaml").write_text(
        "- step:\n"
        "    name: emit\n"
        "    image: python:3.11\n"
        f"    command: {C.CAIRN_PYTHON} emit.py {events} {report}\n"
    )
    return folder, report


def run_cairn(base: Path, events: int, index: int) -> dict:
    folder, report = _project(base, f"metrics{index}", events)
    env = dict(os.environ)
    wall = C.time_command([str(C.CAIRN_BIN), "run", "emit", "-q"], cwd=folder, env=env)
    step = json.loads(report.read_text())

    import cairn

    with cairn.Client(folder) as client:
        run = client.execution(1)
        points = run.metric_points()
        record = run.record
        status = record.status.value
        started, ended = record.started_at, record.ended_at
    expected = 2 * events
    by_key: dict[str, int] = {}
    for p in points:
        by_key[p.key] = by_key.get(p.key, 0) + 1
    ok = (len(points) == expected and by_key == {"loss": events, "accuracy": events}
          and status == "complete")
    if not ok:
        raise SystemExit(f"cairn stored {len(points)} points {by_key} (status {status}), "
                         f"expected {expected}")
    first, last = points[0].time, points[-1].time
    return {
        "wall": wall,
        "db_seconds": (ended - started).total_seconds(),
        "step_wall": step["wall"],
        "step_cpu": step["cpu"],
        "read_span": last - first,  # first to last line read by cairn
        "points": len(points),
    }


def run_bare(base: Path, events: int, sink: str) -> dict:
    report = base / f"bare-{sink}.json"
    argv = [str(C.CAIRN_PYTHON), str(EMIT), str(events), str(report)]
    if sink == "devnull":
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    else:  # a pipe drained as fast as possible by a plain reader
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        while proc.stdout.read(1 << 20):
            pass
        proc.wait()
    return json.loads(report.read_text())


def _list(rows: list[dict], key: str) -> str:
    return ", ".join(f"{r[key]:.2f}s" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000,
                        help="events the cairn step prints (2 points each)")
    parser.add_argument("--repeat", type=int, default=3, help="cairn runs (median is shown)")
    parser.add_argument("--mlflow-metric-events", type=int, default=2_000,
                        help="events for MLflow log_metric (slow: rate is extrapolated)")
    parser.add_argument("--mlflow-batch-events", type=int, default=None,
                        help="events for MLflow log_batch (default: --events)")
    parser.add_argument("--no-peers", action="store_true", help="cairn only")
    parser.add_argument("--no-compile", action="store_true", help="skip compileall")
    args = parser.parse_args(argv)
    events = args.events
    batch_events = args.mlflow_batch_events or events
    points = 2 * events

    if not args.no_compile:
        C.compile_trees()
    peers_ok = not args.no_peers
    if peers_ok:
        _peers.ensure_peers()
        if not args.no_compile:
            _peers.compile_peers()

    base = Path(tempfile.mkdtemp(prefix="cairn-bench-metrics-"))
    try:
        bare_null = [run_bare(base, events, "devnull") for _ in range(args.repeat)]
        bare_pipe = [run_bare(base, events, "pipe") for _ in range(args.repeat)]
        runs = [run_cairn(base, events, i) for i in range(args.repeat)]

        mlflow_metric = mlflow_batch = None
        if peers_ok:
            mlflow_metric = _peers.run_peer("_mlflow_metrics.py", "log_metric",
                                            str(args.mlflow_metric_events),
                                            str(base / "mlflow-metric.db"))
            mlflow_batch = _peers.run_peer("_mlflow_metrics.py", "log_batch", str(batch_events),
                                           str(base / "mlflow-batch.db"))
            for result in (mlflow_metric, mlflow_batch):
                if result["stored"] != result["points"]:
                    raise SystemExit(f"MLflow stored {result['stored']} of {result['points']}")
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    wall, db_s = med(runs, "wall"), med(runs, "db_seconds")
    step_cairn = med(runs, "step_wall")
    step_null, step_pipe = med(bare_null, "wall"), med(bare_pipe, "wall")
    cairn_e2e = points / wall
    cairn_db = points / db_s

    rate_metric = rate_batch = None
    if mlflow_metric:
        rate_metric = mlflow_metric["points"] / mlflow_metric["seconds"]
        rate_batch = mlflow_batch["points"] / mlflow_batch["seconds"]

    rows = [
        [f"{points:,} points, whole `cairn run` (vs MLflow log_metric per point)",
         C.fmt_rate(rate_metric), C.fmt_rate(cairn_e2e), C.ratio(cairn_e2e, rate_metric)],
        [f"{points:,} points, whole `cairn run` (vs MLflow log_batch ×1000)",
         C.fmt_rate(rate_batch), C.fmt_rate(cairn_e2e), C.ratio(cairn_e2e, rate_batch)],
        ["  same, step process start → all points stored (DB times)",
         C.fmt_rate(rate_batch), C.fmt_rate(cairn_db), C.ratio(cairn_db, rate_batch)],
    ]
    if mlflow_batch:
        # With MLflow the step itself makes the (synchronous) calls: its runtime grows.
        mlflow_step = points / rate_batch
        rows.append([f"step runtime emitting {points:,} points (MLflow: log_batch inline)",
                     C.fmt_seconds(mlflow_step), C.fmt_seconds(step_cairn),
                     C.ratio(1 / step_cairn, 1 / mlflow_step)])
    rows += [
        ["step runtime: bare, stdout → pipe (peer) vs under cairn",
         C.fmt_seconds(step_pipe), C.fmt_seconds(step_cairn), C.ratio(1 / step_cairn, 1 / step_pipe)],
        ["step runtime: bare, stdout → /dev/null (peer) vs under cairn",
         C.fmt_seconds(step_null), C.fmt_seconds(step_cairn), C.ratio(1 / step_cairn, 1 / step_null)],
    ]
    notes = [
        C.machine_line(),
        f"cairn {C.cairn_version()} ({C.CAIRN_PYTHON}); "
        + (f"mlflow {mlflow_batch['version']} (.bench-venv), SQLite tracking URI"
           if mlflow_batch else "peers skipped"),
        f"cairn: median of {args.repeat} `cairn run emit -q`, each in a fresh project, "
        f"{events:,} events × 2 metrics; all {points:,} points verified in the DB each time.",
        f"cairn walls: {_list(runs, 'wall')}; DB start→end: {_list(runs, 'db_seconds')}; "
        f"step under cairn: {_list(runs, 'step_wall')} "
        f"(cpu {med(runs, 'step_cpu'):.2f}s).",
    ]
    if mlflow_metric:
        notes.append(
            f"MLflow log_metric: {mlflow_metric['points']:,} points in "
            f"{mlflow_metric['seconds']:.1f}s, rate extrapolated to {points:,}; log_batch: "
            f"{mlflow_batch['points']:,} points in {mlflow_batch['seconds']:.1f}s. Only the "
            f"logging loop is timed for MLflow (not interpreter start or store setup), "
            f"all points verified via get_metric_history.")
    notes.append(("bytecode precompiled (compileall) for src/cairn, .venv"
                  + (" and .bench-venv" if peers_ok else "") + " before timing.")
                 if not args.no_compile else "no compileall")
    C.print_table("metric ingestion from a running step", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
