"""``cairn pipeline run|ls|show|stop|resume``: pipelines of the project file, run as DAGs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cairn.cli import render

if TYPE_CHECKING:
    from cairn.entities import Flow
    from cairn.orchestration.context import Context

NODE_MARKS = {
    "pending": "○", "running": "◐", "complete": "●", "reused": "◉", "error": "✖",
    "stopped": "■", "skipped": "–", "crashed": "✖", "pruned": "✂",
}


def _ctx() -> Context:
    from cairn.orchestration.context import Context

    return Context.load()


def _say(text: str) -> None:
    click.echo(click.style("cairn: ", fg="cyan") + text, err=True)


@click.group()
def pipeline() -> None:
    """Run pipelines (DAGs of steps) and look at their runs."""


def _values(items: tuple[str, ...], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected {what}=VALUE, got {item!r}")
        out[name] = value
    return out


def _extra_options(args: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``--NAME=V`` (pipeline parameter) and ``--NODE.PARAM=V`` (one node's parameter)."""
    pipeline_values: dict[str, Any] = {}
    node_values: dict[str, dict[str, Any]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise click.UsageError(f"unexpected argument {arg!r}; set values as --NODE.PARAM=VALUE "
                                   "or --param NAME=VALUE")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise click.UsageError(f"{arg} needs a value")
            value = args[i + 1]
            i += 1
        node, dot, param = key.partition(".")
        if dot:
            node_values.setdefault(node, {})[param] = value
        else:
            pipeline_values[key] = value
        i += 1
    return pipeline_values, node_values


@pipeline.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    short_help="Run a pipeline of the project file.",
)
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter (also --NAME=VALUE). Repeatable.")
@click.option("--reuse/--no-reuse", default=None,
              help="Reuse completed executions with the same code, parameters, inputs and "
                   "environment (default: the pipeline's reuse-executions).")
@click.option("--retries", default=1, show_default=True,
              help="Extra attempts for nodes with on-error: retry.")
@click.option("--priority", default=0, show_default=True,
              help="Queue priority of its executions: higher starts first.")
@click.option("--detach", "-d", is_flag=True, help="Return at once; it runs in the background.")
@click.pass_context
def run(click_ctx: click.Context, name: str, params: tuple[str, ...], reuse: bool | None,
        retries: int, priority: int, detach: bool) -> None:
    """Run the pipeline NAME: each node starts when the nodes upstream of it have succeeded.

    Set a node's parameter with --NODE.PARAM=VALUE (e.g. --train.epochs=3) and a pipeline
    parameter with --param NAME=VALUE.
    """
    from cairn.orchestration import pipelines as P

    ctx = _ctx()
    extra_pipeline, extra_nodes = _extra_options(list(click_ctx.args))
    values = {**extra_pipeline, **_values(params, "NAME")}
    flow = P.create_pipeline(ctx, P.PipelineRequest(
        name=name, parameters=values, node_parameters=extra_nodes, reuse=reuse, retries=retries,
        priority=priority))
    click_ctx.exit(_drive(ctx, flow, detach=detach))


def _drive(ctx: Context, flow: Flow, *, detach: bool) -> int:
    from cairn.orchestration import pipelines as P

    if detach:
        P.start_detached(ctx, flow)
        _say(f"pipeline #{flow.counter} {flow.name} started in the background; "
             f"see it with `cairn pipeline show {flow.counter}`")
        click.echo(flow.id)
        return 0
    final = P.run_pipeline(ctx, flow, on_event=_say)
    click.echo(_drawing(ctx, final))
    return P.exit_code_for(final)


@pipeline.command(short_help="Continue a crashed, failed or stopped pipeline.")
@click.argument("ref")
@click.option("--detach", "-d", is_flag=True, help="Return at once; it runs in the background.")
@click.pass_context
def resume(click_ctx: click.Context, ref: str, detach: bool) -> None:
    """Continue pipeline REF: completed nodes are kept, the others run again."""
    from cairn.orchestration import pipelines as P

    ctx = _ctx()
    flow = P.prepare_resume(ctx, ref)
    kept = [n.name for n in flow.nodes if n.status.succeeded]
    _say(f"resuming pipeline #{flow.counter}; keeping {', '.join(kept) or 'no nodes'}")
    click_ctx.exit(_drive(ctx, flow, detach=detach))


@pipeline.command(short_help="Stop a running pipeline.")
@click.argument("ref")
def stop(ref: str) -> None:
    """Stop pipeline REF and its running executions; nodes not started are skipped."""
    from cairn.orchestration import pipelines as P

    ctx = _ctx()
    flow = P.stop_pipeline(ctx, ref)
    _say(f"pipeline #{flow.counter}: stop requested ({flow.status})")


