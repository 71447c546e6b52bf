"""Preemption, grace periods, live outputs and automatic restarts with the `_restart` input,
on the local backend with real processes and signals."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.entities import Execution, Status
from cairn.orchestration.context import Context

from .conftest import pid_alive, wait_for, write_files
from .test_queue import stop_scheduler

TRAIN = """\
import os, pathlib, signal, sys, time
out = pathlib.Path(os.environ["CAIRN_OUTPUTS_DIR"])
restart = pathlib.Path(os.environ["CAIRN_INPUTS_DIR"]) / "_restart" / "epoch.txt"
total = int(sys.argv[1])
epoch = int(restart.read_text()) if restart.exists() else 0
print("resuming from", epoch, flush=True)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
while epoch < total:
    time.sleep(0.4)
    epoch += 1
    print("epoch", epoch, flush=True)
    if stopping:
        time.sleep(0.5)  # saving takes a while: within the grace period
        (out / "epoch.txt").write_text(str(epoch))
        print("checkpoint saved at epoch", epoch, flush=True)
        sys.exit(143)
(out / "epoch.txt").write_text(str(epoch))
print("done", flush=True)
"""

STUBBORN = """\
import os, pathlib, signal, time
signal.signal(signal.SIGTERM, lambda *_: print("got SIGTERM, carrying on", flush=True))
print("working", flush=True)
time.sleep(120)
"""

LIVE = """\
import os, pathlib, sys, time
out = pathlib.Path(os.environ["CAIRN_OUTPUTS_DIR"])
restart = pathlib.Path(os.environ["CAIRN_INPUTS_DIR"]) / "_restart" / "ckpt.txt"
if restart.exists():
    print("restarted with", restart.read_text(), flush=True)
    sys.exit(0)
ckpt = out / "ckpt.txt"
ckpt.write_text("step 1")
ckpt.chmod(0o444)  # a live output: stored at once
(out / "scratch.txt").write_text("not live")
print("checkpoint written", flush=True)
time.sleep(120)
"""

YAML = """\
- step:
    name: train
    image: python:3.11
    command: python train.py {parameters}
    autorestart: 1
    parameters:
      - name: total
        type: integer
        default: 12
        pass-as: "{v}"
- step:
    name: stubborn
    image: python:3.11
    command: python stubborn.py
- step:
    name: live
    image: python:3.11
    command: python live.py
    autorestart: true
