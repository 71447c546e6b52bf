"""``cairn run``, ``cairn rerun`` and ``cairn stop``."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from cairn.cli import render

if TYPE_CHECKING:
    from cairn.entities import Execution
    from cairn.orchestration.context import Context
    from cairn.project import Step
    from cairn.project.step import InputSpec

_TYPE_METAVARS = {"string": "TEXT", "integer": "INTEGER", "float": "FLOAT", "flag": ""}


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    short_help="Run a step.",
)
@click.argument("step", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(click_ctx: click.Context, step: str | None, args: tuple[str, ...]) -> int:
    """Run STEP of cairn.yaml. `cairn run STEP --help` lists its parameters and inputs."""
    from cairn.orchestration.context import Context

    ctx = Context.load()
    if step is None or step in ("-h", "--help"):
        click.echo(click_ctx.get_help())
        steps = ctx.config.steps if _has_project(ctx) else {}
        if steps:
            click.echo("\nSteps:")
            for name, s in steps.items():
                click.echo(f"  {name:<20} {s.description or ''}".rstrip())
        return 0
    command = step_command(ctx.config.get_step(step))
    values = command.main(list(args), prog_name=f"cairn run {step}", standalone_mode=False)
    if isinstance(values, int):  # --help was shown
        return values
    return _run_step(ctx, step, values)


def _has_project(ctx: Context) -> bool:
    from cairn.errors import ProjectError

    try:
        ctx.config
    except ProjectError:
        return False
    return True


def step_command(step: Step) -> click.Command:
    """A click command whose options are the step's parameters plus cairn's run options."""
    params: list[click.Parameter] = []
    taken: set[str] = set()
    for i, p in enumerate(step.parameters):
        flag = f"--{p.name}"
        taken.add(flag)
        help_text = _param_help(p)
        if p.type == "flag":
            params.append(click.Option([f"{flag}/--no-{p.name}", f"p{i}"], default=None,
                                       help=help_text))
        else:
            params.append(click.Option(
                [flag, f"p{i}"], type=str, multiple=p.multiple != "none",
                metavar=_TYPE_METAVARS[p.type], help=help_text,
            ))

    # Each input is also an option of its own, as `vh exec run` has them: --NAME URI.
    for i, s in enumerate(step.inputs):
        flag = f"--{s.name}"
        if flag in taken:  # a parameter of the same name: --input NAME=URI still works
            continue
        taken.add(flag)
        params.append(click.Option([flag, f"in{i}"], multiple=True, metavar="URI",
                                   help=_input_help(s)))

    def opt(*decls: str, **kw: Any) -> None:
        if not any(d in taken for d in decls if d.startswith("--")):
            params.append(click.Option(list(decls), **kw))

    inputs_help = "; ".join(
        f"{s.name}{'' if s.default or s.optional else ' (required)'}" for s in step.inputs)
    opt("--input", "-i", "cairn_inputs", multiple=True, metavar="NAME=URI",
        help="An input: a path, folder, http(s):// URL, datum:// or dataset:// URI. "
             "Repeatable; --NAME URI does the same. "
             + (f"Inputs: {inputs_help}." if inputs_help else "This step has no inputs."))
    opt("--env", "-e", "cairn_env", multiple=True, metavar="NAME=VALUE",
        help="Set an environment variable for the step. Repeatable.")
    opt("--detach", "-d", "cairn_detach", is_flag=True,
        help="Return at once with the execution id; it runs in the background.")
    opt("--reuse/--no-reuse", "cairn_reuse", default=False,
        help="Reuse a completed execution with the same code, parameters, inputs and "
             "environment instead of running again (default: --no-reuse, always run).")
    opt("--environment", "cairn_environment", metavar="NAME",
        help="The environment (machine type) to run on; `cairn environments` lists them "
             "(default: the step's environment, else default-environment, else local).")
    opt("--priority", "cairn_priority", type=int, default=0, show_default=True,
        help="Its place in the queue: higher starts first; equal ones first come, first "
             "served.")
    opt("--title", "cairn_title", help="A title for the execution.")
    opt("--tag", "cairn_tags", multiple=True, help="Tag the execution. Repeatable.")
    opt("--cpus", "cairn_cpus", type=float, help="CPUs it needs (default: the step's resources, else 1).")
    opt("--memory", "cairn_memory", type=int, metavar="MB", help="Memory it needs, in MB.")
    opt("--gpus", "cairn_gpus", type=int, help="GPUs it needs (given via CUDA_VISIBLE_DEVICES).")
    opt("--quiet", "-q", "cairn_quiet", is_flag=True, help="Do not stream the step's output.")

    def callback(**values: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"parameters": {}}
        for i, p in enumerate(step.parameters):
            v = values.pop(f"p{i}", None)
            if v is None or v == ():
                continue
            out["parameters"][p.name] = list(v) if isinstance(v, tuple) else v
        given = list(values.pop("cairn_inputs", None) or ())
        for i, s in enumerate(step.inputs):
            given += [f"{s.name}={uri}" for uri in values.pop(f"in{i}", None) or ()]
        out.update(values, cairn_inputs=tuple(given))
        return out

    doc = (step.description or f"Run the step '{step.name}'.") + (
        "\n\nParameters are typed and checked before anything runs.")
    return click.Command(f"run {step.name}", params=params, callback=callback, help=doc,
                         context_settings={"help_option_names": ["-h", "--help"]})


def _param_help(p: Any) -> str:
    bits = [p.type]
    if p.default is not None:
        bits.append(f"default {render.value(p.default)}")
    elif not p.optional and p.type != "flag":
        bits.append("required")
    if p.min is not None or p.max is not None:
        bits.append(f"range [{'' if p.min is None else p.min}, {'' if p.max is None else p.max}]")
    if p.choices:
        bits.append("one of " + ", ".join(map(str, p.choices)))
    if p.multiple != "none":
        bits.append("repeatable")
    text = "; ".join(bits)
    return f"{p.description} ({text})" if p.description else text


def _input_help(s: InputSpec) -> str:
    given = ("default " + ", ".join(s.default) if s.default else
             "optional" if s.optional else "required")
    text = f"input: a path, folder, URL, datum:// or dataset:// URI ({given}); repeatable"
    return f"{s.description} ({text})" if s.description else text


def _pairs(values: tuple[str, ...] | None, what: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values or ():
        name, sep, val = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected {what}=VALUE, got {item!r}")
        out.setdefault(name, []).append(val)
    return out


def _run_step(ctx: Context, step: str, values: dict[str, Any]) -> int:
    from cairn.orchestration.runs import RunRequest, create_or_reuse

    env = {k: v[-1] for k, v in _pairs(values.get("cairn_env"), "NAME").items()}
    request = RunRequest(
        step=step,
        parameters=values["parameters"],
        inputs=_pairs(values.get("cairn_inputs"), "NAME"),
        variables=env,
        title=values.get("cairn_title"),
        tags=values.get("cairn_tags") or (),
        cpus=values.get("cairn_cpus"),
        memory_mb=values.get("cairn_memory"),
        gpus=values.get("cairn_gpus"),
        reuse=bool(values.get("cairn_reuse")),
        environment=values.get("cairn_environment"),
        priority=int(values.get("cairn_priority") or 0),
    )
    execution, reused = create_or_reuse(ctx, request)
    if reused:
        _say(f"#{execution.counter} {execution.step} ({execution.id}) reused: it completed with "
             "the same code, parameters, inputs and environment; --no-reuse runs it again")
        if values.get("cairn_detach"):
            click.echo(execution.id)
        else:
            _summary(ctx, execution)
        return 0
    return _launch(ctx, execution, detach=bool(values.get("cairn_detach")),
                   quiet=bool(values.get("cairn_quiet")))


def _launch(ctx: Context, execution: Execution, *, detach: bool, quiet: bool) -> int:
    from cairn.orchestration.runs import exit_code_for, start_detached, supervise

    note = f"#{execution.counter} {execution.step} ({execution.id})"
    if detach:
        pid = start_detached(ctx, execution)
        where = f"the scheduler (pid {pid}) starts it" if pid else "it left the queue"
        _say(f"{note} queued; {where}; `cairn queue` shows the queue, "
             f"`cairn logs {execution.counter} --follow` its output")
        click.echo(execution.id)
        return 0
    _say(f"{note} {'re-running #' + _counter_of(ctx, execution.rerun_of) if execution.rerun_of else 'started'}")
    final = supervise(ctx, execution, on_line=None if quiet else _Printer())
    _summary(ctx, final)
    return exit_code_for(final)


def _counter_of(ctx: Context, execution_id: str | None) -> str:
    return str(ctx.store.get_execution(ctx.project_id, execution_id).counter) if execution_id else "?"


class _Printer:
    """Streams the step's output to this terminal as it arrives."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, stream: str, text: str) -> None:
        if stream == "sys":
            _say(text)
            return
        out = sys.stdout if stream == "out" else sys.stderr
        with self.lock:
            out.write(text + "\n")
            out.flush()


