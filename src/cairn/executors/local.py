"""The local executor: runs an execution as a process group on this machine."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from cairn.errors import InputError
from cairn.executors.base import Executor, Outcome, Reporter, register_executor
from cairn.runtime.codetrace import code_reads, trace_environment, traceable
from cairn.runtime.inputs import materialize_inputs
from cairn.runtime.metrics import MetricSink
from cairn.runtime.output_metadata import apply_output_metadata
from cairn.runtime.outputs import LiveOutputs, collect_outputs
from cairn.runtime.process import LogWriter, run_process
from cairn.runtime.snapshot import restore_code
from cairn.runtime.workspace import Workspace, step_environment, write_config
from cairn.units import count as plural, format_size

if TYPE_CHECKING:
    from cairn.entities import Execution
    from cairn.orchestration.context import Context
    from cairn.store.base import Allocation

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    """Processes on this machine, each in its own workspace in the data folder."""

    name = "local"

    def __init__(self, ctx: Context, *, grace_seconds: float | None = None) -> None:
        self.ctx = ctx
        self.grace_seconds = grace_seconds

    def grace_for(self, execution: Execution) -> float:
        """Seconds between SIGTERM and SIGKILL when it is stopped or preempted: the
        environment's ``grace-seconds``, else the ``stop-grace-seconds`` setting."""
        if self.grace_seconds is not None:
            return self.grace_seconds
        env = (execution.environment.get("machine_environment") or {}).get("grace_seconds")
        return float(env if env is not None else self.ctx.settings.stop_grace_seconds)

    def execute(self, execution: Execution, allocation: Allocation, reporter: Reporter) -> Outcome:
        ctx, settings = self.ctx, self.ctx.settings
        store, content = ctx.store, ctx.content
        ws = Workspace.create(settings.work_dir, execution.id)
        log_path = settings.logs_dir / f"{execution.id}.log"
        writer = LogWriter(log_path)

        def system(text: str) -> None:
            writer.write("err", f"[cairn] {text}", time.time())
            reporter.line("sys", text)

        try:
            image = execution.step_config.get("image")
            if image:
                system(f"image {image} not used: the local executor runs steps in this "
                       "machine's environment (no container engine)")
            if execution.code is not None:
                count = restore_code(execution.code.tree_digest, content, ws.repository)
                system(f"code: {plural(count, 'file')} from snapshot "
                       f"{execution.code.tree_digest[:12]}")
            try:
                materialize_inputs(execution.inputs, ws.inputs, content)
            except InputError as exc:
                system(f"cannot start: {exc.message}")
                return Outcome(exit_code=None, reason="failed-to-start", detail=str(exc),
                               log_digest=None)
            if execution.inputs:
                total = sum(f.size for f in execution.inputs)
                system(f"inputs: {plural(len(execution.inputs), 'file')}, {format_size(total)}")
            write_config(ws, execution, project_name=ctx.project.name, inputs=execution.inputs)
            argv = _command_argv(ws, execution.command)
            env = step_environment(
                ws, execution, base=os.environ,
                variables=execution.environment.get("step_variables", {}),
                gpu_ids=allocation.gpu_ids,
            )
            traced = execution.code is not None and traceable(execution.command)
            if traced:
                trace_environment(env, ws.root / "code-trace")
            sink = MetricSink(
                lambda points: store.add_metrics(execution.id, points),
                lambda values: store.set_metadata(execution.id, values),
            )
            def started(pid: int) -> None:
                (ws.root / "pid").write_text(str(pid))  # lets a reaper end an orphan
                reporter.started(pid)

            live = LiveOutputs(ws.outputs, content, project_id=execution.project_id,
                               execution_id=execution.id, record=store.add_datums)
            try:
                with live:
                    result = run_process(
                        argv, cwd=ws.repository, env=env, log=writer, metrics=sink,
                        on_line=reporter.line, on_start=started,
                        should_stop=reporter.should_stop,
                        time_limit=execution.time_limit,
                        no_output_timeout=execution.no_output_timeout,
                        grace_seconds=self.grace_for(execution),
                    )
            finally:
                sink.close()
            reads = None
            if traced and execution.code is not None:
                reads = code_reads(ws.root / "code-trace", execution.command,
                                   ((e.path, e.digest)
                                    for e in content.iter_tree(execution.code.tree_digest)))
            detail = result.detail
            if result.reason == "exited" and result.exit_code == 127:
                detail = "a command was not found (exit 127)" + (
                    f": {result.last_stderr[-1]}" if result.last_stderr else "")
            elif result.reason == "exited" and result.exit_code is None:
                detail = result.detail  # could not start at all
            if sink.errors:
                system(f"some metrics could not be stored: {sink.errors[0]}")
            with content.blobs.batch():  # a remote store uploads them in parallel
                collected = collect_outputs(
                    ws.outputs, content, project_id=execution.project_id,
                    execution_id=execution.id, move=not settings.keep_workspaces,
                )
            store.add_datums(collected.datums)
            collected.refused += apply_output_metadata(
                store, content, project_id=execution.project_id,
                execution_id=execution.id, datums=collected.datums)
            for message in collected.refused:
                system(f"refused: {message}")
            if live.datums:
                system(f"live outputs: {plural(len(live.datums), 'file')} stored while it ran")
                collected.datums[:0] = live.datums
            system(f"outputs: {plural(len(collected.datums), 'file')}, "
                   f"{format_size(sum(d.size for d in collected.datums))}")
        finally:
            writer.close()
            if not settings.keep_workspaces:
                ws.remove()
        log_digest, _ = content.put_file(log_path)
        return Outcome(
            exit_code=result.exit_code,
            reason=result.reason if result.exit_code is not None or result.reason != "exited"
            else "failed-to-start",
            detail=detail,
            datums=collected.datums,
            refused_outputs=collected.refused,
            log_digest=log_digest,
            metric_points=sink.count,
            code_reads=reads,
        )


def _command_argv(ws: Workspace, commands: list[str]) -> list[str]:
    """The interpreter argv that runs the step's commands as one script."""
    from cairn.project.commands import build_script

    argv, script = build_script(commands)
    (ws.config / "command.sh").write_text(script)  # for the curious; the record has it too
    return [*argv, script]


register_executor("local", LocalExecutor)
