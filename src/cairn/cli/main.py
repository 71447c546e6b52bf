"""``cairn``: the entry point, the command group and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from cairn.errors import (
    CairnError,
    InputError,
    NotFoundError,
    OutputError,
    ParameterError,
    ProjectError,
    StoreError,
)

# Exit codes: 0 ok, 1 failure, 2 bad usage or values, 3 project file, 4 not found, 5 store.
EXIT_CODES: list[tuple[type[CairnError], int]] = [
    (ProjectError, 3),
    (NotFoundError, 4),
    (StoreError, 5),
    (ParameterError, 2),
    (InputError, 2),
    (OutputError, 2),
]


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps --help fast)."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name]
            import importlib

            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP[name]) for name in COMMAND_ORDER]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


HELP = {
    "init": "Write a commented starter cairn.yaml.",
    "lint": "Check cairn.yaml / valohai.yaml; every problem with file:line:column.",
    "run": "Run a step: cairn run STEP [--param=value ...] [--input NAME=URI ...].",
    "rerun": "Run an execution again exactly: same code bytes, parameters, inputs.",
    "ls": "List executions (filter by step/status/tag, sort by a metric).",
    "show": "Everything recorded about one execution.",
    "logs": "Print (or --follow) an execution's output.",
    "metrics": "An execution's metrics as a table (or --csv).",
    "compare": "Parameters and final metrics of executions side by side.",
    "outputs": "An execution's output files (datums); --download DIR.",
    "stop": "Stop queued or running executions.",
    "tag": "Add (or --remove) tags on an execution.",
    "data": "Datums: ls, show, get, alias, aliases, push, pull.",
    "dataset": "Dataset versions: add, ls, show, diff, checkout.",
    "lineage": "Where a datum, dataset version or execution came from, what used it.",
    "pipeline": "Pipelines: cairn pipeline run NAME, ls, show, stop, resume.",
    "task": "Sweeps: cairn task run TASK|STEP, ls, show, stop.",
    "environments": "Machine types to run on: capacity, price, what runs and waits there.",
    "queue": "Queued executions in the order they start (priority, then first come).",
    "scheduler": "Dispatch detached executions as capacity frees (runs as a service).",
    "gc": "Remove blobs that nothing references (--dry-run first).",
    "store": "Blob store checks (cairn store verify).",
    "db": "Database maintenance (cairn db upgrade).",
}
COMMAND_ORDER = list(HELP)

_LAZY = {
    "init": ("cairn.cli.project_cmds", "init"),
    "lint": ("cairn.cli.project_cmds", "lint"),
    "run": ("cairn.cli.run_cmds", "run"),
    "rerun": ("cairn.cli.run_cmds", "rerun"),
    "stop": ("cairn.cli.run_cmds", "stop"),
    "ls": ("cairn.cli.inspect_cmds", "ls"),
    "show": ("cairn.cli.inspect_cmds", "show"),
    "logs": ("cairn.cli.inspect_cmds", "logs"),
    "metrics": ("cairn.cli.inspect_cmds", "metrics"),
    "compare": ("cairn.cli.inspect_cmds", "compare"),
    "outputs": ("cairn.cli.inspect_cmds", "outputs"),
    "tag": ("cairn.cli.inspect_cmds", "tag"),
    "db": ("cairn.cli.project_cmds", "db"),
    "data": ("cairn.cli.data_cmds", "data"),
    "dataset": ("cairn.cli.data_cmds", "dataset"),
    "lineage": ("cairn.cli.data_cmds", "lineage"),
    "gc": ("cairn.cli.data_cmds", "gc"),
    "environments": ("cairn.cli.env_cmds", "environments"),
    "queue": ("cairn.cli.env_cmds", "queue"),
    "scheduler": ("cairn.cli.env_cmds", "scheduler"),
    "pipeline": ("cairn.cli.pipeline_cmds", "pipeline"),
    "store": ("cairn.cli.data_cmds", "store"),
    "task": ("cairn.cli.task_cmds", "task"),
}


@click.group(cls=LazyGroup, lazy=_LAZY, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cairn", prog_name="cairn")
def cli() -> None:
    """cairn: every run of your code, versioned: code, parameters, data, environment,
    outputs and metrics. Reads cairn.yaml or valohai.yaml in this folder or above."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises for user errors)."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="cairn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except CairnError as exc:
        _show_error(exc)
        return _exit_code(exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    return result if isinstance(result, int) else 0


def _show_error(exc: CairnError) -> None:
    if isinstance(exc, ProjectError) and exc.problems:
        from cairn.cli.render import problem

        for p in exc.problems:  # file:line:col: error: message, as compilers print them
            if p.severity == "error":
                click.echo(problem(p), err=True)
        return
    head = click.style("error:", fg="red", bold=True)
    first, *rest = exc.message.splitlines() or [""]
    click.echo(f"{head} {first}", err=True)
    for line in rest:  # several problems at once (e.g. parameters): one per line
        click.echo(f"       {line}", err=True)
    if exc.hint:
        click.echo(f"  {click.style('hint:', fg='cyan')} {exc.hint}", err=True)


def _exit_code(exc: CairnError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def entry() -> None:
    """Console-script entry point."""
    _exit(main())


def _exit(code: int) -> NoReturn:
    """End the process with ``code`` without tearing the interpreter down.

    Once a command is done, freeing every module and object it loaded (SQLAlchemy's alone
    are tens of thousands) takes 80-130 ms here: a fifth of a quick command, spent on
    memory the kernel reclaims anyway. So the exit handlers run, standard output and
    error are flushed, and the process ends. Should a thread other than daemons still
    run, the interpreter's own exit waits for it as usual.
    """
    import atexit
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush, temporary folders, child processes
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(code)
