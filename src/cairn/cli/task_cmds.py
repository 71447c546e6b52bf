"""``cairn task``: run, list, show and stop sweeps (tasks)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cairn.cli import render

if TYPE_CHECKING:
    from cairn.entities import Flow
    from cairn.orchestration.context import Context

FORMATS = click.Choice(["table", "json"])


def _ctx() -> Context:
    from cairn.orchestration.context import Context
    from cairn.orchestration.sweeps import reap_sweeps

    ctx = Context.load()
    reap_sweeps(ctx)  # a sweep whose driver died shows as crashed, not running forever
    return ctx


def _say(text: str) -> None:
    click.echo(click.style("cairn: ", fg="cyan") + text, err=True)


@click.group(short_help="Sweeps: run, ls, show, stop.")
def task() -> None:
    """Sweeps (tasks): many executions of one step over a parameter space, with early
    stopping of bad trials. `cairn task run NAME` runs a task of cairn.yaml, or sweeps a
    step over a space given with -p."""


def _spec_help() -> str:
    from cairn.orchestration.spaces import SPEC_HELP

    return SPEC_HELP


@task.command(short_help="Run a task of cairn.yaml, or sweep a step.")
@click.argument("name")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=SPEC",
              help="Vary (or fix) a step parameter; overrides the task's own rules for NAME. "
                   "See SPACES below.")
@click.option("--type", "task_type", metavar="TYPE",
              help="grid_search (default), random_search, bayesian_tpe or manual_search.")
@click.option("--execution-count", "-n", type=int,
              help="How many trials a random_search or bayesian_tpe runs.")
@click.option("--parallel", "-j", type=int,
              help="Trials running at once (maximum-queued-executions; default: as many as "
                   "fit this machine's CPUs/GPUs).")
@click.option("--batch-size", type=int,
              help="bayesian_tpe: ask for this many trials, then wait for all of them.")
@click.option("--target", metavar="METRIC", help="The metric that ranks trials "
              "(optimization-target-metric), read from the step's JSON lines.")
@click.option("--maximize/--minimize", "maximize", default=None,
              help="Direction of the target (default: minimize names like loss/error, "
                   "maximize the rest).")
@click.option("--target-value", type=float,
              help="Aim for this value of the target metric (closest wins).")
@click.option("--stop-condition", metavar="EXPR",
              help="End the whole task once a trial meets it, e.g. 'metadata.accuracy > 0.98'.")
@click.option("--prune", type=click.Choice(["median", "halving", "none"]), default=None,
              help="Stop trials early whose target metric falls behind at the same step: "
                   "the median rule, or successive halving (default: none).")
@click.option("--on-child-error",
              type=click.Choice(["continue-and-complete", "continue-and-error",
                                 "stop-all-and-error"]),
              help="What a failed trial does to the task (default: continue-and-complete).")
@click.option("--reuse/--no-reuse", default=None,
              help="Reuse completed executions with the same code, parameters, inputs and "
                   "environment instead of running them again (default: the task's "
                   "reuse-children, else no).")
@click.option("--seed", type=int, help="Seed of random_search / bayesian_tpe sampling.")
@click.option("--priority", type=int, default=None,
              help="Queue priority of its trials: higher starts first (default 0).")
@click.option("--environment", metavar="NAME",
              help="The environment (machine type) its trials run on, e.g. a Ray cluster "
                   "(default: the step's).")
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME=URI",
              help="An input of the step for every trial. Repeatable.")
@click.option("--env", "-e", "env", multiple=True, metavar="NAME=VALUE",
              help="An environment variable for every trial. Repeatable.")
@click.option("--detach", "-d", is_flag=True,
              help="Return at once with the task's number; it runs in the background.")
def run(name: str, params: tuple[str, ...], task_type: str | None,
        execution_count: int | None, parallel: int | None, batch_size: int | None,
        target: str | None, maximize: bool | None, target_value: float | None,
        stop_condition: str | None, prune: str | None, on_child_error: str | None,
        reuse: bool | None, seed: int | None, priority: int | None, environment: str | None,
        inputs: tuple[str, ...], env: tuple[str, ...], detach: bool) -> int:
    """Run NAME: a task of cairn.yaml (type, parameters and options from there, each
    overridable here), or else a step, swept over the space given with -p.

    \b
    Examples:
      cairn task run lr-sweep
      cairn task run train -p learning-rate=logspace:-3:-1:3 -p width=8,16 --target val_accuracy
      cairn task run train --type random_search -n 10 -p learning-rate=loguniform:1e-4:1e-1 \\
          --target val_loss --prune median --stop-condition 'metadata.val_accuracy > 0.98'
    """
    from cairn.orchestration import spaces
    from cairn.orchestration.sweeps import SweepSpec, create_sweep, run_sweep, start_detached

    ctx = _ctx()
    config = ctx.config
    if name in config.tasks:
        spec = SweepSpec.from_task(config.get_task(name))
    else:
        config.get_step(name)  # unknown step or task: says which exist
        spec = SweepSpec(step=name)
    overrides = [spaces.parse_spec(p) for p in params]
    replaced = {v.name for v in overrides}
    spec.variants = [v for v in spec.variants if v.name not in replaced] + overrides
    if task_type is not None:
        spec.type = spaces.normalize_type(task_type)
    for key, value in (("execution_count", execution_count), ("parallel", parallel),
                       ("batch_size", batch_size), ("target_metric", target),
                       ("target_value", target_value), ("stop_condition", stop_condition),
                       ("prune", prune), ("on_child_error", on_child_error), ("reuse", reuse),
                       ("seed", seed), ("priority", priority), ("environment", environment)):
        if value is not None:
            setattr(spec, key, value)
    if maximize is not None:
        spec.direction = "maximize" if maximize else "minimize"
    spec.inputs = _pairs(inputs, "NAME")
    spec.variables = {k: v[-1] for k, v in _pairs(env, "NAME").items()}

    flow, snapshot = create_sweep(ctx, spec)
    total = flow.options.get("total")
    what = (f"task #{flow.counter} {flow.name}: {spec.type} over step '{spec.step}', "
            f"{total} trial{'s' if total != 1 else ''}, {flow.options.get('parallel')} at once")
    if detach:
        start_detached(ctx, flow)
        _say(f"{what}; started in the background. Follow it with "
             f"`cairn task show {flow.counter}`")
        click.echo(flow.counter)
        return 0
    _say(what)
    final = run_sweep(ctx, flow, snapshot=snapshot, on_event=_say)
    click.echo(_show_table(ctx, final))
    return _exit_code(final)


def _exit_code(flow: Flow) -> int:
    from cairn.entities import FlowStatus

    if flow.status == FlowStatus.COMPLETE:
        return 0
    if flow.status == FlowStatus.STOPPED:
        return 130
    return 1


def _pairs(values: tuple[str, ...], what: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected {what}=VALUE, got {item!r}")
        out.setdefault(key, []).append(val)
    return out


# Show the space syntax at the end of `cairn task run --help`.
run.epilog = "\b\nSPACES: -p " + _spec_help()


@task.command(short_help="List tasks.")
@click.option("--limit", "-n", default=20, show_default=True, help="How many (0: all).")
@click.option("--format", "fmt", type=FORMATS, default="table")
def ls(limit: int, fmt: str) -> None:
    """List tasks, newest first: number, name, type, status, trials, best value."""
    ctx = _ctx()
    flows = ctx.store.list_flows(ctx.project_id, "task", limit=limit or None)
    if not flows and fmt == "table":
        click.echo("no tasks yet: start one with `cairn task run TASK_OR_STEP`", err=True)
        return
    headers = ["#", "name", "type", "step", "status", "trials", "best", "started", "duration"]
    rows = []
    for f in flows:
        best = (f.result or {}).get("best") or {}
        metric = (f.result or {}).get("metric") or f.definition.get("target_metric")
        done = sum(1 for n in f.nodes if n.status.is_final)
        total = max(len(f.nodes), int(f.options.get("total") or 0))
        best_text = (f"{metric}={render.value(best['value'])} (trial {best['trial']})"
                     if best else "")
        duration = ((f.ended_at or _now()) - f.started_at).total_seconds() \
            if f.started_at else None
        if fmt == "json":
            rows.append([f.counter, f.name, f.definition.get("type"), f.definition.get("step"),
                         f.status.value, {"done": done, "total": total}, best or None,
                         f.started_at.isoformat() if f.started_at else None, duration])
        else:
            rows.append([f.counter, f.name, f.definition.get("type"), f.definition.get("step"),
                         render.status(f.status.value), f"{done}/{total}", best_text,
                         render.ago(f.started_at or f.created_at), render.duration(duration)])
    render.emit(headers, rows, fmt, right=[0, 5, 8])


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


@task.command(short_help="Trials of a task, best first.")
@click.argument("ref", default="latest")
@click.option("--format", "fmt", type=FORMATS, default="table")
def show(ref: str, fmt: str) -> None:
    """The trials of task REF (a number or id; default: the latest) best first:
    parameters, target metric, status, and which trial won."""
    ctx = _ctx()
    if ref == "latest":
        flows = ctx.store.list_flows(ctx.project_id, "task", limit=1)
        if not flows:
            raise click.ClickException("no tasks yet: start one with `cairn task run TASK_OR_STEP`")
        flow = flows[0]
    else:
        flow = ctx.store.get_flow(ctx.project_id, "task", ref)
    if fmt == "json":
        click.echo(json.dumps(_as_json(ctx, flow), indent=2, default=str))
    else:
        click.echo(_show_table(ctx, flow))


@task.command(short_help="Stop a task.")
@click.argument("refs", nargs=-1, required=True)
def stop(refs: tuple[str, ...]) -> int:
    """Stop tasks REFS: running trials are stopped, the ones not started are skipped."""
    from cairn.orchestration.sweeps import stop_sweep

    ctx = _ctx()
    for ref in refs:
        flow = stop_sweep(ctx, ref)
        _say(f"task #{flow.counter} stopping")
    return 0


# -- rendering ------------------------------------------------------------------------


def _trials(ctx: Context, flow: Flow) -> list[dict[str, Any]]:
    from cairn.errors import NotFoundError
    from cairn.orchestration.sweeps import ranked_trials

    best = ((flow.result or {}).get("best") or {}).get("trial")
    out = []
    for rank, node in enumerate(ranked_trials(flow), 1):
        counter = seconds = None
        if node.execution_id:
            try:
                ex = ctx.store.get_execution(flow.project_id, node.execution_id)
                counter, seconds = ex.counter, ex.duration
            except NotFoundError:
                pass
        out.append({"rank": rank, "trial": node.name, "execution": counter,
                    "execution_id": node.execution_id, "status": node.status.value,
                    "parameters": dict(node.parameters), "value": node.value,
                    "best": node.name == best, "detail": node.detail, "seconds": seconds})
    return out


def _as_json(ctx: Context, flow: Flow) -> dict[str, Any]:
    result = flow.result or {}
    return {
        "id": flow.id, "counter": flow.counter, "name": flow.name,
        "type": flow.definition.get("type"), "step": flow.definition.get("step"),
        "status": flow.status.value, "status_detail": flow.status_detail,
        "metric": flow.definition.get("target_metric"),
        "direction": flow.options.get("direction"),
        "target_value": flow.definition.get("target_value"),
        "started_at": flow.started_at.isoformat() if flow.started_at else None,
        "ended_at": flow.ended_at.isoformat() if flow.ended_at else None,
        "best": result.get("best"), "problem": result.get("problem"),
        "trials": _trials(ctx, flow),
    }


def _show_table(ctx: Context, flow: Flow) -> str:
    from cairn.orchestration.sweeps import SweepSpec

    spec = SweepSpec.from_dict(flow.definition)
    trials = _trials(ctx, flow)
    varied = list(flow.options.get("varied") or [])
    if not varied:  # nothing varies (one trial): show what it ran with
        varied = list(dict.fromkeys(k for t in trials for k in t["parameters"]))
    metric = spec.target_metric
    duration = ((flow.ended_at or _now()) - flow.started_at).total_seconds() \
        if flow.started_at else None
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    lines = [
        click.style(f"task #{flow.counter} {flow.name}", bold=True)
        + f" · {spec.type} over step '{spec.step}' · {render.status(flow.status.value)}"
        + (f" in {render.duration(duration)}" if duration is not None else ""),
        f"goal: {spec.describe_goal()} · {len(trials)} trials: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" · {flow.options.get('parallel')} at once"
        + (f" · pruning: {spec.prune}" if spec.prune != "none" else ""),
    ]
    if spec.stop_condition:
        lines.append(f"stop condition: {spec.stop_condition}")
    if flow.status_detail:
        lines.append(f"note: {flow.status_detail}")
    best = (flow.result or {}).get("best")
    if best:
        lines.append(click.style("best: ", fg="green", bold=True)
                     + f"trial {best['trial']} (#{best['counter']}) {metric}="
                     + render.value(best["value"]) + "  "
                     + " ".join(f"{k}={render.value(v)}" for k, v in best["parameters"].items()))
    headers = ["rank", "trial", "exec", "status", *varied, metric or "value", "time", "detail"]
    rows = []
    for t in trials:
        rows.append([
            f"{t['rank']}{'*' if t['best'] else ''}", t["trial"],
            f"#{t['execution']}" if t["execution"] is not None else "-",
            render.status(t["status"]),
            *[render.value(t["parameters"].get(k)) for k in varied],
            render.value(t["value"]) if t["value"] is not None else "-",
            render.duration(t["seconds"]), t["detail"] or "",
        ])
    n = 4 + len(varied)
    return "\n".join(lines) + "\n\n" + render.table(headers, rows, right=[1, n, n + 1])
