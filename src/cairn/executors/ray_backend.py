"""The Ray executor: each execution runs as a Ray task on whichever node has its resources.

The task asks Ray for the execution's CPUs, GPUs, memory and the environment's custom
resources (``{"accelerator_type:A100": 1}``), so Ray places it. On the node it runs the same
code as the local executor -- workspace, code snapshot and inputs from the shared blob store
(through a node-local cache for a remote store), the execution contract, outputs into the
store, metrics into the metadata store -- with the node's own scratch folder. The task is a
streaming generator: the step's output lines come back to the submitting side as they are
printed, where they go to the execution's log file (``cairn logs --follow``) and terminal.

Nodes need cairn installed and must reach the metadata store and the blob store with the
URLs the submitting side uses (PostgreSQL and S3 for a real cluster; on one machine a
SQLite file and a folder do). A stop request is seen by the node through the metadata store
and also cancels the task; a node that dies mid-run makes the execution ``crashed``.
"""

from __future__ import annotations

import queue
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import ConfigError, ExecutionError
from cairn.executors.base import Executor, Outcome, Reporter, register_executor

if TYPE_CHECKING:
    from cairn.entities import Environment, Execution
    from cairn.orchestration.context import Context
    from cairn.store.base import Allocation

BATCH_SECONDS = 0.2  # how long the node gathers output lines before sending them
SILENCE_SECONDS = 5.0  # no word from the node this long: ask the cluster whether it lives
CONNECT_TIMEOUT = 20.0

