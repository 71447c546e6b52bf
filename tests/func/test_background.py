"""Detached runs, following logs, stopping, and several executions at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.client import Client

from .conftest import cairn_proc, pid_alive, wait_for


def status_of(project: Path, ref: str) -> str:
    from cairn.errors import NotFoundError

    with Client(project) as client:
        try:
            return client.execution(ref).status.value
        except NotFoundError:
            return "not created yet"


def test_detach_returns_at_once_and_the_run_goes_on(project: Path) -> None:
    proc = cairn_proc("run", "sleep", "--seconds=1", "--detach")
    assert proc.returncode == 0, proc.stderr
    execution_id = proc.stdout.strip()
    assert len(execution_id) == 36
    wait_for(lambda: status_of(project, execution_id) == "complete", what="detached run")
    follow = cairn_proc("logs", "1", "--follow")
    assert "gpus" in follow.stdout and '"ended"' in follow.stdout


def test_logs_follow_streams_until_the_end(project: Path) -> None:
    proc = cairn_proc("run", "sleep", "--seconds=2", "-d")
    assert proc.returncode == 0, proc.stderr
    follow = cairn_proc("logs", "1", "-f")  # returns only when the run ends
    assert status_of(project, "1") == "complete"
    assert follow.stdout.index('"started"') < follow.stdout.index('"ended"')


def test_stop_a_running_and_a_queued_execution(project: Path) -> None:
    env = {"CAIRN_LOCAL_CPUS": "1"}
    assert cairn_proc("run", "sleep", "-d", env=env).returncode == 0
    wait_for(lambda: status_of(project, "1") == "running", what="#1 running")
    assert cairn_proc("run", "sleep", "-d", env=env).returncode == 0
    wait_for(lambda: status_of(project, "2") == "queued", what="#2 queued")
    stop = cairn_proc("stop", "2", "1", env=env)
    assert stop.returncode == 0, stop.stderr
    wait_for(lambda: status_of(project, "1") == "stopped", timeout=20, what="#1 stopped")
    assert status_of(project, "2") == "stopped"
    with Client(project) as client:
        assert client.execution(2).started_at is None
        assert "stopped" in (client.execution(1).status_detail or "")
    again = cairn_proc("stop", "1")
    assert again.returncode == 1 and "already ended" in again.stderr


def _intervals(project: Path) -> list[tuple[float, float, str]]:
    spans = []
    with Client(project) as client:
        for run in client.executions(step="sleep"):
            points = {p.key: p.value for p in run.metric_points()}
            spans.append((points["started"], points["ended"], run.id))
    return sorted(spans)


def test_executions_beyond_capacity_wait_queued(project: Path) -> None:
    env = {"CAIRN_LOCAL_CPUS": "2"}
    for _ in range(4):
        assert cairn_proc("run", "sleep", "--seconds=4", "-d", env=env).returncode == 0

    def all_done() -> bool:
        with Client(project) as client:
            return all(r.status.value == "complete" for r in client.executions())

    wait_for(all_done, timeout=60, what="4 runs")
    spans = _intervals(project)
    # At no moment did more than two run at once.
    events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2
    with Client(project) as client:
        assert all(r.queued_at is not None for r in client.executions())


FAKE_SMI = """#!/bin/sh
# A stand-in for nvidia-smi on a machine with two GPUs.
echo "0, NVIDIA A100-SXM4-80GB, 81920, 550.54, GPU-aaaa"
echo "1, NVIDIA A100-SXM4-80GB, 81920, 550.54, GPU-bbbb"
"""


@pytest.mark.parametrize("gpus_from", ["settings", "nvidia-smi"])
def test_each_gpu_goes_to_one_execution(project: Path, tmp_path: Path, gpus_from: str) -> None:
    if gpus_from == "settings":
        env = {"CAIRN_LOCAL_GPUS": "0,1", "CAIRN_LOCAL_CPUS": "8"}
    else:
        fake = tmp_path / "fakebin"
        fake.mkdir()
        (fake / "nvidia-smi").write_text(FAKE_SMI)
        (fake / "nvidia-smi").chmod(0o755)
        env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "CAIRN_LOCAL_CPUS": "8"}
    for _ in range(3):
        assert cairn_proc("run", "sleep", "--seconds=3", "--gpus=1", "-d", env=env).returncode == 0

    def all_done() -> bool:
        with Client(project) as client:
            return all(r.status.value == "complete" for r in client.executions())

    wait_for(all_done, timeout=60, what="3 GPU runs")
    with Client(project) as client:
        runs = client.executions()
        seen = {}
        for run in runs:
            log = client.ctx.settings.logs_dir / f"{run.id}.log"
            line = next(x for x in log.read_text().splitlines() if " gpus " in x)
            seen[run.id] = line.rsplit(" ", 1)[1]
            assert run.gpu_ids and seen[run.id] == str(run.gpu_ids[0])
    assert set(seen.values()) <= {"0", "1"}
    if gpus_from == "nvidia-smi":  # the environment record lists what nvidia-smi reported
        with Client(project) as client:
            gpus = client.executions()[0].environment.get("gpus")
        assert [g["name"] for g in gpus] == ["NVIDIA A100-SXM4-80GB"] * 2
    spans = _intervals(project)
    for (s1, e1, id1) in spans:
        for (s2, e2, id2) in spans:
            if id1 < id2 and seen[id1] == seen[id2]:
                assert e1 <= s2 or e2 <= s1, "two executions shared a GPU at the same time"


def test_a_step_needing_more_than_the_machine_has_is_refused(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "sleep", "--gpus=2")
    assert code == 1
    assert "2 GPU(s) but this machine has 0" in err


@pytest.mark.parametrize("signal_name", ["SIGINT"])
def test_interrupting_a_foreground_run_stops_it(project: Path, signal_name: str) -> None:
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "cairn", "run", "sleep"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (project / ".cairn" / "cairn.db").exists() and
             status_of(project, "1") == "running", what="running")
    time.sleep(0.2)
    proc.send_signal(getattr(signal, signal_name))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert status_of(project, "1") == "stopped"
    assert json.loads(out.splitlines()[0])["started"] > 0


def test_a_run_whose_supervisor_dies_is_marked_crashed(project: Path, cli) -> None:  # noqa: ANN001
    import signal

    assert cairn_proc("run", "sleep", "-d").returncode == 0
    wait_for(lambda: status_of(project, "1") == "running", what="running")
    with Client(project) as client:
        execution = client.execution(1)
    workspace = project / ".cairn" / "work" / execution.id
    step_pid = int((workspace / "pid").read_text())
    # Let the step print its first lines first: a line written after its reader died
    # would end it with a broken pipe, and this test is about a step that outlives it.
    log = project / ".cairn" / "logs" / f"{execution.id}.log"
    wait_for(lambda: log.exists() and '"started"' in log.read_text(), what="the step's output")
    os.kill(execution.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(execution.pid), what="supervisor gone")
    assert pid_alive(step_pid)  # the step outlived its supervisor...
    code, out, _ = cli("ls")
    assert code == 0 and "crashed" in out
    with Client(project) as client:
        assert "ended unexpectedly" in client.execution(1).status_detail
    wait_for(lambda: not pid_alive(step_pid), what="orphan ended")  # ...until the reaper came
    assert not workspace.exists()


