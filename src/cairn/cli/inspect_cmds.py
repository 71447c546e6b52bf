"""Looking at executions: ``ls``, ``show``, ``logs``, ``metrics``, ``compare``, ``outputs``, ``tag``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from cairn.cli import render

if TYPE_CHECKING:
    from cairn.entities import Execution
    from cairn.orchestration.context import Context

FORMATS = click.Choice(["table", "csv", "json"])


def _ctx(*, reap: bool = False) -> Context:
    from cairn.orchestration.context import Context

    ctx = Context.load()
    if reap:  # executions whose supervisor died are shown as crashed, not running forever
        from cairn.orchestration.scheduler import Scheduler

        Scheduler(ctx).reap()
    return ctx



@click.command(short_help="List executions.")
@click.option("--step", help="Only executions of this step.")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["created", "queued", "starting", "running", "complete",
                                 "error", "stopped", "crashed"]), help="Only these statuses.")
@click.option("--tag", help="Only executions with this tag.")
@click.option("--sort", "sort_key", metavar="METRIC",
              help="Sort by a metric's latest value, highest first (e.g. --sort accuracy); "
                   "also 'counter', 'created', 'duration'.")
@click.option("--asc", is_flag=True, help="Sort ascending (e.g. for a loss).")
@click.option("--limit", "-n", default=20, show_default=True, help="How many to show (0: all).")
@click.option("--format", "fmt", type=FORMATS, default="table")
def ls(step: str | None, statuses: tuple[str, ...], tag: str | None, sort_key: str | None,
       asc: bool, limit: int, fmt: str) -> None:
    """List executions: number, step, status, duration, key parameters and metrics."""
    from cairn.entities import Status

    ctx = _ctx(reap=True)
    sort = sort_key
    if sort and sort not in ("counter", "created", "duration") and not sort.startswith("metric:"):
        sort = f"metric:{sort}"
    rows_ex = ctx.store.list_executions(
        ctx.project_id, step=step, statuses=[Status(s) for s in statuses] or None, tag=tag,
        sort=sort, descending=not asc, limit=limit or None)
    metric_keys = _columns([e.metrics for e in rows_ex], first=sort[7:] if sort and
                           sort.startswith("metric:") else None, numeric=True)
    param_keys = _varying([e.parameters for e in rows_ex])[:4]
    # Environment and cost columns once executions ran anywhere but `local` or at a price.
    costs = [e.cost for e in rows_ex]
    machine = any(e.machine_environment != "local" for e in rows_ex) or any(
        c is not None for c in costs)
    extra = ["environment", "cost"] if machine else []
    headers = ["#", "step", "status", "started", "duration", *extra, *param_keys, *metric_keys,
               "tags"]
    rows = []
    for e, cost in zip(rows_ex, costs, strict=True):
        where = [e.machine_environment, (f"${cost:.4f}" if cost is not None else "-")
                 if fmt == "table" else cost] if machine else []
        rows.append([
            e.counter, e.step, render.status(e.status.value) if fmt == "table" else e.status.value,
            render.ago(e.started_at or e.created_at) if fmt == "table" else
            (e.started_at or e.created_at).isoformat(),
            render.duration(e.duration) if fmt == "table" else e.duration,
            *where,
            *[render.value(e.parameters.get(k)) for k in param_keys],
            *[render.value(e.metrics.get(k)) if fmt == "table" else e.metrics.get(k)
              for k in metric_keys],
            ",".join(e.tags),
        ])
    if not rows and fmt == "table":
        click.echo("no executions yet: start one with `cairn run STEP`", err=True)
        return
    n = 5 + len(extra) + len(param_keys)
    render.emit(headers, rows, fmt, right=[0, 4, *([6] if extra else []),
                                           *range(n, n + len(metric_keys))])
    if machine and fmt == "table":
        priced = [c for c in costs if c is not None]
        click.echo(f"total cost of these {len(rows)}: ${sum(priced):.4f} "
                   f"({len(priced)} priced)", err=True)


def _columns(dicts: Sequence[dict[str, Any]], *, first: str | None, numeric: bool,
             limit: int = 5) -> list[str]:
    """The metric keys most rows have (the sort key first), in order of first appearance."""
    counts: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            if not numeric or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                counts[k] = counts.get(k, 0) + 1
    ranked = sorted(counts, key=lambda k: -counts[k])  # stable: ties keep first appearance
    keys = [first] if first else []
    keys += [k for k in ranked if k != first]
    return keys[:limit]


def _varying(dicts: Sequence[dict[str, Any]]) -> list[str]:
    """Parameter names whose values differ between the listed executions (or all, if one)."""
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    if len(dicts) <= 1:
        return keys
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1]


@click.command(short_help="Show one execution.")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def show(ref: str, fmt: str) -> None:
    """Everything recorded about execution REF (a counter like 12 or #12, or an id)."""
    ctx = _ctx(reap=True)
    e = ctx.store.get_execution(ctx.project_id, ref)
    outputs = ctx.store.list_datums(ctx.project_id, execution_id=e.id)
    if fmt == "json":
        from dataclasses import asdict

        data = asdict(e)
        data["outputs"] = [asdict(d) for d in outputs]
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rerun_of = ""
    if e.rerun_of:
        rerun_of = f" (re-run of #{ctx.store.get_execution(ctx.project_id, e.rerun_of).counter})"
    if e.restart_of:
        rerun_of += (" (automatic restart of "
                     f"#{ctx.store.get_execution(ctx.project_id, e.restart_of).counter})")
    line = click.style
    click.echo(line(f"#{e.counter} {e.step}", bold=True) + f"  {render.status(e.status.value)}"
               + rerun_of)
    fields = [
        ("id", e.id),
        ("title", e.title),
        ("tags", ", ".join(e.tags) or None),
        ("created", e.created_at.astimezone().isoformat(timespec="seconds")),
        ("started", e.started_at.astimezone().isoformat(timespec="seconds") if e.started_at else None),
        ("duration", render.duration(e.duration)),
        ("exit code", e.exit_code),
        ("detail", e.status_detail),
        ("host", e.host),
        ("resources", f"{e.resources.cpus:g} CPU, {e.resources.memory_mb} MB, "
                      f"{e.resources.gpus} GPU" + (f" (GPUs {list(e.gpu_ids)})" if e.gpu_ids else "")),
    ]
    _kv(fields)
    if e.code:
        c = e.code
        _section("code")
        _kv([("tree", c.tree_digest), ("files", f"{c.file_count} ({render.size(c.size)})"),
             ("git", f"{c.git_commit or '-'}{' (dirty)' if c.git_dirty else ''}"
                     f"{' on ' + c.git_branch if c.git_branch else ''}" if c.git_commit else None)])
    _section("command")
    for cmd in e.command:
        click.echo(f"  {cmd}")
    if e.parameters:
        _section("parameters")
        _kv([(k, render.value(v)) for k, v in e.parameters.items()])
    if e.inputs:
        _section("inputs")
        by_input: dict[str, list[Any]] = {}
        for f in e.inputs:
            by_input.setdefault(f.input_name, []).append(f)
        rows = []
        for name, files in by_input.items():
            rows += [[f"{name}/{f.name}", render.size(f.size), f.digest[:12], f.uri]
                     for f in files[:5]]
            if len(files) > 5:
                total = sum(f.size for f in files)
                rows.append([f"{name}/… {len(files) - 5} more", "", "",
                             f"({len(files)} files, {render.size(total)} in all)"])
        click.echo(_indent(render.table(["file", "size", "digest", "from"], rows, right=[1])))
    env = e.environment
    if env:
        _section("environment")
        gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
        _kv([("python", env.get("python")), ("os", env.get("os")), ("cpu", env.get("cpu")),
             ("memory", f"{env.get('memory_mb')} MB"), ("gpus", gpus),
             ("packages", f"{env.get('package_count')} (lock {str(env.get('packages_digest'))[:12]})")])
    if e.metrics:
        _section("metrics (latest)")
        grids = {k: v for k, v in e.metrics.items() if _is_grid(v)}
        _kv([(k, render.value(v)) for k, v in e.metrics.items() if k not in grids])
        for k, grid in grids.items():
            click.echo(f"  {k}:")
            click.echo(_indent(_indent(render.table(
                [""] + [str(i) for i in range(len(grid[0]))],
                [[str(i), *map(render.value, row)] for i, row in enumerate(grid)],
                right=range(len(grid[0]) + 1)))))
    if outputs:
        _section("outputs")
        click.echo(_indent(render.table(
            ["file", "size", "uri"],
            [[d.name, render.size(d.size), d.uri] for d in outputs[:20]], right=[1])))
        if len(outputs) > 20:
            click.echo(f"  … and {len(outputs) - 20} more (`cairn outputs {e.counter}`)")


def _is_grid(value: Any) -> bool:
    """A 2-D list of numbers (e.g. a confusion matrix), shown as a grid."""
    return (isinstance(value, list) and bool(value) and all(isinstance(r, list) for r in value)
            and len({len(r) for r in value}) == 1 and len(value[0]) > 0
            and all(isinstance(x, (int, float)) for r in value for x in r))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _section(title: str) -> None:
    click.echo(click.style(f"\n{title}", bold=True))


def _kv(fields: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, v in fields if v not in (None, "")), default=0)
    for k, v in fields:
        if v not in (None, ""):
            click.echo(f"  {k:<{width}}  {v}")


