"""What runs on a Ray worker node: one execution as a Ray streaming generator task.

:func:`_run_task` is the task the submitting side (:mod:`cairn.executors.ray_backend`)
sends. In a worker process it opens the payload's stores once (:func:`_node_context`, in a
node-local data folder shared by the node's workers), ends the steps whose worker died
under them (:func:`_end_orphans`), checks that this node reaches the blob store
(:func:`_store_problem`: one that cannot ends the execution ``error`` having written
nothing), then runs the execution with the local executor -- workspace, inputs, the step's
process, live and final outputs -- and yields what happens: ("accepted", node),
("started", node and pid), ("lines", batch) every :data:`BATCH_SECONDS` (an empty batch is
a heartbeat), then ("outcome", outcome). A stop request is seen here through the metadata
store; a cancelled task stops the step and gives it its grace period.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.executors.base import Outcome
from cairn.executors.ray_backend import STOP_POLL_SECONDS, _uid

if TYPE_CHECKING:
    from cairn.orchestration.context import Context

BATCH_SECONDS = 0.2  # how long the node gathers output lines before sending them


def _run_task(payload: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Run one execution on this node; yield ("accepted"|"started"|"lines"|"outcome", data)
    as it goes (a Ray streaming generator task)."""
    import ray

    from cairn.store.base import Allocation

    execution_id = payload["execution_id"]
    runtime = ray.get_runtime_context()
    node = {"ip": ray.util.get_node_ip_address(), "node_id": runtime.get_node_id(),
            "host": socket.gethostname()}
    gpu_ids = tuple(int(i) for i in ray.get_gpu_ids())
    yield ("accepted", node)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()
    holder: dict[str, Any] = {}

    class NodeReporter:
        last_check = time.monotonic()

        def started(self, pid: int) -> None:
            events.put(("started", {**node, "pid": pid}))

        def should_stop(self) -> bool:
            now = time.monotonic()
            if not stop.is_set() and now - self.last_check >= STOP_POLL_SECONDS:
                self.last_check = now
                status, stop_requested = holder["ctx"].store.execution_status(execution_id)
                # Also when it ended meanwhile: its supervisor died and it was reaped.
                if stop_requested or status.is_final:
                    stop.set()
            return stop.is_set()

        def line(self, stream: str, text: str) -> None:
            events.put(("line", (stream, text, time.time())))

    def work() -> None:
        try:
            ctx = holder["ctx"] = _node_context(payload)
            _end_orphans(ctx, execution_id)
            problem = _store_problem(payload, node)
            if problem is not None:
                events.put(("line", ("sys", f"cannot start: {problem}", time.time())))
                events.put(("outcome", Outcome(exit_code=None, reason="failed-to-start",
                                               detail=problem)))
                return
            from cairn.executors.local import LocalExecutor

            execution = ctx.store.get_execution(payload["project_id"], execution_id)
            try:
                outcome = LocalExecutor(ctx, grace_seconds=payload["grace_seconds"]).execute(
                    execution, Allocation(gpu_ids=gpu_ids), NodeReporter())
            except Exception as exc:
                # A transfer that failed half-way: say so plainly when the store is gone.
                lost = _store_problem(payload, node, reachable_only=True)
                if lost is None:
                    raise
                outcome = Outcome(exit_code=None, reason="exited", detail=(
                    f"{lost} (lost while it ran: {type(exc).__name__}: {exc})"))
            events.put(("outcome", outcome))
        except BaseException as exc:  # noqa: BLE001 - reported, not raised into Ray
            events.put(("outcome", Outcome(exit_code=None, reason="crashed",
                                           detail=f"cairn failed on node {node['ip']}: {exc!r}")))
        finally:
            if "ctx" in holder:
                (holder["ctx"].settings.logs_dir / f"{execution_id}.log").unlink(missing_ok=True)

    thread = threading.Thread(target=work, name=f"cairn-{execution_id[:8]}", daemon=True)
    thread.start()
    try:
        done = False
        while not done:
            lines: list[tuple[str, str, float]] = []
            deadline = time.monotonic() + BATCH_SECONDS
            while time.monotonic() < deadline:
                try:
                    kind, data = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if kind == "line":
                    lines.append(data)
                    continue
                if lines:
                    yield ("lines", lines)
                    lines = []
                yield (kind, data)
                if kind == "outcome":
                    done = True
                    break
            if lines:
                yield ("lines", lines)
            elif not done:
                yield ("lines", [])  # a heartbeat: the submitting side checks for stops
    finally:
        # Also when the task is cancelled: stop the step, give it its grace period.
        stop.set()
        thread.join(timeout=float(payload["grace_seconds"]) + 5)


