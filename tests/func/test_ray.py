"""The Ray backend against a real local cluster: a head and two workers with `ray start`.

Worker A advertises the custom resource ``nodeA``, worker B ``nodeB``; environments ask for
one or the other, so where each execution ran is observable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # noqa: F401 - the ray extra is part of `make test`: missing means failing, not skipping

from cairn.client import Client
from cairn.testing.raycluster import RayCluster, ray_cluster, ray_env

from .conftest import cairn_proc, pid_alive, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster() as running:
        yield running


def configure(project: Path, address: str) -> None:
    data = project / ".cairn"
    data.mkdir(exist_ok=True)
    (data / "config.toml").write_text(f"""\
[environments.node-a]
backend = "ray"
address = "{address}"
resources = {{ nodeA = 1 }}
price-per-hour = 1.8

[environments.node-b]
backend = "ray"
address = "{address}"
resources = {{ nodeB = 1 }}

[environments.anywhere]
backend = "ray"
address = "{address}"

[environments.nowhere]
backend = "ray"
address = "127.0.0.1:9"
""")


def cairn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return cairn_proc(*args, env=ray_env(), timeout=timeout)


def sleep_running_on(project: Path, environment: str):  # noqa: ANN201
    """Start a long `sleep` step detached on ``environment``; wait until it runs on a node.
    Returns its counter and a function that reads it again."""
    started = cairn("run", "sleep", "--seconds=120", "--environment", environment, "-d")
    assert started.returncode == 0, started.stderr
    with Client(project) as client:
        counter = max(e.counter for e in client.executions())

    def execution():  # noqa: ANN202
        with Client(project) as client:
            return client.execution(counter)

    wait_for(lambda: execution().status.value == "running" and execution().node, timeout=60,
             what=f"#{counter} running on {environment}")
    return counter, execution


@pytest.fixture
def ray_project(project: Path, cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    configure(project, cluster.address)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    return project


def test_placement_by_resources_outputs_metrics_and_cost(ray_project: Path,
                                                         cluster: RayCluster) -> None:
    a = cairn("run", "hello", "--count=4", "--environment", "node-a")
    assert a.returncode == 0, a.stderr
    assert "args: --count=4" in a.stdout  # the output streamed back to this terminal
    b = cairn("run", "hello", "--environment", "node-b", "-q")
    assert b.returncode == 0, b.stderr
    with Client(ray_project) as client:
        on_a, on_b = client.execution(1), client.execution(2)
    assert on_a.status.value == "complete" and on_b.status.value == "complete"
    assert on_a.node.split()[-1] == cluster.node_ids["nodeA"]
    assert on_b.node.split()[-1] == cluster.node_ids["nodeB"]
    assert {d.name for d in on_a.outputs} == {"result.txt", "sub/deep.txt"}
    assert on_a.metrics["final_loss"] == 0.125 and on_a.metrics["accuracy"] == 0.75
    assert on_a.machine_environment == "node-a" and on_a.cost is not None
    logs = cairn("logs", "1")
    assert "args: --count=4" in logs.stdout
    ls = cairn("ls")
    assert "node-a" in ls.stdout and "node-b" in ls.stdout and "total cost" in ls.stderr


def test_live_logs_and_stop(ray_project: Path) -> None:
    started = cairn("run", "sleep", "--seconds=60", "--environment", "node-b", "-d")
    assert started.returncode == 0, started.stderr

    def status() -> str:
        with Client(ray_project) as client:
            return client.execution(1).status.value

    wait_for(lambda: status() == "running", timeout=60, what="running on the cluster")
    wait_for(lambda: '"started"' in cairn("logs", "1").stdout, timeout=30,
             what="a live log line")
    t0 = time.monotonic()
    assert cairn("stop", "1").returncode == 0
    wait_for(lambda: status() == "stopped", timeout=40, what="stopped")
    assert time.monotonic() - t0 < 30
    with Client(ray_project) as client:
        assert client.execution(1).ended_at is not None


def test_submit_time_errors(ray_project: Path) -> None:
    too_big = cairn("run", "hello", "--environment", "node-a", "--gpus", "1")
    assert too_big.returncode != 0
    assert "1 GPU(s) but a machine of 'node-a' has 0" in too_big.stderr
    unreachable = cairn("run", "hello", "--environment", "nowhere", timeout=60)
    assert unreachable.returncode != 0
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in unreachable.stderr
    with Client(ray_project) as client:
        assert client.executions() == []  # nothing queued forever


def test_a_missing_ray_is_a_clear_error(project: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from cairn.executors.ray_backend import import_ray\n"
            "try:\n    import_ray()\nexcept Exception as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "pip install 'cairn[ray]'" in out


def gateways(address: str) -> list[int]:
    """Pids of cairn's gateway processes to ``address`` on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"serve_gateway" in a for a in argv) and address.encode() in argv:
            found.append(int(entry.name))
    return found