def _say(text: str) -> None:
    click.echo(click.style("cairn: ", fg="cyan") + text, err=True)


def _summary(ctx: Context, ex: Execution) -> None:
    outputs = ctx.store.list_datums(ex.project_id, execution_id=ex.id)
    parts = [f"#{ex.counter} {render.status(ex.status.value)} in {render.duration(ex.duration)}",
             f"{len(outputs)} output{'s' if len(outputs) != 1 else ''}"]
    numeric = {k: v for k, v in ex.metrics.items() if isinstance(v, (int, float))}
    if numeric:
        parts.append(", ".join(f"{k}={render.value(v)}" for k, v in list(numeric.items())[:6]))
    _say(" · ".join(parts))
    if ex.status_detail and ex.status.value != "complete":
        _say(ex.status_detail)


@click.command(short_help="Re-run an execution exactly.")
@click.argument("ref")
@click.option("--detach", "-d", is_flag=True, help="Return at once; it runs in the background.")
@click.option("--quiet", "-q", is_flag=True, help="Do not stream the step's output.")
def rerun(ref: str, detach: bool, quiet: bool) -> int:
    """Run execution REF again with the same code bytes, parameters and input digests
    (not whatever is in the folder now). REF is a counter (12, #12) or an id."""
    from cairn.orchestration.context import Context
    from cairn.orchestration.runs import create_rerun

    ctx = Context.load()
    return _launch(ctx, create_rerun(ctx, ref), detach=detach, quiet=quiet)


@click.command(short_help="Stop executions.")
@click.argument("refs", nargs=-1, required=True)
def stop(refs: tuple[str, ...]) -> int:
    """Stop queued or running executions (REFS: counters or ids)."""
    from cairn.orchestration.context import Context
    from cairn.orchestration.scheduler import Scheduler

    ctx = Context.load()
    scheduler = Scheduler(ctx)
    for ref in refs:
        ex = scheduler.stop(ctx.store.get_execution(ctx.project_id, ref))
        state = "stopped" if ex.status.is_final else "stopping"
        _say(f"#{ex.counter} {state}")
    return 0