_contexts: dict[tuple[Any, ...], Any] = {}
_probes: dict[str, Any] = {}
_node_lock = threading.Lock()


def _node_context(payload: dict[str, Any]) -> Context:
    """This worker process's context for the payload's stores, opened once and shared by
    the executions it runs, in a node-local data folder (workspaces, logs, the cache of a
    remote store) shared by the node's workers."""
    key = (payload["database_url"], payload["store_url"], payload["project_name"],
           payload["cache_max_bytes"])
    with _node_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            from cairn.orchestration.context import Context
            from cairn.settings import Settings

            name = hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()
            scratch = Path(tempfile.gettempdir()) / f"cairn-node-{_uid()}" / name
            scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
            ctx = Context(Settings(
                project_root=scratch, data_dir=scratch / ".cairn",
                database_url=payload["database_url"], store_url=payload["store_url"],
                project_name=payload["project_name"],
                cache_max_bytes=payload["cache_max_bytes"]))
            ctx.project  # noqa: B018 - opened now, not by two executions at once
            _contexts[key] = ctx
    return ctx


def _end_orphans(ctx: Context, running: str) -> None:
    """End the steps on this node whose worker died under them (Ray ended it, or the
    driver that owned it went away) once their execution has ended in the store: kill
    the step's process group, keep the outputs it had written (as a supervisor that dies
    on a machine of its own has them kept), drop the workspace."""
    from cairn.runtime.outputs import collect_outputs
    from cairn.runtime.workspace import Workspace

    try:
        folders = [p for p in ctx.settings.work_dir.iterdir() if p.name != running]
    except OSError:
        return
    for folder in folders:
        try:
            execution = ctx.store.get_execution(ctx.project_id, folder.name)
        except Exception:  # noqa: BLE001 - another project's, or not an execution's
            continue
        if not execution.status.is_final:
            continue  # still running in another worker here
        ws = Workspace(folder)
        try:
            group = int((ws.root / "pid").read_text())  # the step's process group
        except (OSError, ValueError):
            group = None
        if group is not None and _group_runs(group, execution.id):
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass
        try:
            if ws.outputs.is_dir():
                collected = collect_outputs(ws.outputs, ctx.content, project_id=ctx.project_id,
                                            execution_id=execution.id, move=True)
                ctx.store.add_datums(collected.datums)
        except Exception:  # noqa: BLE001 - its end is recorded already
            pass
        import shutil

        shutil.rmtree(ws.root, ignore_errors=True)


def _group_runs(group: int, execution_id: str) -> bool:
    """Whether a process of process group ``group`` is still this execution's step (its
    leader may be gone, killed with the worker, while what it started lives on; and pids
    get reused)."""
    mark = f"CAIRN_EXECUTION_ID={execution_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def _store_problem(payload: dict[str, Any], node: dict[str, str], *,
                   reachable_only: bool = False) -> str | None:
    """Why this node cannot use the blob store, or None when it can.

    Asks the store itself (not the node's cache) for the execution's code snapshot: an
    unreachable endpoint, missing credentials or a folder this node does not share are
    each named here, before anything is read or written.
    """
    url = payload["store_url"]
    where = f"node {node['host']} ({node['ip']}, Ray node {node['node_id'][:12]})"
    fix = ("give the node access to it (network, proxy, credentials, CAIRN_S3_ENDPOINT_URL "
           "in the environment `ray start` ran with), or keep this environment's work off "
           "that node with its custom resources")
    if "://" not in url and not Path(url).is_dir():
        return (f"{where} cannot reach the blob store {url}: no such folder there (the "
                "nodes must share the submitting machine's store: use an s3:// store for "
                f"a cluster); {fix}")
    digest = payload.get("code_digest")
    try:
        probe = _probe(url)
        found = probe.has(digest or "0" * 64) or not digest  # with no snapshot: reachable
    except Exception as exc:  # noqa: BLE001 - whatever it is, the node cannot use it
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return f"{where} cannot reach the blob store {url}: {text}; {fix}"
    if not found and not reachable_only:
        return (f"{where} does not find this execution's code snapshot {digest[:12]} in the "
                f"blob store {url}, so it reaches another store than the submitting "
                f"machine; {fix}")
    return None


def _probe(url: str) -> Any:
    """The store at ``url`` without the node's cache, asked with one retry: a store it
    cannot reach is reported within seconds, not after the full retry budget."""
    with _node_lock:
        probe = _probes.get(url)
        if probe is None:
            from cairn.store import open_blob_store

            probe = open_blob_store(url)
            if hasattr(probe, "max_attempts"):  # S3: botocore's retries, with backoff
                probe.max_attempts = min(int(probe.max_attempts), 2)
            _probes[url] = probe
    return probe