_connect_lock = threading.Lock()
_connected_to: str | None = None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray backend needs Ray, which is not installed",
            "pip install 'cairn[ray]' (on this machine and on every node of the cluster)",
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` once per process; clear error if unreachable."""
    global _connected_to
    ray = import_ray()
    if not address:
        raise ConfigError("a ray environment needs an address",
                          'set address = "HOST:PORT" (the head\'s GCS port) in its table')
    with _connect_lock:
        if ray.is_initialized():
            if _connected_to == address:
                return ray
            ray.shutdown()
        host, _, port = address.rpartition(":")
        if host and port.isdigit() and not address.startswith("ray://"):
            try:  # fail fast and clearly instead of Ray's long retry loop
                socket.create_connection((host, int(port)), timeout=3).close()
            except OSError as exc:
                raise ExecutionError(
                    f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                    "start it with `ray start --head`, or fix the environment's address",
                ) from None
        # Ray installs its own SIGINT/SIGTERM handlers in a driver; cairn's supervisor needs
        # its own (a stop request), so they are put back after joining.
        main = threading.current_thread() is threading.main_thread()
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            ray.init(address=address, namespace="cairn", logging_level="ERROR",
                     log_to_driver=False, ignore_reinit_error=True)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError and others
            raise ExecutionError(f"cannot join the Ray cluster at {address}: {exc}",
                                 "check the address and that the cluster is up") from None
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        _connected_to = address
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, ctx: Context, *, grace_seconds: float = 10.0) -> None:
        self.ctx = ctx
        self.grace_seconds = grace_seconds

    def environment(self, execution: Execution) -> Environment:
        from cairn.orchestration.environments import load_environments

        name = execution.machine_environment
        env = load_environments(self.ctx.settings).get(name)
        if env is None or env.backend != "ray":
            raise ExecutionError(f"environment '{name}' is not a ray environment any more",
                                 "define it again in .cairn/config.toml")
        return env

    def execute(self, execution: Execution, allocation: Allocation, reporter: Reporter) -> Outcome:
        from cairn.runtime.process import LogWriter

        env = self.environment(execution)
        ray = connect(env.address)
        settings = self.ctx.settings
        need = execution.resources
        options: dict[str, Any] = {"num_cpus": need.cpus, "num_gpus": need.gpus,
                                   "max_retries": 0, "resources": dict(env.resources)}
        if need.memory_mb:
            options["memory"] = need.memory_mb * 2**20
        payload = {
            "execution_id": execution.id,
            "project_id": execution.project_id,
            "project_name": self.ctx.project.name,
            "database_url": settings.database_url,
            "store_url": _absolute(settings.store_url, settings.project_root),
            "cache_max_bytes": settings.cache_max_bytes,
            "grace_seconds": self.grace_seconds,
        }
        remote = ray.remote(_run_on_node).options(num_returns="streaming", **options)
        stream = remote.remote(payload)
        log = LogWriter(settings.logs_dir / f"{execution.id}.log")
        # The stream is read in a thread: a Ray call can block for long when the node
        # holding the task dies, and this thread must stay free to notice that.
        items: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=_consume, args=(ray, stream, items), daemon=True,
                         name=f"ray-stream-{execution.id[:8]}").start()
        outcome: Outcome | None = None
        cancelled = False
        node_id: str | None = None
        last_item = time.monotonic()
        try:
            while True:
                try:
                    tag, value = items.get(timeout=1.0)
                except queue.Empty:  # the node sends every 0.2 s: silence is suspicious
                    if (time.monotonic() - last_item > SILENCE_SECONDS and node_id is not None
                            and not _node_alive(ray, node_id)):
                        return Outcome(exit_code=None, reason="crashed",
                                       detail=f"the Ray node {node_id[:12]} running it died")
                    continue
                if tag == "end":
                    break
                if tag == "error":
                    return _crashed(value)
                last_item = time.monotonic()
                kind, data = value
                if kind == "started":
                    reporter.started(data["pid"])
                    node_id = data["node_id"]
                    _record_node(self.ctx, execution.id, data)
                elif kind == "lines":
                    for stream_name, text, when in data:
                        if stream_name == "sys":
                            log.write("err", f"[cairn] {text}", when)
                        else:
                            log.write(stream_name, text, when)
                        reporter.line(stream_name, text)
                    if data:
                        log.flush()  # a batch is at most 0.2 s old: readable at once
                elif kind == "outcome":
                    outcome = data
                if not cancelled and reporter.should_stop():
                    # The node sees the request in the store and stops the step; cancel too
                    # in case it cannot (then Ray ends the worker).
                    cancelled = True
                    threading.Timer(self.grace_seconds + 5, ray.cancel,
                                    args=(stream,), kwargs={"force": True}).start()
        finally:
            log.close()
        if outcome is None:
            return Outcome(exit_code=None, reason="crashed",
                           detail="the Ray task ended without reporting how the step ended")
        return outcome


def _consume(ray: Any, stream: Any, items: queue.Queue[tuple[str, Any]]) -> None:
    """Put each (kind, data) of the node's stream on ``items``; then ("end"|"error", ...)."""
    try:
        for ref in stream:
            items.put(("item", ray.get(ref)))
        items.put(("end", None))
    except Exception as exc:  # noqa: BLE001 - the node or its worker died
        items.put(("error", exc))


def _node_alive(ray: Any, node_id: str) -> bool:
    try:
        return any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
    except Exception:  # noqa: BLE001 - cannot ask: assume it lives, ask again later
        return True


def _crashed(exc: BaseException) -> Outcome:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Outcome(exit_code=None, reason="crashed",
                   detail=f"the Ray node or worker running it died: {type(exc).__name__}: {text}")


def _record_node(ctx: Context, execution_id: str, data: dict[str, Any]) -> None:
    from cairn.entities import Status

    ctx.store.transition(execution_id, Status.RUNNING, expect=[Status.RUNNING],
                         node=f"{data['ip']} {data['node_id']}")


def _absolute(store_url: str, root: Path) -> str:
    if "://" in store_url:
        return store_url
    path = Path(store_url)
    return str(path if path.is_absolute() else (root / path).resolve())


# -- on the node -----------------------------------------------------------------------
def _run_on_node(payload: dict[str, Any]):  # noqa: ANN202 - a Ray streaming generator
    """Run one execution here; yield ("started"|"lines"|"outcome", data) as it goes."""
    import ray

    from cairn.executors.local import LocalExecutor
    from cairn.orchestration.context import Context
    from cairn.settings import Settings
    from cairn.store.base import Allocation

    scratch = Path(tempfile.mkdtemp(prefix=f"cairn-node-{payload['execution_id'][:8]}-"))
    settings = Settings(
        project_root=scratch, data_dir=scratch / ".cairn",
        database_url=payload["database_url"], store_url=payload["store_url"],
        project_name=payload["project_name"], cache_max_bytes=payload["cache_max_bytes"])
    ctx = Context(settings)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    execution_id = payload["execution_id"]
    runtime = ray.get_runtime_context()
    node = {"ip": ray.util.get_node_ip_address(), "node_id": runtime.get_node_id(),
            "host": socket.gethostname()}

    class NodeReporter:
        last_check = 0.0
        stop = False

        def started(self, pid: int) -> None:
            events.put(("started", {**node, "pid": pid}))

        def should_stop(self) -> bool:
            now = time.monotonic()
            if not self.stop and now - self.last_check >= 0.5:
                self.last_check = now
                self.stop = ctx.store.get_execution(payload["project_id"],
                                                    execution_id).stop_requested
            return self.stop

        def line(self, stream: str, text: str) -> None:
            events.put(("line", (stream, text, time.time())))

    def work() -> None:
        try:
            execution = ctx.store.get_execution(payload["project_id"], execution_id)
            gpu_ids = tuple(int(i) for i in ray.get_gpu_ids())
            outcome = LocalExecutor(ctx, grace_seconds=payload["grace_seconds"]).execute(
                execution, Allocation(gpu_ids=gpu_ids), NodeReporter())
            events.put(("outcome", outcome))
        except BaseException as exc:  # noqa: BLE001 - reported, not raised into Ray
            events.put(("outcome", Outcome(exit_code=None, reason="crashed",
                                           detail=f"cairn failed on node {node['ip']}: {exc!r}")))

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
        thread.join(timeout=1)
        ctx.close()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


register_executor("ray", RayExecutor)
