"""The Ray backend on a real local cluster (a head and two 1-CPU workers, `ray start`).

(a) Overhead per execution: `cairn run` of a no-op step (`true`) on a Ray environment,
    end to end (median of several, after one that starts cairn's gateway), against running
    `true` directly, against a bare Ray task that runs `true` from a driver already joined,
    and against `cairn run` of the same step on this machine (cairn's own bookkeeping).
    Once more with CAIRN_RAY_GATEWAY=0: each `cairn run` joins the cluster itself.
(b) Throughput: 100 no-op executions queued at once (one pipeline of 100 independent
    nodes on the Ray environment) draining through the cluster's 2 CPUs, against Ray's
    own throughput for 100 tasks that each run `true` on the same cluster.

    .venv/bin/python bench/bench_ray.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

N_RUNS = 7
N_QUEUED = 100
TARGET_OVERHEAD = 1.0  # seconds over running the command directly, at the median


def project(root: Path, address: str) -> None:
    nodes = "".join(f"      - {{name: n{i}, type: execution, step: noop}}\n"
                    for i in range(N_QUEUED))
    (root / "cairn.yaml").write_text(
        "- step:\n    name: noop\n    image: python:3.11\n    command: \"true\"\n"
        "    environment: cluster\n"
        "- step:\n    name: noop-here\n    image: python:3.11\n    command: \"true\"\n"
        f"- pipeline:\n    name: hundred\n    nodes:\n{nodes}    edges: []\n")
    (root / ".cairn").mkdir()
    (root / ".cairn" / "config.toml").write_text(
        f'[environments.cluster]\nbackend = "ray"\naddress = "{address}"\n')


def ray_baseline(address: str) -> tuple[float, float]:
    """(median seconds of one task running `true`, tasks per second for 100 of them)."""
    code = f"""
import statistics, subprocess, time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1)
def noop():
    subprocess.run(["true"], check=True)
ray.get(noop.remote())
one = []
for _ in range({N_RUNS}):
    t0 = time.perf_counter(); ray.get(noop.remote()); one.append(time.perf_counter() - t0)
t0 = time.perf_counter()
ray.get([noop.remote() for _ in range({N_QUEUED})])
print(statistics.median(one), {N_QUEUED} / (time.perf_counter() - t0))
"""
    from cairn.testing.raycluster import ray_env

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ray_env(), check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def median_run(argv: list[str], root: Path, env: dict[str, str]) -> float:
    C.time_command(argv, cwd=root, env=env)  # warm-up (starts the gateway, warms workers)
    return statistics.median(C.time_command(argv, cwd=root, env=env) for _ in range(N_RUNS))


def main(argv: list[str]) -> int:
    from cairn.testing.raycluster import ray_cluster, ray_env

    C.compile_trees()
    direct = statistics.median(C.time_command(["true"]) for _ in range(N_RUNS))
    with ray_cluster() as cluster, tempfile.TemporaryDirectory(prefix="cairn-bench-ray-") as tmp:
        root = Path(tmp)
        project(root, cluster.address)
        env = ray_env()
        cairn = str(C.CAIRN_BIN)
        # Before a gateway runs: its job's idle workers would crowd the 1-CPU nodes.
        own_driver = median_run([cairn, "run", "noop", "-q"], root,
                                {**env, "CAIRN_RAY_GATEWAY": "0"})
        here = median_run([cairn, "run", "noop-here", "-q"], root, env)
        on_ray = median_run([cairn, "run", "noop", "-q"], root, env)
        ray_one, ray_rate = ray_baseline(cluster.address)
        t0 = time.perf_counter()
        C.time_command([cairn, "pipeline", "run", "hundred"], cwd=root, env=env)
        cairn_rate = N_QUEUED / (time.perf_counter() - t0)
    overhead = on_ray - direct
    verdict = "meets" if overhead < TARGET_OVERHEAD else "misses"
    rows = [
        ["one no-op execution on the cluster, end to end (median)",
         f"direct {C.fmt_seconds(direct)}; bare Ray task {C.fmt_seconds(ray_one)}",
         C.fmt_seconds(on_ray),
         f"+{overhead:.2f} s over direct ({verdict} < {TARGET_OVERHEAD:g} s); "
         f"+{on_ray - ray_one:.2f} s over Ray"],
        ["  the same, cairn on this machine (local backend)", "—", C.fmt_seconds(here),
         f"Ray backend adds {on_ray - here:+.2f} s to cairn's own bookkeeping"],
        ["  the same, each run its own Ray driver (CAIRN_RAY_GATEWAY=0)", "—",
         C.fmt_seconds(own_driver), f"+{own_driver - direct:.2f} s over direct"],
        [f"{N_QUEUED} queued no-op executions, 2 worker CPUs",
         f"Ray {ray_rate:.1f} tasks/s", f"{cairn_rate:.1f} executions/s",
         f"{cairn_rate / ray_rate:.3f}× Ray's rate (Ray {ray_rate / cairn_rate:.0f}× faster)"],
    ]
    C.print_table("Ray backend: cairn vs Ray itself", rows, [
        C.machine_line(),
        "cluster: `ray start` head (0 CPUs) + 2 workers with 1 CPU each, on this machine",
        "cairn records each execution fully (code snapshot, workspace, logs streamed back, "
        "outputs, metrics); the Ray baseline runs `subprocess.run(['true'])` in a task from "
        "a driver already joined, with warm workers",
        f"medians of {N_RUNS} runs after one warm-up (which starts cairn's gateway to the "
        "cluster)",
        f"targets: < {TARGET_OVERHEAD:g} s overhead per execution at the median; the "
        "cluster's full parallelism",
    ], headers=("work", "baseline", "cairn", "difference"))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sys.exit(main(sys.argv[1:]))
