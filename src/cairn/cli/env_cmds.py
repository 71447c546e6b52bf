"""Where work runs: ``cairn environments`` (machine types and what is on them), ``cairn
queue`` (what waits, in the order it starts) and ``cairn scheduler`` (the process that
dispatches the shared queue)."""

from __future__ import annotations

import click

from cairn.cli import render


@click.command(short_help="List environments (machine types) with what runs and waits on them.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
def environments(fmt: str) -> None:
    """List the environments of your settings: backend, capacity of one machine, price per
    hour, how many executions may run at once, and how many run and wait there now.

    Define them as [environments.NAME] tables in .cairn/config.toml or
    ~/.config/cairn/config.toml.
    """
    from cairn.entities import Status
    from cairn.orchestration.context import Context
    from cairn.orchestration.environments import capacity_of, choose_environment, load_environments
    from cairn.orchestration.scheduler import Scheduler

    ctx = Context.load()
    Scheduler(ctx).reap()
    envs = load_environments(ctx.settings)
    default = choose_environment(ctx.settings, None).name
    active = ctx.store.list_executions(
        ctx.project_id, statuses=[Status.QUEUED, Status.STARTING, Status.RUNNING])
    rows = []
    for name in sorted(envs):
        env = envs[name]
        cap = capacity_of(ctx, env)
        running = sum(1 for e in active if e.machine_environment == name
                      and e.status != Status.QUEUED)
        queued = sum(1 for e in active if e.machine_environment == name
                     and e.status == Status.QUEUED)
        gpus = f"{cap.gpus}" + (f" × {env.gpu_kind}" if env.gpu_kind and cap.gpus else "")
        table = fmt == "table"
        rows.append([
            name + (" (default)" if name == default and table else ""), env.backend,
            f"{cap.cpus:g}" if cap.cpus else "-",
            (render.size(cap.memory_mb * 2**20) if table else cap.memory_mb) if cap.memory_mb else "-",
            gpus if table else cap.gpus,
            ", ".join(f"{k}={v:g}" for k, v in env.resources.items()) if table else env.resources,
            (f"${env.price_per_hour:.2f}" if env.price_per_hour else "-") if table
            else env.price_per_hour,
            env.max_parallel if env.max_parallel is not None else ("-" if table else None),
            running, queued,
        ])
    render.emit(["environment", "backend", "cpus", "memory", "gpus", "resources", "price/h",
                 "max parallel", "running", "queued"], rows, fmt, right=[2, 3, 4, 6, 7, 8, 9])


@click.command(short_help="Show queued executions in the order they will start.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
def queue(fmt: str) -> None:
    """Show this project's queued executions in the order they start: higher priority
    first, then first come, first served. `cairn stop N` takes one out of the queue.

    WAITING ON says who starts it: a process of some host (`cairn run` in a terminal, a
    pipeline's or sweep's driver) or the scheduler of any host (`cairn run --detach`).
    """
    from cairn.orchestration.context import Context
    from cairn.orchestration.dispatch import running_scheduler
    from cairn.orchestration.scheduler import Scheduler

    ctx = Context.load()
    Scheduler(ctx).reap()
    table = fmt == "table"
    rows = []
    for position, ex in enumerate(ctx.store.queue(project_id=ctx.project_id), 1):
        need = [f"{ex.resources.cpus:g} cpu"]
        if ex.resources.memory_mb:
            need.append(render.size(ex.resources.memory_mb * 2**20) if table
                        else f"{ex.resources.memory_mb} MB")
        if ex.resources.gpus:
            need.append(f"{ex.resources.gpus} gpu")
        waiting_on = f"pid {ex.pid} on {ex.host}" if ex.host else "scheduler"
        rows.append([position, f"#{ex.counter}" if table else ex.counter, ex.step, ex.priority,
                     ex.machine_environment, ", ".join(need),
                     render.ago(ex.queued_at) if table else
                     (ex.queued_at.isoformat() if ex.queued_at else None), waiting_on])
    render.emit(["position", "execution", "step", "priority", "environment", "needs",
                 "queued", "waiting on"], rows, fmt, right=[0, 3])
    if table:
        pid = running_scheduler(ctx)
        shared = sum(1 for row in rows if row[-1] == "scheduler")
        if pid:
            click.echo(f"scheduler: running on this host (pid {pid})", err=True)
        elif shared:
            click.echo(f"scheduler: none on this host; {shared} detached execution(s) wait "
                       "for one: run `cairn scheduler` (any `cairn run --detach` starts one)",
                       err=True)
        if not rows:
            click.echo("the queue is empty", err=True)


@click.command(short_help="Dispatch queued executions as capacity frees (runs until stopped).")
@click.option("--idle-exit", type=float, default=None, metavar="SECONDS",
              help="End after this long with nothing queued (default: run until Ctrl-C).")
def scheduler(idle_exit: float | None) -> None:
    """Dispatch this project's shared queue from this host: start each queued execution
    (`cairn run --detach`, in priority order, first come first served) when this host's
    CPUs, memory and GPUs, or its cluster environment's max-parallel, have room for it.

    `cairn run --detach` starts one on demand that ends when idle; run this one as a service
    to keep a machine serving the queue. Schedulers of several hosts pointed at the same
    database share the queue; each execution is started by exactly one of them.
    """
    import os
    import signal

    from cairn.orchestration.background import HOST
    from cairn.orchestration.context import Context
    from cairn.orchestration.dispatch import QueueScheduler

    ctx = Context.load()
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(f"scheduler for project {ctx.settings.project_name} on {HOST} (pid "
               f"{os.getpid()}); Ctrl-C ends it, running executions go on", err=True)
    count = QueueScheduler(ctx).run(
        idle_exit=idle_exit,
        on_dispatch=lambda d: click.echo(
            f"started #{d.execution.counter} {d.execution.step} on {d.execution.machine_environment}"
            f" (supervisor pid {d.supervisor_pid})"),
        should_stop=lambda: stop["now"],
    )
    click.echo(f"scheduler ended; it started {count} execution(s)", err=True)