@click.command(short_help="Print an execution's logs.")
@click.argument("ref")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until it ends.")
@click.option("--timestamps", "-t", is_flag=True, help="Prefix each line with its time.")
@click.option("--stream", type=click.Choice(["all", "stdout", "stderr"]), default="all")
def logs(ref: str, follow: bool, timestamps: bool, stream: str) -> None:
    """Print the output of execution REF, while it runs or after."""
    from datetime import datetime

    from cairn.runtime.process import parse_log_line

    ctx = _ctx()
    e = ctx.store.get_execution(ctx.project_id, ref)
    path = ctx.settings.logs_dir / f"{e.id}.log"
    wanted = {"all": ("out", "err"), "stdout": ("out",), "stderr": ("err",)}[stream]

    def emit(line: str) -> None:
        parsed = parse_log_line(line)
        if parsed is None:
            return
        when, which, text = parsed
        if which not in wanted:
            return
        if timestamps:
            text = datetime.fromtimestamp(when).strftime("%H:%M:%S.%f")[:-3] + " " + text
        (sys.stdout if which == "out" else sys.stderr).write(text + "\n")

    if not path.exists():
        if e.log_digest:
            for line in ctx.content.read_bytes(e.log_digest).decode("utf-8", "replace").splitlines():
                emit(line)
        elif not follow:
            click.echo(f"#{e.counter} has no output yet ({e.status})", err=True)
            return
    if not path.exists() and not follow:
        return
    while follow and not path.exists():
        if ctx.store.get_execution(ctx.project_id, e.id).status.is_final:
            return
        time.sleep(0.2)
    with open(path, encoding="utf-8", errors="replace") as fh:
        pending = ""
        while True:
            chunk = fh.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    emit(pending)
                    pending = ""
                continue
            sys.stdout.flush()
            if not follow:
                break
            if ctx.store.get_execution(ctx.project_id, e.id).status.is_final:
                rest = fh.read()
                for line in (pending + rest).splitlines():
                    emit(line)
                break
            time.sleep(0.2)