"""

CLI = Callable[..., tuple[int, str, str]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = write_files(tmp_path / "proj", {
        "cairn.yaml": YAML, "train.py": TRAIN, "stubborn.py": STUBBORN, "live.py": LIVE})
    monkeypatch.chdir(root)
    yield root
    stop_scheduler(root)


def detach(cli: CLI, *args: str) -> Execution:
    code, out, err = cli("run", *args, "--detach")
    assert code == 0, err
    ctx = Context.load()
    return ctx.store.get_execution(ctx.project_id, out.strip())


def get(ref: str | int) -> Execution:
    ctx = Context.load()
    return ctx.store.get_execution(ctx.project_id, ref)


def log_of(execution: Execution) -> str:
    path = Context.load().settings.logs_dir / f"{execution.id}.log"
    return path.read_text() if path.exists() else ""


def restart_of(execution: Execution) -> Execution:
    ctx = Context.load()
    found = [e for e in ctx.store.list_executions(ctx.project_id) if e.restart_of == execution.id]
    assert len(found) == 1, found
    return found[0]


def test_preemption_keeps_checkpoints_and_the_restart_resumes_from_them(
    project: Path, cli: CLI
) -> None:
    first = detach(cli, "train")
    wait_for(lambda: "epoch 2" in log_of(first), 60, "two epochs")
    supervisor = get(first.id).pid
    assert supervisor and pid_alive(supervisor)
    os.kill(supervisor, signal.SIGTERM)  # the machine is going away

    wait_for(lambda: get(first.id).status.is_final, 30, "the preempted run to end")
    preempted = get(first.id)
    assert preempted.status == Status.CRASHED
    assert preempted.status_detail.startswith("preempted: cairn got SIGTERM")
    assert "checkpoint saved" in log_of(preempted)
    ctx = Context.load()
    saved = ctx.store.list_datums(ctx.project_id, execution_id=first.id)
    assert [d.name for d in saved] == ["epoch.txt"]
    epoch = int(ctx.content.read_bytes(saved[0].digest))
    assert epoch >= 3

    second = restart_of(preempted)
    assert [(f.input_name, f.name, f.datum_id) for f in second.inputs] == [
        ("_restart", "epoch.txt", saved[0].id)]
    wait_for(lambda: get(second.id).status.is_final, 60, "the restart to end")
    done = get(second.id)
    assert done.status == Status.COMPLETE, done.status_detail
    assert f"resuming from {epoch}" in log_of(done)
    final = ctx.store.list_datums(ctx.project_id, execution_id=done.id)
    assert int(ctx.content.read_bytes(final[0].digest)) == 12
    code, out, _ = cli("show", str(done.counter))
    assert f"automatic restart of #{first.counter}" in out


def test_stop_waits_the_grace_period_then_kills(
    project: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".cairn").mkdir(exist_ok=True)
    (project / ".cairn" / "config.toml").write_text(
        "default-environment = \"short-grace\"\n"
        "[environments.short-grace]\nbackend = \"local\"\ngrace-seconds = 1.5\n")
    execution = detach(cli, "stubborn")
    wait_for(lambda: "working" in log_of(execution), 60, "the step to start")
    asked = time.monotonic()
    code, _, err = cli("stop", str(execution.counter))
    assert code == 0, err
    wait_for(lambda: get(execution.id).status.is_final, 30, "the stop")
    took = time.monotonic() - asked
    stopped = get(execution.id)
    assert stopped.status == Status.STOPPED  # asked for: not a preemption, no restart
    assert "got SIGTERM, carrying on" in log_of(stopped)
    assert 1.4 <= took < 8, took
    ctx = Context.load()
    assert [e.restart_of for e in ctx.store.list_executions(ctx.project_id)] == [None]


def test_live_outputs_are_stored_while_running_and_survive_a_dead_supervisor(
    project: Path, cli: CLI
) -> None:
    first = detach(cli, "live")
    ctx = Context.load()
    wait_for(lambda: [d.name for d in ctx.store.list_datums(ctx.project_id,
                                                            execution_id=first.id)]
             == ["ckpt.txt"], 60, "the live output to be stored while it runs")
    assert get(first.id).status == Status.RUNNING
    supervisor = get(first.id).pid
    os.kill(supervisor, signal.SIGKILL)  # cairn itself dies: the reaper finds out
    wait_for(lambda: not pid_alive(supervisor), 10, "the supervisor to die")
    code, _, err = cli("ls")  # any command reaps
    assert code == 0, err
    crashed = get(first.id)
    assert crashed.status == Status.CRASHED
    assert "ended unexpectedly; 1 output file(s) it had written were kept" in crashed.status_detail
    names = sorted(d.name for d in ctx.store.list_datums(ctx.project_id, execution_id=first.id))
    assert names == ["ckpt.txt", "scratch.txt"]

    second = restart_of(crashed)
    assert sorted(f.name for f in second.inputs if f.input_name == "_restart") == names
    wait_for(lambda: get(second.id).status.is_final, 60, "the restart to end")
    assert get(second.id).status == Status.COMPLETE
    assert "restarted with step 1" in log_of(get(second.id))


def test_restarts_stop_when_the_budget_is_spent(project: Path, cli: CLI) -> None:
    first = detach(cli, "train", "--total=50")
    wait_for(lambda: "epoch 1" in log_of(first), 60, "the first epoch")
    os.kill(get(first.id).pid, signal.SIGTERM)
    wait_for(lambda: get(first.id).status.is_final, 30, "the preemption")
    second = restart_of(get(first.id))
    wait_for(lambda: "epoch" in log_of(get(second.id)).split("resuming from")[-1], 60,
             "the restart to work")
    os.kill(get(second.id).pid, signal.SIGTERM)
    wait_for(lambda: get(second.id).status.is_final, 30, "the second preemption")
    assert get(second.id).status == Status.CRASHED
    time.sleep(1)
    ctx = Context.load()
    assert len(ctx.store.list_executions(ctx.project_id)) == 2  # autorestart: 1 is spent


def test_autorestart_must_be_a_count_or_a_boolean(project: Path, cli: CLI) -> None:
    (project / "cairn.yaml").write_text(YAML.replace("autorestart: 1", "autorestart: often"))
    code, out, err = cli("lint")
    assert code != 0
    assert "cairn.yaml:5:18" in out + err and "'autorestart' of step 'train'" in out + err
