"""``cairn environments``: the machine types executions can run on, and what is on them."""

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