@click.command(short_help="Show an execution's metrics.")
@click.argument("ref")
@click.option("--csv", "as_csv", is_flag=True, help="Write CSV (one row per event).")
@click.option("--key", "keys", multiple=True, help="Only these metrics.")
def metrics(ref: str, as_csv: bool, keys: tuple[str, ...]) -> None:
    """Metrics of execution REF: one row per step, one column per metric."""
    ctx = _ctx()
    e = ctx.store.get_execution(ctx.project_id, ref)
    points = ctx.store.get_metrics(e.id)
    if keys:
        points = [p for p in points if p.key in keys]
    if not points:
        click.echo(f"#{e.counter} has no metrics", err=True)
        return
    columns: list[str] = []
    rows: dict[Any, dict[str, Any]] = {}
    order: list[Any] = []
    for p in points:
        if p.key not in columns:
            columns.append(p.key)
        # Points of one event share a step; without steps each event is its own row.
        row_key = ("step", p.step) if p.step is not None else ("time", p.time)
        if row_key not in rows:
            rows[row_key] = {"_step": p.step, "_time": p.time}
            order.append(row_key)
        rows[row_key][p.key] = p.value
    headers = ["step", *columns]
    table_rows = [[rows[k]["_step"], *[rows[k].get(c) for c in columns]] for k in order]
    if as_csv:
        click.echo(render.to_csv(["step", "time", *columns],
                                 [[rows[k]["_step"], rows[k]["_time"],
                                   *[rows[k].get(c) for c in columns]] for k in order]), nl=False)
        return
    click.echo(render.table(headers, [[r[0], *[render.value(v) for v in r[1:]]]
                                      for r in table_rows], right=range(len(headers))))
    series = {c: [p.value for p in points if p.key == c] for c in columns}
    plotted = {c: v for c, v in series.items() if len(v) > 1}
    if plotted:
        click.echo()
        width = max(len(c) for c in plotted)
        for c, values in plotted.items():
            click.echo(f"{c:<{width}}  {render.sparkline(values)}  "
                       f"{render.value(values[0])} → {render.value(values[-1])}  "
                       f"(min {render.value(min(values))}, max {render.value(max(values))})")