def test_runs_share_one_gateway_to_the_cluster(ray_project: Path, cluster: RayCluster) -> None:
    from cairn.executors.ray_backend import stop_gateway

    for _ in range(2):
        run = cairn("run", "hello", "--environment", "node-a", "-q")
        assert run.returncode == 0, run.stderr
    (gateway,) = gateways(cluster.address)  # one, kept between runs
    assert stop_gateway(cluster.address) == 1
    wait_for(lambda: not pid_alive(gateway), timeout=20, what="the gateway's end")
    again = cairn("run", "hello", "--environment", "node-b", "-q")  # starts another
    assert again.returncode == 0, again.stderr
    assert len(gateways(cluster.address)) == 1


def test_without_the_gateway_each_process_joins_the_cluster(ray_project: Path,
                                                            cluster: RayCluster) -> None:
    from cairn.executors.ray_backend import stop_gateway

    stop_gateway(cluster.address)
    wait_for(lambda: not gateways(cluster.address), timeout=20, what="no gateway")
    run = cairn_proc("run", "hello", "--count=2", "--environment", "node-b",
                     env={**ray_env(), "CAIRN_RAY_GATEWAY": "0"}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "args: --count=2" in run.stdout
    assert not gateways(cluster.address)
    with Client(ray_project) as client:
        (execution,) = client.executions()
    assert execution.node.split()[-1] == cluster.node_ids["nodeB"]
    assert {d.name for d in execution.outputs} == {"result.txt", "sub/deep.txt"}


def test_a_pipeline_on_the_cluster_and_its_result_cache(ray_project: Path,
                                                        cluster: RayCluster) -> None:
    yaml = (ray_project / "cairn.yaml").read_text()
    (ray_project / "cairn.yaml").write_text(yaml + """\
- pipeline:
    name: spread
    nodes:
      - {name: on-a, type: execution, step: hello, override: {environment: node-a}}
      - {name: on-b, type: execution, step: copy, override: {environment: node-b}}
    edges:
      - [on-a.output.result.txt, on-b.input.data]
""")
    first = cairn("pipeline", "run", "spread", "--reuse")
    assert first.returncode == 0, first.stderr
    second = cairn("pipeline", "run", "spread", "--reuse")
    assert second.returncode == 0, second.stderr
    assert "on-a: reused" in second.stderr and "on-b: reused" in second.stderr
    with Client(ray_project) as client:
        runs = sorted(client.executions(), key=lambda e: e.counter)
    assert len(runs) == 2  # the second pipeline ran nothing
    assert runs[0].node.split()[-1] == cluster.node_ids["nodeA"]
    assert runs[1].node.split()[-1] == cluster.node_ids["nodeB"]
    assert [f.name for f in runs[1].inputs] == ["result.txt"]


def test_a_sweep_on_the_cluster_runs_its_trials_side_by_side(ray_project: Path,
                                                            cluster: RayCluster) -> None:
    """Two trials, two 1-CPU workers, parallelism 2: one trial on each node, at once."""
    swept = cairn("task", "run", "sleep", "-p", "seconds=2,2.5", "-j", "2",
                  "--environment", "anywhere")
    assert swept.returncode == 0, swept.stderr
    with Client(ray_project) as client:
        trials = [e for e in client.executions() if e.title and "trial" in e.title]
    assert len(trials) == 2 and all(e.status.value == "complete" for e in trials)
    assert {e.node.split()[-1] for e in trials} == set(cluster.node_ids.values())
    first, second = sorted(trials, key=lambda e: e.started_at)
    assert second.started_at < first.ended_at  # they overlapped


def step_processes(execution_id: str) -> dict[int, tuple[int, int]]:
    """pid → (parent pid, process group) of the processes of an execution's step."""
    mark = f"CAIRN_EXECUTION_ID={execution_id}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[1]), int(fields[2]))
        except (OSError, ValueError):
            continue
    return found


def test_a_step_whose_worker_died_is_ended_by_the_next_run_on_its_node(
        ray_project: Path, cluster: RayCluster) -> None:
    import signal

    _, execution = sleep_running_on(ray_project, "node-a")
    wait_for(lambda: bool(step_processes(execution().id)), timeout=10, what="its processes")
    step = step_processes(execution().id)
    (leader,) = [pid for pid, (_, group) in step.items() if pid == group]
    os.kill(step[leader][0], signal.SIGKILL)  # the Ray worker running it, as an OOM kill would
    wait_for(lambda: execution().status.value == "crashed", timeout=60, what="crashed")
    assert "died" in execution().status_detail
    assert step_processes(execution().id)  # the step itself outlived its worker
    again = cairn("run", "hello", "--environment", "node-a", "-q")
    assert again.returncode == 0, again.stderr
    wait_for(lambda: not step_processes(execution().id), timeout=10, what="the orphan's end")


RESUMABLE = """\
import os, pathlib, sys, time
restart = pathlib.Path(os.environ["CAIRN_INPUTS_DIR"]) / "_restart" / "ckpt.txt"
if restart.exists():
    print("restarted from", restart.read_text(), flush=True)
    sys.exit(0)
ckpt = pathlib.Path(os.environ["CAIRN_OUTPUTS_DIR"]) / "ckpt.txt"
ckpt.write_text("epoch 7")
ckpt.chmod(0o444)  # a live output: stored while the step runs
print("checkpoint written", flush=True)
time.sleep(300)
"""


def test_a_step_whose_node_dies_restarts_on_another_from_its_live_checkpoint(
        ray_project: Path, cluster: RayCluster) -> None:
    """Kills worker A for good: after the tests that use it, before the one killing B.

    The step's environment asks for no custom resource, so its restart can run on any node;
    worker B's only CPU is taken while the first run is placed, so that one lands on A.
    """
    from cairn.entities import Status
    from cairn.orchestration.context import Context

    from .test_queue import stop_scheduler

    (ray_project / "resumable.py").write_text(RESUMABLE)
    with open(ray_project / "cairn.yaml", "a") as yaml:
        yaml.write("- step:\n    name: resumable\n    image: python:3.11\n"
                   "    command: python resumable.py\n    autorestart: 1\n")
    ctx = Context.load(ray_project)

    def get(ref: str):  # noqa: ANN202
        return ctx.store.get_execution(ctx.project_id, ref)

    def detach(*args: str) -> str:
        run = cairn("run", *args, "-d")
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    def on_node(ref: str) -> str:
        node = get(ref).node
        return node.split()[-1] if node else ""

    try:
        blocker = detach("sleep", "--seconds=300", "--environment", "node-b")
        wait_for(lambda: get(blocker).status == Status.RUNNING and bool(on_node(blocker)),
                 timeout=60, what="a step holding worker B's CPU")
        first = detach("resumable", "--environment", "anywhere")
        wait_for(lambda: [d.name for d in ctx.store.list_datums(ctx.project_id,
                                                                execution_id=first)]
                 == ["ckpt.txt"], timeout=60, what="the live checkpoint stored while it runs")
        assert get(first).status == Status.RUNNING
        assert on_node(first) == cluster.node_ids["nodeA"]
        (checkpoint,) = ctx.store.list_datums(ctx.project_id, execution_id=first)
        assert cairn("stop", blocker).returncode == 0  # worker B has room again
        wait_for(lambda: get(blocker).status.is_final, timeout=40, what="the blocker's end")

        cluster.kill_node("nodeA")
        wait_for(lambda: get(first).status.is_final, timeout=90,
                 what="the end of the run whose node died")
        crashed = get(first)
        assert crashed.status == Status.CRASHED, crashed.status_detail
        assert cluster.node_ids["nodeA"][:12] in crashed.status_detail
        assert "died" in crashed.status_detail

        def restarts() -> list:  # queued by its supervisor just after it recorded the crash
            return [e for e in ctx.store.list_executions(ctx.project_id)
                    if e.restart_of is not None]

        wait_for(lambda: bool(restarts()), timeout=30, what="the automatic restart")
        (restart,) = restarts()
        assert restart.restart_of == crashed.id
        assert [(f.input_name, f.name, f.uri, f.datum_id, f.digest) for f in restart.inputs] == [
            ("_restart", "ckpt.txt", f"datum://{checkpoint.id}", checkpoint.id,
             checkpoint.digest)]
        wait_for(lambda: get(restart.id).status.is_final, timeout=120, what="the restart's end")
        done = get(restart.id)
        assert done.status == Status.COMPLETE, done.status_detail
        assert on_node(restart.id) == cluster.node_ids["nodeB"]
        assert "restarted from epoch 7" in cairn("logs", str(done.counter)).stdout
    finally:
        stop_scheduler(ray_project)


def test_a_node_that_dies_mid_run_crashes_its_execution(ray_project: Path,
                                                         cluster: RayCluster) -> None:
    """Last in this module: it kills worker B for good."""
    counter, execution = sleep_running_on(ray_project, "node-b")
    cluster.kill_node("nodeB")
    try:
        wait_for(lambda: execution().status.value != "running", timeout=90,
                 what=f"the end of #{counter} after its node died")
    except AssertionError:
        import signal

        os.kill(execution().pid, signal.SIGUSR1)
        time.sleep(1)
        logs = sorted((ray_project / ".cairn" / "logs").glob("*.supervisor.log"))
        raise AssertionError(logs[-1].read_text()[-3000:] if logs else "no supervisor log")
    assert execution().status.value == "crashed", execution().status_detail
    assert "died" in execution().status_detail
