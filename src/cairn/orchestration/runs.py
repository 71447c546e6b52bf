"""Creating executions (new runs and exact re-runs) and supervising them to their end."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cairn.entities import CodeSnapshot, Execution, InputFile, Resources, Status
from cairn.errors import InputError
from cairn.orchestration.scheduler import Scheduler, StopSignals
from cairn.store.base import NewExecution

if TYPE_CHECKING:
    from cairn.orchestration.context import Context
    from cairn.project import Step

LineCallback = Callable[[str, str], None]


@dataclass
class RunRequest:
    """What a user asks for: a step and the values they set."""

    step: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Sequence[str]] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    title: str | None = None
    tags: Sequence[str] = ()
    cpus: float | None = None
    memory_mb: int | None = None
    gpus: int | None = None
    reuse: bool = False  # reuse a completed execution with the same fingerprint
    environment: str | None = None  # machine type; None: the step's, else the default
    priority: int = 0  # the queue's order: higher first, then first queued first
    autorestart: int | None = None  # restarts after a crash; None: the step's, else the environment's


@dataclass
class Snapshot:
    """Code and environment captured once and shared by many executions (a pipeline's)."""

    code: CodeSnapshot
    environment: dict[str, Any]
    _index: Any = None

    def code_index(self, ctx: Context) -> Any:
        """Path → digest of the snapshot, for the result cache (read once, shared)."""
        from cairn.orchestration.cache import CodeIndex

        if self._index is None:
            self._index = CodeIndex(ctx.content, self.code)
        return self._index

    @classmethod
    def capture(cls, ctx: Context) -> Snapshot:
        from cairn.runtime.environment import capture_environment
        from cairn.runtime.snapshot import snapshot_code

        code = snapshot_code(ctx.settings.project_root, ctx.content, data_dir=ctx.settings.data_dir)
        environment = capture_environment(ctx.content, ctx.settings.data_dir / "cache")
        return cls(code, environment)


def create_execution(ctx: Context, request: RunRequest) -> Execution:
    """Validate everything, snapshot code and inputs, and store a queued execution.

    All user errors (unknown step, bad parameters, missing inputs) are raised before
    anything is stored.
    """
    return create_or_reuse(ctx, request)[0]


def create_or_reuse(
    ctx: Context,
    request: RunRequest,
    *,
    step: Step | None = None,
    snapshot: Snapshot | None = None,
    enqueue: bool = True,
) -> tuple[Execution, bool]:
    """A new queued execution, or with ``request.reuse`` a completed one with the same
    fingerprint; and whether it was reused.

    ``step`` runs instead of the project file's step called ``request.step`` (a pipeline
    node's step with its overrides); ``snapshot`` instead of capturing code and
    environment again. With ``enqueue=False`` a new one is left ``created``: a caller
    that holds executions back by its own parallelism queues each when it may start
    (the queue's order counts only executions whose waiter is ready to start them).
    """
    snapshot = snapshot or Snapshot.capture(ctx)
    new = prepare_execution(ctx, request, step=step, snapshot=snapshot)
    if request.reuse:
        from cairn.orchestration.cache import find_reusable

        found = find_reusable(ctx.store, ctx.project_id, new, snapshot.code_index(ctx))
        if found is not None:
            return found, True
    if not enqueue:
        return ctx.store.create_execution(new), False
    return _store_and_queue(ctx, new), False


def prepare_execution(
    ctx: Context,
    request: RunRequest,
    *,
    step: Step | None = None,
    snapshot: Snapshot | None = None,
) -> NewExecution:
    """Everything an execution will be, checked, with its fingerprint; nothing stored."""
    from cairn.orchestration.cache import fingerprint
    from cairn.project import resolve_parameters
    from cairn.project.commands import render_command

    if step is None:
        step = ctx.config.get_step(request.step)
    parameters = resolve_parameters(step, request.parameters)
    command = render_command(step, parameters)
    inputs = _resolve_inputs(ctx, step, request.inputs)
    variables = _resolve_variables(step, request.variables)
    from cairn.orchestration.environments import check_fits, choose_environment

    machine = choose_environment(ctx.settings, request.environment, step.environment)
    resources = _resources(step, request)
    check_fits(ctx, machine, resources, f"step '{step.name}'")
    if machine.backend == "ray":
        from cairn.executors.ray_backend import import_ray

        import_ray()  # a missing extra is an error now, not when it is dispatched
    snapshot = snapshot or Snapshot.capture(ctx)
    restarts = request.autorestart
    if restarts is None:
        restarts = step.autorestart or machine.autorestart
    environment = dict(snapshot.environment, step_variables=variables,
                       machine_environment=machine.to_record(), autorestart=int(restarts))
    new = NewExecution(
        project_id=ctx.project_id,
        step=step.name,
        parameters=parameters,
        command=command,
        inputs=inputs,
        code=snapshot.code,
        environment=environment,
        step_config=step.to_dict(),
        resources=resources,
        title=request.title,
        tags=tuple(request.tags),
        time_limit=step.time_limit,
        no_output_timeout=step.no_output_timeout,
        priority=request.priority,
    )
    return replace(new, fingerprint=fingerprint(new))


def create_rerun(ctx: Context, ref: str | int) -> Execution:
    """A new execution with the same code bytes, parameters, inputs and command as ``ref``."""
    from cairn.orchestration.cache import fingerprint
    from cairn.runtime.environment import capture_environment

    original = ctx.store.get_execution(ctx.project_id, ref)
    missing = [f for f in original.inputs if not ctx.content.has(f.digest)]
    if original.code is not None and not ctx.content.has(original.code.tree_digest):
        raise InputError(f"the code snapshot of #{original.counter} is no longer in the store",
                         "it cannot be re-run exactly; run the step again instead")
    if missing:
        raise InputError(
            f"{len(missing)} input file(s) of #{original.counter} are no longer in the store "
            f"(first: {missing[0].input_name}/{missing[0].name})",
            "it cannot be re-run exactly; run the step again instead",
        )
    environment = capture_environment(ctx.content, ctx.settings.data_dir / "cache")
    environment["step_variables"] = original.environment.get("step_variables", {})
    if original.environment.get("machine_environment"):
        environment["machine_environment"] = original.environment["machine_environment"]
    new = NewExecution(
        project_id=ctx.project_id,
        step=original.step,
        parameters=original.parameters,
        command=original.command,
        inputs=original.inputs,
        code=original.code,
        environment=environment,
        step_config=original.step_config,
        resources=original.resources,
        title=original.title,
        tags=original.tags,
        rerun_of=original.id,
        time_limit=original.time_limit,
        no_output_timeout=original.no_output_timeout,
        priority=original.priority,
    )
    return _store_and_queue(ctx, replace(new, fingerprint=fingerprint(new)))


RESTART_INPUT = "_restart"
"""The input a restarted execution finds its crashed predecessor's outputs in."""


def autorestart(ctx: Context, execution_id: str) -> Execution | None:
    """Queue a new execution continuing a crashed (or preempted) one, if its step or
    environment asks for automatic restarts and it has restarts left; None otherwise.

    The new execution runs the same code snapshot, command, parameters and inputs, plus the
    crashed one's outputs (its checkpoints) as the input ``_restart``. It goes to the shared
    queue, where this host's scheduler (started if needed) or any other dispatches it.
    Executions of a pipeline or sweep are left to it (``on-error: retry``).
    """
    from cairn.orchestration.cache import fingerprint

    store = ctx.store
    crashed = store.get_execution(ctx.project_id, execution_id)
    budget = int(crashed.environment.get("autorestart") or 0)
    if crashed.status != Status.CRASHED or budget <= 0 or store.flows_of_execution(crashed.id):
        return None
    done, ref = 0, crashed
    while ref.restart_of:
        done += 1
        ref = store.get_execution(ctx.project_id, ref.restart_of)
    if done >= budget:
        return None
    outputs = store.list_datums(ctx.project_id, execution_id=crashed.id)
    inputs = [f for f in crashed.inputs if f.input_name != RESTART_INPUT] + [
        InputFile(RESTART_INPUT, d.name, f"datum://{d.id}", d.digest, d.size, d.id)
        for d in outputs]
    new = NewExecution(
        project_id=crashed.project_id, step=crashed.step, parameters=crashed.parameters,
        command=crashed.command, inputs=inputs, code=crashed.code,
        environment=crashed.environment, step_config=crashed.step_config,
        resources=crashed.resources, title=crashed.title, tags=crashed.tags,
        time_limit=crashed.time_limit, no_output_timeout=crashed.no_output_timeout,
        priority=crashed.priority, restart_of=crashed.id,
    )
    restarted = _store_and_queue(ctx, replace(new, fingerprint=fingerprint(new)))
    start_detached(ctx, restarted)
    return restarted


def _store_and_queue(ctx: Context, new: NewExecution) -> Execution:
    execution = ctx.store.create_execution(new)
    return Scheduler(ctx).enqueue(execution)


def supervise(
    ctx: Context,
    execution: Execution,
    *,
    on_line: LineCallback | None = None,
) -> Execution:
    """Wait for a slot, run the execution on the local executor, record how it ended."""
    from cairn.executors.base import get_executor

    scheduler = Scheduler(ctx)
    store = ctx.store

    class _Reporter:
        def started(self, pid: int) -> None:
            scheduler.running(execution.id)

        def should_stop(self) -> bool:
            if signals.requested:
                return True
            return store.execution_status(execution.id)[1]

        def line(self, stream: str, text: str) -> None:
            if on_line is not None:
                on_line(stream, text)

    backend = (execution.environment.get("machine_environment") or {}).get("backend", "local")
    with StopSignals() as signals:
        reporter = _Reporter()
        wait = scheduler.wait_for_slot if backend == "local" else scheduler.wait_for_dispatch
        allocation = scheduler.claimed(execution) or wait(
            execution, should_stop=reporter.should_stop,
            on_wait=(lambda msg: on_line("sys", msg)) if on_line else None,
        )
        if allocation is not None:
            try:
                outcome = get_executor(backend, ctx).execute(
                    store.get_execution(execution.project_id, execution.id), allocation, reporter)
            except BaseException as exc:
                scheduler.crash(execution.id, f"cairn failed while running it: {exc!r}")
                raise
            if (outcome.reason == "stopped" and signals.preempted
                    and not store.execution_status(execution.id)[1]):
                # SIGTERM to cairn that no `cairn stop` asked for: the machine is going away
                # (a spot instance reclaimed, a node drained). Not the user's stop.
                outcome = replace(outcome, reason="crashed", detail=(
                    "preempted: cairn got SIGTERM; the step was given its grace period to "
                    "save checkpoints to its outputs, which were kept"))
            scheduler.finish(execution.id, outcome)
    return store.get_execution(execution.project_id, execution.id)


def start_detached(ctx: Context, execution: Execution) -> int | None:
    """Hand the queued execution to the shared queue and make sure this host's scheduler
    process runs to dispatch it; returns the scheduler's pid (None: it already left the
    queue, e.g. stopped)."""
    from cairn.orchestration.dispatch import ensure_scheduler

    if not Scheduler(ctx).share(execution):
        return None
    return ensure_scheduler(ctx)


def start_supervisor(ctx: Context, execution: Execution) -> int:
    """Supervise the execution from a background process; returns its pid."""
    from cairn.orchestration.background import start_background

    return start_background(ctx, "cairn.orchestration.supervisor", execution.id,
                            f"{execution.id}.supervisor.log")


def _resolve_inputs(ctx: Context, step: Step, given: Mapping[str, Sequence[str]]) -> list[InputFile]:
    from cairn.runtime.inputs import resolve_input

    known = {spec.name for spec in step.inputs}
    unknown = sorted(set(given) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise InputError(
            f"step '{step.name}' has no input named '{unknown[0]}'",
            f"did you mean '{close[0]}'?" if close else
            (f"its inputs are: {', '.join(sorted(known))}" if known else "it takes no inputs"),
        )
    files: list[InputFile] = []
    for spec in step.inputs:
        uris = list(given.get(spec.name) or spec.default or [])
        if not uris:
            if spec.optional:
                continue
            raise InputError(
                f"step '{step.name}' needs input '{spec.name}' and it has no default",
                f"pass it with --input {spec.name}=PATH_OR_URI "
                f"(a file, a folder, an http(s):// URL or a datum:// URI)",
            )
        files.extend(resolve_input(
            spec.name, uris, content=ctx.content, store=ctx.store, project_id=ctx.project_id,
            base_dir=_cwd(), keep_directories=spec.keep_directories, filename=spec.filename,
        ))
    return files


def _resolve_variables(step: Step, given: Mapping[str, str]) -> dict[str, str]:
    from cairn.errors import ParameterError

    values = {v.name: str(v.default) for v in step.environment_variables if v.default is not None}
    values.update(given)
    missing = [v.name for v in step.environment_variables if not v.optional and v.name not in values]
    if missing:
        raise ParameterError(
            f"step '{step.name}' needs environment variable(s) {', '.join(missing)}",
            "pass them with --env NAME=VALUE",
        )
    return values


def _resources(step: Step, request: RunRequest) -> Resources:
    declared = step.resources or {}
    cpus = request.cpus if request.cpus is not None else declared.get("cpus")
    memory = request.memory_mb if request.memory_mb is not None else declared.get("memory_mb")
    gpus = request.gpus if request.gpus is not None else declared.get("gpus")
    return Resources(cpus=float(cpus) if cpus is not None else 1.0,
                     memory_mb=int(memory or 0), gpus=int(gpus or 0))


def _cwd():
    from pathlib import Path

    return Path.cwd()


def exit_code_for(execution: Execution) -> int:
    """The exit status `cairn run` ends with, mirroring the step's."""
    if execution.status == Status.COMPLETE:
        return 0
    if execution.status == Status.STOPPED:
        return 130
    if execution.status == Status.CRASHED:
        return 70
    if execution.exit_code and 0 < execution.exit_code < 256:
        return execution.exit_code
    if execution.status_detail and "time limit" in execution.status_detail:
        return 124
    return 1