@pipeline.command(name="ls", short_help="List pipeline runs.")
@click.option("--limit", "-n", default=20, show_default=True, help="How many to show (0: all).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
def ls(limit: int, fmt: str) -> None:
    """List pipeline runs, newest first: status, nodes done, duration."""
    from cairn.orchestration import pipelines as P

    ctx = _ctx()
    flows = P.list_pipelines(ctx, limit=limit or None)
    if not flows and fmt == "table":
        click.echo("no pipeline runs yet: start one with `cairn pipeline run NAME`", err=True)
        return
    rows = []
    for f in flows:
        done = sum(1 for n in f.nodes if n.status.succeeded)
        rows.append([
            f.counter, f.name,
            render.status(f.status.value) if fmt == "table" else f.status.value,
            f"{done}/{len(f.nodes)}",
            render.ago(f.started_at or f.created_at) if fmt == "table" else
            (f.started_at or f.created_at).isoformat(),
            render.duration(f.duration) if fmt == "table" else f.duration,
            f.status_detail or "",
        ])
    render.emit(["#", "pipeline", "status", "nodes", "started", "duration", "detail"], rows, fmt,
                right=[0, 5])


@pipeline.command(short_help="Show a pipeline run as a DAG.")
@click.argument("ref", default="latest")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "json"]), default="text")
def show(ref: str, fmt: str) -> None:
    """Show pipeline run REF (default: the latest): each node's status, execution, duration."""
    from cairn.orchestration import pipelines as P

    ctx = _ctx()
    if ref == "latest":
        flows = P.list_pipelines(ctx, limit=1)
        if not flows:
            raise click.ClickException("no pipeline runs yet")
        flow = flows[0]
    else:
        flow = P.get_pipeline(ctx, ref)
    if fmt == "json":
        click.echo(json.dumps(_as_json(ctx, flow), indent=2, default=str))
    elif fmt == "dot":
        click.echo(_as_dot(ctx, flow))
    else:
        click.echo(_drawing(ctx, flow))


def _executions(ctx: Context, flow: Flow) -> dict[str, Any]:
    ids = [n.execution_id for n in flow.nodes if n.execution_id]
    by_id = {e.id: e for e in ctx.store.get_executions(ctx.project_id, ids)}
    return {n.name: by_id[n.execution_id] for n in flow.nodes
            if n.execution_id and n.execution_id in by_id}


def _as_json(ctx: Context, flow: Flow) -> dict[str, Any]:
    from cairn.orchestration.pipelines import upstream_of

    ups = upstream_of(flow.definition["pipeline"])
    executions = _executions(ctx, flow)
    return {
        "id": flow.id, "counter": flow.counter, "name": flow.name, "status": flow.status.value,
        "detail": flow.status_detail, "created_at": flow.created_at,
        "started_at": flow.started_at, "ended_at": flow.ended_at, "duration": flow.duration,
        "parameters": flow.parameters, "options": flow.options,
        "nodes": [{
            "name": n.name, "type": n.kind, "status": n.status.value,
            "execution": executions[n.name].counter if n.name in executions else None,
            "execution_id": n.execution_id, "attempts": n.attempts, "detail": n.detail,
            "duration": executions[n.name].duration if n.name in executions else None,
            "upstream": sorted(ups.get(n.name, ())),
        } for n in flow.nodes],
        "edges": [{"source": str(e.source), "target": str(e.target)}
                  for e in _edge_list(flow)],
    }


def _edge_list(flow: Flow) -> list[Any]:
    from cairn.project.blueprints import Pipeline

    return Pipeline.from_dict(flow.definition["pipeline"]).edges


def _as_dot(ctx: Context, flow: Flow) -> str:
    colors = {"complete": "palegreen", "reused": "lightblue", "error": "salmon",
              "crashed": "salmon", "running": "khaki", "stopped": "lightgrey",
              "skipped": "white", "pending": "white"}
    executions = _executions(ctx, flow)
    lines = [f'digraph "pipeline #{flow.counter} {flow.name}" {{', "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for n in flow.nodes:
        ex = executions.get(n.name)
        label = f"{n.name}\\n{n.status.value}" + (f" #{ex.counter}" if ex else "")
        lines.append(f'  "{n.name}" [label="{label}", fillcolor="{colors.get(n.status.value, "white")}"];')
    for e in _edge_list(flow):
        lines.append(f'  "{e.source.node}" -> "{e.target.node}" '
                     f'[label="{e.source.type}.{e.source.key} → {e.target.type}.{e.target.key}"];')
    lines.append("}")
    return "\n".join(lines)


def _drawing(ctx: Context, flow: Flow) -> str:
    """The DAG in rows (each node below its upstream nodes), one line per node."""
    from cairn.orchestration.pipelines import layers, upstream_of

    ups = upstream_of(flow.definition["pipeline"])
    executions = _executions(ctx, flow)
    head = (f"pipeline #{flow.counter} {flow.name}  {render.status(flow.status.value)}  "
            f"{render.duration(flow.duration)}")
    if flow.status_detail:
        head += f"\n  {flow.status_detail}"
    lines = [head]
    entries = []
    for depth, row in enumerate(layers(flow)):
        for name in row:
            node = flow.node(name)
            prefix = "  " + "   " * (depth - 1) + "└▶ " if depth else "  "
            entries.append((f"{prefix}{NODE_MARKS.get(node.status.value, '?')} {name}", node))
    width = max((len(left) for left, _ in entries), default=0)
    for left, node in entries:
        ex = executions.get(node.name)
        ran = f"#{ex.counter}" if ex else "-"
        took = render.duration(ex.duration) if ex and node.status.value != "reused" else ""
        status = render.status(node.status.value.ljust(8))
        line = f"{left.ljust(width)}  {status}  {ran:>5}  {took:>6}"
        if ups.get(node.name):
            line += "  ← " + ", ".join(sorted(ups[node.name]))
        if node.detail and node.status.value != "complete":
            line += f"  ({node.detail})"
        lines.append(line)
    return "\n".join(lines)