@click.command(short_help="Compare executions side by side.")
@click.argument("refs", nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True, help="Also show rows where all values agree.")
def compare(refs: tuple[str, ...], show_all: bool) -> None:
    """Parameters and final metrics of executions REFS side by side; differences stand out."""
    ctx = _ctx()
    exs = [ctx.store.get_execution(ctx.project_id, r) for r in refs]
    headers = ["", *[f"#{e.counter} {e.step}" for e in exs]]
    rows: list[list[str]] = []

    def add(section: str, getter: Any, keys: list[str], always: bool = False) -> None:
        body = []
        for k in keys:
            vals = [render.value(getter(e).get(k)) if k in getter(e) else "-" for e in exs]
            differ = len(set(vals)) > 1
            if not differ and not (show_all or always):
                continue
            if differ:
                vals = [click.style(v, fg="yellow", bold=True) for v in vals]
                k = click.style(k, fg="yellow")
            body.append([f"  {k}", *vals])
        if body:
            rows.append([click.style(section, bold=True), *["" for _ in exs]])
            rows.extend(body)

    add("run", lambda e: {"status": e.status.value, "duration": render.duration(e.duration)},
        ["status", "duration"], always=True)
    add("parameters", lambda e: e.parameters, _union([e.parameters for e in exs]))
    add("inputs", _input_digests, _union([_input_digests(e) for e in exs]))
    add("metrics", lambda e: e.metrics, _union([e.metrics for e in exs]), always=True)
    add("code", lambda e: {"tree": e.code.tree_digest[:12] if e.code else "-"}, ["tree"])
    click.echo(render.table(headers, rows))
    if not show_all:
        click.echo(click.style("(parameters, inputs and code that agree are hidden; "
                               "--all shows them)", dim=True))


def _input_digests(e: Execution) -> dict[str, str]:
    from cairn.store.cas import hash_bytes

    by: dict[str, list[str]] = {}
    for f in e.inputs:
        by.setdefault(f.input_name, []).append(f"{f.name}:{f.digest}")
    return {k: (v[0].split(":")[1][:12] if len(v) == 1 else
                f"{len(v)} files {hash_bytes(''.join(sorted(v)).encode())[:8]}")
            for k, v in by.items()}


def _union(dicts: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    return keys


@click.command(short_help="List or download an execution's outputs.")
@click.argument("ref")
@click.option("--download", "dest", type=click.Path(file_okay=False),
              help="Copy the outputs into this folder (keeping their paths).")
@click.option("--force", is_flag=True, help="With --download: overwrite files that exist.")
@click.option("--format", "fmt", type=FORMATS, default="table")
def outputs(ref: str, dest: str | None, force: bool, fmt: str) -> None:
    """The output files (datums) of execution REF."""
    ctx = _ctx()
    e = ctx.store.get_execution(ctx.project_id, ref)
    datums = ctx.store.list_datums(ctx.project_id, execution_id=e.id)
    if dest:
        from pathlib import Path

        from cairn.errors import InputError
        from cairn.units import count

        targets = [Path(dest) / d.name for d in datums]
        there = [t for t in targets if t.exists() or t.is_symlink()]
        if there and not force:
            raise InputError(f"{count(len(there), 'output')} of #{e.counter} exist in {dest} "
                             f"already, e.g. {there[0]}",
                             "use --force to overwrite them, or download into another folder")
        with click.progressbar(list(zip(datums, targets)),
                               label=f"downloading {count(len(datums), 'file')}",
                               file=sys.stderr) as bar:
            for d, target in bar:
                ctx.content.materialize(d.digest, target, link=False)
        click.echo(f"{count(len(datums), 'file')} written to {dest}", err=True)
        return
    rows = [[d.name, render.size(d.size) if fmt == "table" else d.size, d.uri,
             d.digest[:16] if fmt == "table" else d.digest, ",".join(d.tags)] for d in datums]
    if not rows:
        click.echo(f"#{e.counter} has no outputs", err=True)
        return
    render.emit(["name", "size", "uri", "digest", "tags"], rows, fmt, right=[1])


@click.command(short_help="Tag an execution.")
@click.argument("ref")
@click.argument("names", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove these tags instead.")
def tag(ref: str, names: tuple[str, ...], remove: bool) -> None:
    """Add tags NAMES to execution REF (or remove them with --remove)."""
    ctx = _ctx()
    e = ctx.store.get_execution(ctx.project_id, ref)
    if remove:
        ctx.store.remove_tags(e.id, names)
    else:
        ctx.store.add_tags(e.id, names)
    e = ctx.store.get_execution(ctx.project_id, e.id)
    click.echo(f"#{e.counter} tags: {', '.join(e.tags) or '(none)'}")
