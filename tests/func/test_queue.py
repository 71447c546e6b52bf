"""The shared queue: priorities, `cairn queue`, `cairn stop` of queued executions, and
scheduler processes of two hosts dispatching one queue on PostgreSQL without starting any
execution twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.entities import Status
from cairn.orchestration.context import Context

from .conftest import cairn_proc, pid_alive, wait_for, write_files

MARK = """\
import os, sys, time
log, label, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(log, "a") as fh:
    fh.write(f"{label} {os.environ['CAIRN_EXECUTION_ID']} {os.environ.get('CAIRN_HOST', '-')}\\n")
time.sleep(secs)
"""

YAML = """\
- step:
    name: mark
    image: python:3.11
    command: python mark.py {parameters}
    parameters:
      - name: log
        type: string
        pass-as: "{v}"
      - name: label
        type: string
        default: x
        pass-as: "{v}"
      - name: secs
        type: float
        default: 0
        pass-as: "{v}"
"""

WIDE = "".join(f"      - {{name: n{i}, type: execution, step: mark}}\n" for i in range(8))
PIPELINE = f"""\
- pipeline:
    name: wide
    parameters:
      - name: log
        targets: [{", ".join(f"n{i}.parameter.log" for i in range(8))}]
    nodes:
{WIDE}    edges: []
"""

CLI = Callable[..., tuple[int, str, str]]


def make_project(root: Path, config: str = "") -> Path:
    return write_files(root, {"cairn.yaml": YAML, "mark.py": MARK,
                              **({".cairn/config.toml": config} if config else {})})


def stop_scheduler(root: Path) -> None:
    """End the scheduler a test's detached runs started (it would idle out on its own)."""
    from cairn.orchestration.dispatch import running_scheduler

    pid = running_scheduler(Context.load(root))
    if pid and pid > 0:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 10, "the scheduler to end")


