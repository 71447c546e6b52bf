"""The scheduler: the one owner of execution state transitions.

created → queued → starting → running → complete | error | stopped | crashed

Executors report what happens (started, ended); the scheduler turns that into state. The
queue lives in the metadata store, ordered by priority and then first come first served
(:meth:`MetadataStore.queue`). A queued execution is either *waited on* by a process of
this host (`cairn run` in a terminal, a pipeline's or sweep's driver: ``host`` and ``pid``
name it) or in the *shared queue* (``host`` unset: `cairn run --detach`), from which any
scheduler process pointed at the same database dispatches it
(:mod:`cairn.orchestration.dispatch`). Either way it starts once
:meth:`MetadataStore.allocate` finds room for it after those ahead of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from cairn.entities import ACTIVE_STATUSES, Execution, Resources, Status
from cairn.errors import ExecutionError
from cairn.orchestration.background import HOST, process_alive

if TYPE_CHECKING:
    from cairn.executors.base import Outcome
    from cairn.orchestration.context import Context
    from cairn.store.base import Allocation

log = logging.getLogger(__name__)


REAP_EVERY = 2.0
_last_reap = float("-inf")
_reap_lock = threading.Lock()


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Capacity:
    """What this machine offers to executions."""

    resources: Resources
    gpu_ids: tuple[int, ...]


def local_capacity(ctx: Context) -> Capacity:
    """CPUs, memory and GPUs of this machine, as limited by settings."""
    from cairn.runtime.environment import detect_gpus, total_memory_mb

    s = ctx.settings
    if s.local_gpus is None:
        gpu_ids = tuple(g["index"] for g in detect_gpus())
    else:
        gpu_ids = tuple(int(i) for i in s.local_gpus.split(",") if i.strip())
    cpus = s.local_cpus if s.local_cpus is not None else float(os.cpu_count() or 1)
    memory = s.local_memory_mb if s.local_memory_mb is not None else total_memory_mb()
    return Capacity(Resources(cpus=cpus, memory_mb=memory, gpus=len(gpu_ids)), gpu_ids)


class Scheduler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store

    # -- queue ------------------------------------------------------------------------
    def enqueue(self, execution: Execution) -> Execution:
        """created → queued, after checking the execution can ever fit this machine (a
        cluster backend's environment was checked against its nodes when submitted)."""
        cap = local_capacity(self.ctx)
        need = execution.resources
        problems = []
        backend = (execution.environment.get("machine_environment") or {}).get("backend")
        if backend not in (None, "local"):
            need = Resources(cpus=0.0, memory_mb=0, gpus=0)
        if need.gpus > cap.resources.gpus:
            problems.append(f"{need.gpus} GPU(s) but this machine has {cap.resources.gpus}")
        if need.cpus > cap.resources.cpus:
            problems.append(f"{need.cpus:g} CPUs but this machine offers {cap.resources.cpus:g}")
        if cap.resources.memory_mb and need.memory_mb > cap.resources.memory_mb:
            problems.append(f"{need.memory_mb} MB of memory but this machine offers "
                            f"{cap.resources.memory_mb} MB")
        if problems:
            self.store.transition(execution.id, Status.ERROR, expect=[Status.CREATED],
                                  ended_at=now(), status_detail="cannot run here: needs "
                                  + "; ".join(problems))
            raise ExecutionError(
                f"execution #{execution.counter} needs " + "; ".join(problems),
                "lower the step's `resources` or pass --cpus/--memory/--gpus to `cairn run`",
            )
        queued_at = now()
        # Waited on by this process until it hands it to the shared queue (`share`).
        if not self.store.transition(execution.id, Status.QUEUED, expect=[Status.CREATED],
                                     queued_at=queued_at, host=HOST, pid=os.getpid()):
            return self.store.get_execution(execution.project_id, execution.id)
        return replace(execution, status=Status.QUEUED, queued_at=queued_at, host=HOST,
                       pid=os.getpid())

    def share(self, execution: Execution) -> bool:
        """Hand a queued execution this process waits on to the shared queue, where a
        scheduler process (of any host on this database) dispatches it."""
        return self.store.transition(execution.id, Status.QUEUED, expect=[Status.QUEUED],
                                     host=None, pid=None)

    def wait_for_slot(
        self,
        execution: Execution,
        *,
        should_stop: Callable[[], bool],
        on_wait: Callable[[str], None] | None = None,
    ) -> Allocation | None:
        """Block until the queued execution is started on this host; None if stopped first."""
        cap = local_capacity(self.ctx)
        limit = self._parallel_limit(execution)
        delay, told = 0.02, False
        while True:
            self.reap_now_and_then()
            allocation = None
            if limit is None or self._active_in(execution.machine_environment) < limit:
                allocation = self.store.allocate(
                    execution.id, host=HOST, capacity=cap.resources, gpu_ids=cap.gpu_ids)
            if allocation is not None:
                # The supervisor's pid: `cairn stop` signals it, the reaper checks it.
                self.store.transition(execution.id, Status.STARTING, expect=[Status.STARTING],
                                      pid=os.getpid())
                return allocation
            if self.store.execution_status(execution.id)[0] != Status.QUEUED:
                return None  # stopped (or otherwise finished) while waiting
            if should_stop():
                self.store.transition(execution.id, Status.STOPPED, expect=[Status.QUEUED],
                                      ended_at=now(), status_detail="stopped while queued")
                return None
            if not told:
                self._wake_scheduler(execution)
                if on_wait is not None:
                    on_wait("waiting for a free slot on this machine "
                            f"(needs {execution.resources.cpus:g} CPU, "
                            f"{execution.resources.gpus} GPU)")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _wake_scheduler(self, execution: Execution) -> None:
        """Executions of the shared queue may be ahead of this one: make sure a scheduler
        process dispatches them (else this one would wait behind them forever)."""
        from cairn.orchestration.dispatch import ensure_scheduler, shared_waiting

        if shared_waiting(self.ctx):
            ensure_scheduler(self.ctx)

    def claimed(self, execution: Execution) -> Allocation | None:
        """The allocation of an execution a scheduler process of this host already
        started for this supervisor; None if it is not one."""
        from cairn.store.base import Allocation

        if execution.status != Status.STARTING or execution.host != HOST:
            return None
        self.store.transition(execution.id, Status.STARTING, expect=[Status.STARTING],
                              pid=os.getpid())
        return Allocation(gpu_ids=tuple(execution.gpu_ids))

    def dispatchable(self, execution: Execution) -> bool:
        """Whether a queued cluster execution may go now: its environment's
        ``max-parallel`` leaves room for it after those queued ahead of it there."""
        limit = self._parallel_limit(execution)
        if limit is None:
            return True
        room = limit - self._active_in(execution.machine_environment)
        if room <= 0:
            return False
        ahead = [ex.id for ex in self.store.queue(project_id=execution.project_id)
                 if ex.machine_environment == execution.machine_environment]
        return execution.id not in ahead or ahead.index(execution.id) < room

    def below_parallel_limit(self, execution: Execution) -> bool:
        """Whether its environment's ``max-parallel`` (if any) leaves room for one more."""
        limit = self._parallel_limit(execution)
        return limit is None or self._active_in(execution.machine_environment) < limit

    def _parallel_limit(self, execution: Execution) -> int | None:
        """The ``max-parallel`` of the execution's environment, if it sets one."""
        from cairn.orchestration.environments import load_environments

        env = load_environments(self.ctx.settings).get(execution.machine_environment)
        return env.max_parallel if env is not None else None

    def _active_in(self, environment: str) -> int:
        active = self.store.list_executions(self.ctx.project_id,
                                            statuses=[Status.STARTING, Status.RUNNING])
        return sum(1 for ex in active if ex.machine_environment == environment)

    def wait_for_dispatch(
        self,
        execution: Execution,
        *,
        should_stop: Callable[[], bool],
        on_wait: Callable[[str], None] | None = None,
    ) -> Allocation | None:
        """Hand a queued execution to a cluster backend (which places it) once its
        environment's ``max-parallel`` allows; None if stopped first."""
        from cairn.store.base import Allocation

        limit = self._parallel_limit(execution)
        delay, told = 0.05, False
        while True:
            if self.dispatchable(execution):
                if self.store.transition(execution.id, Status.STARTING, expect=[Status.QUEUED],
                                         host=HOST, pid=os.getpid()):
                    return Allocation()
            if self.store.execution_status(execution.id)[0] != Status.QUEUED:
                return None
            if should_stop():
                self.store.transition(execution.id, Status.STOPPED, expect=[Status.QUEUED],
                                      ended_at=now(), status_detail="stopped while queued")
                return None
            if not told and on_wait is not None:
                on_wait(f"waiting: environment '{execution.machine_environment}' runs at most "
                        f"{limit} at once")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- reports from executors -------------------------------------------------------
    def running(self, execution_id: str) -> None:
        self.store.transition(execution_id, Status.RUNNING, expect=[Status.STARTING],
                              started_at=now())

    def finish(self, execution_id: str, outcome: Outcome) -> None:
        """Turn the executor's outcome into the final status."""
        if outcome.reason == "stopped":
            status, detail = Status.STOPPED, outcome.detail
        elif outcome.reason in ("time-limit", "no-output-timeout"):
            status, detail = Status.ERROR, outcome.detail
        elif outcome.reason == "failed-to-start":
            status, detail = Status.ERROR, outcome.detail
        elif outcome.reason == "crashed":
            status, detail = Status.CRASHED, outcome.detail
        elif outcome.exit_code == 0 and not outcome.refused_outputs:
            status, detail = Status.COMPLETE, outcome.detail
        elif outcome.exit_code == 0:
            status = Status.ERROR
            detail = "output problems: " + "; ".join(outcome.refused_outputs)
        else:
            status = Status.ERROR
            detail = outcome.detail or f"the command exited with status {outcome.exit_code}"
        changed = self.store.transition(
            execution_id, status, expect=ACTIVE_STATUSES, ended_at=now(),
            exit_code=outcome.exit_code, status_detail=detail, log_digest=outcome.log_digest,
            code_reads=outcome.code_reads,
        )
        if changed and status == Status.CRASHED:
            self._autorestart(execution_id)

    def crash(self, execution_id: str, detail: str) -> None:
        if self.store.transition(
            execution_id, Status.CRASHED,
            expect=[Status.CREATED, Status.QUEUED, Status.STARTING, Status.RUNNING],
            ended_at=now(), status_detail=detail,
        ):
            self._autorestart(execution_id)

    def _autorestart(self, execution_id: str) -> None:
        """Queue the restart of a crashed execution whose step or environment asks for it."""
        from cairn.orchestration.runs import autorestart

        try:
            restarted = autorestart(self.ctx, execution_id)
        except Exception as exc:  # noqa: BLE001 - the crash is recorded; say why no restart
            log.warning("could not restart execution %s: %s", execution_id, exc)
            return
        if restarted is not None:
            log.info("execution %s crashed; restarted as #%s", execution_id, restarted.counter)

    # -- user actions -----------------------------------------------------------------
    def stop(self, execution: Execution) -> Execution:
        """Stop a queued or running execution (a final one is left as it is)."""
        if execution.status.is_final:
            raise ExecutionError(
                f"execution #{execution.counter} already ended ({execution.status})",
                "only queued or running executions can be stopped",
            )
        if execution.status in (Status.CREATED, Status.QUEUED):
            if self.store.transition(execution.id, Status.STOPPED,
                                     expect=[Status.CREATED, Status.QUEUED],
                                     ended_at=now(), status_detail="stopped while queued"):
                return self.store.get_execution(execution.project_id, execution.id)
        self.store.request_stop(execution.id)
        if execution.host == HOST and execution.pid and _dedicated_supervisor(execution.pid):
            try:  # the supervisor stops its process group at once on SIGTERM
                os.kill(execution.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        # Otherwise (a pipeline's or sweep's driver supervising many, or another host) the
        # supervisor sees the stop request when it next polls (every 0.5 s).
        return self.store.get_execution(execution.project_id, execution.id)

    def reap_now_and_then(self) -> int:
        """:meth:`reap`, at most once per :data:`REAP_EVERY` seconds in this process (a
        pipeline starts hundreds of executions; each need not list every active one)."""
        global _last_reap
        with _reap_lock:
            if time.monotonic() - _last_reap < REAP_EVERY:
                return 0
            _last_reap = time.monotonic()
        return self.reap()

    def reap(self) -> int:
        """Mark executions of this host whose supervisor died as crashed, and queued ones
        whose waiting process died (a shared-queue one has none and stays)."""
        count = 0
        for ex in self.store.list_executions(
                self.ctx.project_id, statuses=[Status.QUEUED, Status.STARTING, Status.RUNNING]):
            if ex.host == HOST and ex.pid and ex.pid != os.getpid() and not process_alive(ex.pid):
                if ex.status == Status.QUEUED:
                    self.crash(ex.id, f"the process waiting to start it (pid {ex.pid}) ended")
                else:
                    saved = self._end_orphan(ex)
                    self.crash(ex.id, f"its supervisor (pid {ex.pid}) ended unexpectedly"
                               + (f"; {saved} output file(s) it had written were kept"
                                  if saved else ""))
                count += 1
        return count

    def _end_orphan(self, ex: Execution) -> int:
        """Kill the step's process group left behind by a dead supervisor, keep the outputs
        it had written (checkpoints, for a restart), drop the workspace; returns how many
        output files were kept."""
        from cairn.runtime.outputs import collect_outputs
        from cairn.runtime.workspace import Workspace

        ws = Workspace(self.ctx.settings.work_dir / ex.id)
        try:
            pid = int((ws.root / "pid").read_text())
            # Only if that pid is still this execution's process (pids get reused).
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"CAIRN_EXECUTION_ID={ex.id}".encode() in environ:
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        saved = 0
        if ws.outputs.is_dir():
            try:
                collected = collect_outputs(ws.outputs, self.ctx.content,
                                            project_id=ex.project_id, execution_id=ex.id,
                                            move=True)
                self.store.add_datums(collected.datums)
                saved = len(collected.datums)
            except Exception as exc:  # noqa: BLE001 - the crash is still recorded
                log.warning("could not keep the outputs of crashed execution %s: %s", ex.id, exc)
        shutil.rmtree(ws.root, ignore_errors=True)
        return saved


def _dedicated_supervisor(pid: int) -> bool:
    """Whether ``pid`` supervises one execution (`cairn run`, a detached supervisor), so
    that SIGTERM to it stops just that one -- not a pipeline's or sweep's driver."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: signal as before
    text = b" ".join(argv)
    if b"cairn.orchestration.supervisor" in text:
        return True
    return b" run " in text + b" " and b"pipeline" not in text and b"task" not in text


class StopSignals:
    """Turn SIGINT/SIGTERM into a stop request while an execution is supervised."""

    def __init__(self) -> None:
        self.requested = False
        self.preempted = False  # SIGTERM (the machine going away), not Ctrl-C
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        self.preempted = self.preempted or signum == signal.SIGTERM

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
