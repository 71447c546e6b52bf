"""The scheduler process: dispatches the shared queue when capacity frees.

`cairn run --detach` puts its execution in the shared queue (queued, no waiting process)
and starts this host's scheduler if none runs (``cairn scheduler`` runs one in the
foreground). The scheduler walks the project's queue in order (priority, then first come
first served) and starts what fits: a local execution when
:meth:`MetadataStore.allocate` grants it this host's CPUs, memory and GPUs, a cluster
execution when its environment's ``max-parallel`` has room. Each started execution gets its
own supervisor process, so the scheduler holds no execution's state and may end (it does
after ``idle_exit`` seconds with nothing left to dispatch) or die without losing one.

Several schedulers share one queue: one per project on each host (a lock file in the data
folder keeps a second one on the same host out), any number of hosts on one database. A
claim is a single compare-and-set on the execution's row (``queued`` → ``starting``), so
two schedulers never both start the same execution.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cairn.entities import Status
from cairn.errors import CairnError
from cairn.orchestration.background import HOST, process_alive, start_background

if TYPE_CHECKING:
    from cairn.entities import Execution
    from cairn.orchestration.context import Context

LOCK_NAME = "scheduler.lock"
POLL = 0.25


class SchedulerRunningError(CairnError):
    """Another scheduler process already serves this project on this host."""


@dataclass(frozen=True)
class Dispatched:
    execution: Execution
    supervisor_pid: int


def lock_path(ctx: Context) -> Path:
    return ctx.settings.data_dir / LOCK_NAME


def running_scheduler(ctx: Context) -> int | None:
    """The pid of this project's scheduler on this host, if one runs."""
    path = lock_path(ctx)
    try:
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


def shared_waiting(ctx: Context) -> bool:
    """Whether executions of the project wait in the shared queue (for a scheduler)."""
    return any(ex.host is None for ex in ctx.store.queue(project_id=ctx.project_id))


def ensure_scheduler(ctx: Context) -> int:
    """This host's scheduler pid, starting one in the background if none runs."""
    pid = running_scheduler(ctx)
    if pid is not None:
        return pid
    pid = start_background(ctx, "cairn.orchestration.dispatch",
                           str(ctx.settings.scheduler_idle_exit), "scheduler.log")
    # Wait (briefly) until it holds the lock, so that a second caller sees it running.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and process_alive(pid):
        if running_scheduler(ctx) is not None:
            break
        time.sleep(0.02)
    return pid


class _Lock:
    """The per-project, per-host scheduler lock (an advisory lock on a file holding the pid)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the scheduler's life
        # `running_scheduler` probes take the lock for an instant: try for a second.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise SchedulerRunningError(
                f"a scheduler already serves this project on this host (pid {holder})",
                "one is enough: it dispatches every queued execution of the project; "
                f"stop it with `kill {holder}` to run another",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.close()


class QueueScheduler:
    """Dispatches the shared queue of one project from this host."""

    def __init__(self, ctx: Context) -> None:
        from cairn.orchestration.scheduler import Scheduler, local_capacity

        self.ctx = ctx
        self.store = ctx.store
        self.scheduler = Scheduler(ctx)
        self.capacity = local_capacity(ctx)

    def dispatch_once(self) -> tuple[list[Dispatched], int]:
        """Start what fits now; returns what started and how many shared executions are
        still queued."""
        self.scheduler.reap_now_and_then()
        started: list[Dispatched] = []
        waiting = 0
        for ex in self.store.queue(project_id=self.ctx.project_id):
            if ex.host is not None:
                continue  # a process of some host waits on it and starts it itself
            if self._claim(ex):
                from cairn.orchestration.runs import start_supervisor

                claimed = self.store.get_execution(ex.project_id, ex.id)
                started.append(Dispatched(claimed, start_supervisor(self.ctx, claimed)))
            else:
                waiting += 1
        return started, waiting

    def _claim(self, ex: Execution) -> bool:
        if ex.backend == "local":
            if not self.scheduler.below_parallel_limit(ex):
                return False
            cap = self.capacity
            if self.store.allocate(ex.id, host=HOST, capacity=cap.resources,
                                   gpu_ids=cap.gpu_ids) is None:
                return False
            # Ours until its supervisor takes it over (the reaper checks this pid).
            return self.store.transition(ex.id, Status.STARTING, expect=[Status.STARTING],
                                         pid=os.getpid())
        if not self.scheduler.dispatchable(ex):
            return False
        return self.store.transition(ex.id, Status.STARTING, expect=[Status.QUEUED],
                                     host=HOST, pid=os.getpid())

    def run(
        self,
        *,
        idle_exit: float | None = None,
        on_dispatch: Callable[[Dispatched], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Dispatch until stopped, or until nothing was queued for ``idle_exit`` seconds;
        returns how many executions it started."""
        count = 0
        while True:
            idle_since = time.monotonic()
            with _Lock(lock_path(self.ctx)):
                while not should_stop():
                    started, waiting = self.dispatch_once()
                    count += len(started)
                    for item in started:
                        if on_dispatch is not None:
                            on_dispatch(item)
                    if started or waiting:
                        idle_since = time.monotonic()
                    elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                        break
                    if not started:
                        time.sleep(POLL)
            # A `cairn run --detach` that saw the lock still held relies on this look at
            # the queue after it was released: anything shared since means more work.
            if should_stop() or not shared_waiting(self.ctx):
                return count


def main(argv: list[str]) -> int:
    """``python -m cairn.orchestration.dispatch ROOT IDLE_EXIT``: a scheduler started on
    demand; it ends after IDLE_EXIT seconds with nothing to dispatch."""
    import signal

    from cairn.orchestration.context import Context

    root, idle = argv
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    ctx = Context.load(root)
    try:
        QueueScheduler(ctx).run(
            idle_exit=float(idle),
            on_dispatch=lambda d: print(f"started #{d.execution.counter} "
                                        f"(supervisor pid {d.supervisor_pid})", flush=True),
            should_stop=lambda: stop["now"],
        )
    except SchedulerRunningError:
        return 0  # another one won the race to start: it serves the queue
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