@pytest.fixture
def one_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project on a host offering one CPU: one execution at a time."""
    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    monkeypatch.setenv("CAIRN_LOCAL_CPUS", "1")
    yield root
    stop_scheduler(root)


def submit(cli: CLI, log: Path, label: str, secs: float, *extra: str) -> int:
    code, out, err = cli("run", "mark", f"--log={log}", f"--label={label}", f"--secs={secs}",
                         "--detach", *extra)
    assert code == 0, err
    ctx = Context.load()
    return ctx.store.get_execution(ctx.project_id, out.strip()).counter


def test_higher_priority_starts_first_then_first_come(one_cpu: Path, cli: CLI) -> None:
    log = one_cpu / "ran.log"
    blocker = submit(cli, log, "blocker", 3)
    ctx = Context.load()
    wait_for(lambda: ctx.store.get_execution(ctx.project_id, blocker).status == Status.RUNNING,
             30, "the first execution to run")
    first_low = submit(cli, log, "low1", 0)
    second_low = submit(cli, log, "low2", 0)
    high = submit(cli, log, "high", 0, "--priority", "5")

    code, out, err = cli("queue")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("1", f"#{high}", "5"), ("2", f"#{first_low}", "0"), ("3", f"#{second_low}", "0")]
    assert all(r[-1] == "scheduler" for r in rows)
    assert "scheduler: running on this host" in err

    counters = [blocker, first_low, second_low, high]
    wait_for(lambda: all(ctx.store.get_execution(ctx.project_id, c).status == Status.COMPLETE
                         for c in counters), 60, "the queue to drain")
    assert [line.split()[0] for line in log.read_text().splitlines()] == [
        "blocker", "high", "low1", "low2"]
    started = sorted(counters, key=lambda c: ctx.store.get_execution(ctx.project_id, c).started_at)
    assert started == [blocker, high, first_low, second_low]
    code, out, err = cli("queue")
    assert "the queue is empty" in err


def test_stop_takes_an_execution_out_of_the_queue(one_cpu: Path, cli: CLI) -> None:
    log = one_cpu / "ran.log"
    blocker = submit(cli, log, "blocker", 2)
    waiting = submit(cli, log, "never", 0)
    ctx = Context.load()
    assert ctx.store.get_execution(ctx.project_id, waiting).status == Status.QUEUED
    code, out, err = cli("stop", str(waiting))
    assert code == 0, err
    stopped = ctx.store.get_execution(ctx.project_id, waiting)
    assert stopped.status == Status.STOPPED and stopped.status_detail == "stopped while queued"
    wait_for(lambda: ctx.store.get_execution(ctx.project_id, blocker).status.is_final, 30,
             "the first execution to end")
    after = submit(cli, log, "after", 0)
    wait_for(lambda: ctx.store.get_execution(ctx.project_id, after).status.is_final, 30,
             "the next execution to end")
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["blocker", "after"]


def test_a_foreground_run_waits_behind_detached_ones_queued_first(
    one_cpu: Path, cli: CLI
) -> None:
    log = one_cpu / "ran.log"
    submit(cli, log, "first", 1)
    submit(cli, log, "second", 0)
    code, out, err = cli("run", "mark", f"--log={log}", "--label=foreground", "--secs=0")
    assert code == 0, err
    assert [line.split()[0] for line in log.read_text().splitlines()] == [
        "first", "second", "foreground"]


def test_a_pipeline_wider_than_the_machine_drains_through_the_queue(one_cpu: Path) -> None:
    """Eight ready nodes, one CPU: each node joins the queue when the driver can start it,
    so the one that may start is never held behind its siblings."""
    (one_cpu / "cairn.yaml").write_text(YAML + PIPELINE)
    log = one_cpu / "ran.log"
    done = cairn_proc("pipeline", "run", "wide", f"--param=log={log}", timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(log.read_text().splitlines()) == 8


# -- two hosts, one database ----------------------------------------------------------------
@pytest.fixture
def shared_database(postgres_url: str) -> Iterator[str]:
    """A fresh database of its own on the test PostgreSQL server."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"queue_{uuid.uuid4().hex[:12]}"
    base = make_url(postgres_url)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_schedulers_of_two_hosts_share_one_queue_without_double_dispatch(
    tmp_path: Path, shared_database: str, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkouts of one project ("machines" alpha and beta, each with its own data
    folder) on one PostgreSQL database and one blob store: both schedulers run at once,
    every detached execution runs exactly once, and both hosts take some."""
    config = (f'project_name = "shared-queue"\ndatabase_url = "{shared_database}"\n'
              f'store_url = "{tmp_path / "shared-store"}"\nlocal_cpus = 2\n')
    hosts = {"alpha": make_project(tmp_path / "alpha", config),
             "beta": make_project(tmp_path / "beta", config)}
    log = tmp_path / "ran.log"
    schedulers = {
        host: subprocess.Popen(
            [sys.executable, "-m", "cairn", "scheduler", "--idle-exit", "20"], cwd=root,
            env={**os.environ, "CAIRN_HOST": host}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        for host, root in hosts.items()
    }
    try:
        for root in hosts.values():
            ctx = Context.load(root)
            from cairn.orchestration.dispatch import running_scheduler

            wait_for(lambda ctx=ctx: running_scheduler(ctx) is not None, 30,
                     "both schedulers to start")
        monkeypatch.chdir(hosts["alpha"])
        count = 16
        counters = [submit(cli, log, f"n{i}", 0.3) for i in range(count)]
        ctx = Context.load(hosts["alpha"])
        wait_for(lambda: all(ctx.store.get_execution(ctx.project_id, c).status.is_final
                             for c in counters), 120, "every execution to end")
        executions = [ctx.store.get_execution(ctx.project_id, c) for c in counters]
        assert [e.status for e in executions] == [Status.COMPLETE] * count
        lines = [line.split() for line in log.read_text().splitlines()]
        ran = [line[1] for line in lines]
        assert sorted(ran) == sorted(e.id for e in executions)  # each exactly once
        ran_on = {line[1]: line[2] for line in lines}
        assert all(ran_on[e.id] == e.host for e in executions)
        assert {e.host for e in executions} == {"alpha", "beta"}
    finally:
        outputs = {}
        for host, proc in schedulers.items():
            proc.send_signal(signal.SIGTERM)
            outputs[host] = proc.communicate(timeout=30)
    for host, (out, err) in outputs.items():
        assert "scheduler ended" in err, (host, err)
        started = [line for line in out.splitlines() if line.startswith("started #")]
        assert started, (host, out)
