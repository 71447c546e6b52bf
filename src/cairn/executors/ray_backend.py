"""The Ray executor: each execution runs as a Ray task on whichever node has its resources.

The task asks Ray for the execution's CPUs, GPUs, memory and the environment's custom
resources (``{"accelerator_type:A100": 1}``), so Ray places it. On the node it runs the same
code as the local executor (:mod:`cairn.executors.ray_node`) -- workspace, code snapshot and
inputs from the shared blob store (through a node-local cache for a remote store), the
execution contract, outputs into the store, metrics into the metadata store -- in a
node-local data folder. The task is a streaming generator: the step's output lines come back
to the submitting side as they are printed, where they go to the execution's log file
(``cairn logs --follow``) and terminal.

This module is the submitting side: :class:`RayExecutor`, :func:`connect` and the
:class:`Cluster` it returns, and :class:`DriverCluster`, a process joined to the cluster as a
Ray driver that submits and follows the tasks. cairn's processes on a machine share one such
driver per cluster, the *gateway* (:mod:`cairn.executors.ray_gateway`);
``CAIRN_RAY_GATEWAY=0`` makes each process join the cluster itself. Ray itself is imported
only when a Ray environment is used (:func:`import_ray`).

Nodes need cairn installed and must reach the metadata store and the blob store with the
URLs the submitting side uses (PostgreSQL and S3 for a real cluster; on one machine a
SQLite file and a folder do). A node checks that it reaches the blob store before it runs
anything: one that cannot ends the execution ``error`` with a reason naming the node, the
store and the fix, having written nothing. A stop request is seen by the node through the
metadata store and also cancels the task; a node that dies mid-run makes the execution
``crashed``, and so does a worker that dies under its step (whose process group the next
execution of the project on that node then ends).
"""

from __future__ import annotations

import abc
import atexit
import importlib.util
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import ConfigError, ExecutionError
from cairn.executors.base import Executor, Outcome, Reporter, register_executor

if TYPE_CHECKING:
    from cairn.entities import Environment, Execution
    from cairn.executors.ray_gateway import GatewayCluster, serve_gateway, stop_gateway
    from cairn.orchestration.context import Context
    from cairn.store.base import Allocation

__all__ = ["Cluster", "DriverCluster", "GatewayCluster", "RayExecutor", "Run", "connect",
           "import_ray", "serve_gateway", "stop_gateway"]

NAMESPACE = "cairn"
SILENCE_SECONDS = 5.0  # no word from the node this long: ask the cluster whether it lives
STOP_POLL_SECONDS = 0.5  # how often both sides look for a stop request
STOP_CONFIRM_SECONDS = 30.0  # after the grace period, how long to wait for the node's word

_lock = threading.Lock()
_import_lock = threading.Lock()
_clusters: dict[str, Cluster] = {}

# The gateway's names, importable from here too; its module is loaded when first asked for.
_GATEWAY_NAMES = ("GatewayCluster", "serve_gateway", "stop_gateway")


def __getattr__(name: str) -> Any:
    if name in _GATEWAY_NAMES:
        from cairn.executors import ray_gateway

        return getattr(ray_gateway, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def import_ray() -> Any:
    """Ray's module, or a clear error naming the extra when it is not installed.

    The module is loaded on first use of one of its attributes (``importlib``'s lazy
    loader): checking at submit time that Ray is there costs nothing, and a process that
    hands its executions to the gateway never pays for importing Ray.
    """
    with _import_lock:  # a second finder would load the lazy module to read its spec
        if "ray" in sys.modules:
            module = sys.modules["ray"]
            if module is None:  # a blocked import
                raise _no_ray()
            return module
        try:
            spec = importlib.util.find_spec("ray")
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.loader is None:
            raise _no_ray()
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["ray"] = module
        loader.exec_module(module)
        return module


def _no_ray() -> ConfigError:
    return ConfigError(
        "the ray backend needs Ray, which is not installed",
        "pip install 'cairn[ray]' (on this machine and on every node of the cluster)",
    )


def _load_ray() -> Any:
    ray = import_ray()
    try:
        ray.__version__  # noqa: B018 - loads it now, where a broken install is reported
    except ImportError as exc:
        raise ConfigError(f"Ray is installed but cannot be imported: {exc}",
                          "reinstall it: pip install 'cairn[ray]'") from None
    return ray


def connect(address: str | None) -> Cluster:
    """The Ray cluster at ``address`` (through this machine's gateway unless
    ``CAIRN_RAY_GATEWAY=0``); a clear error if it cannot be reached."""
    import_ray()
    if not address:
        raise ConfigError("a ray environment needs an address",
                          'set address = "HOST:PORT" (the head\'s GCS port) in its table')
    with _lock:
        cluster = _clusters.get(address)
        if cluster is not None and cluster.usable():
            return cluster
        _check_reachable(address)
        if _gateway_wanted():
            from cairn.executors.ray_gateway import GatewayCluster

            cluster = GatewayCluster(address)
        else:
            for name, other in list(_clusters.items()):
                if isinstance(other, DriverCluster):  # one Ray driver connection a process
                    other.close()
                    del _clusters[name]
            cluster = DriverCluster(address)
        _clusters[address] = cluster
    return cluster


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and not address.startswith("ray://"):
        try:  # fail fast and clearly instead of Ray's long retry loop
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            raise ExecutionError(
                f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                "start it with `ray start --head`, or fix the environment's address",
            ) from None


def _gateway_wanted() -> bool:
    return (os.environ.get("CAIRN_RAY_GATEWAY", "1").lower() not in ("0", "false", "no")
            and os.name == "posix")


class Cluster(abc.ABC):
    """What cairn asks of a Ray cluster."""

    address: str

    @abc.abstractmethod
    def nodes(self) -> list[dict[str, Any]]:
        """Ray's node table (``ray.nodes()``); ``ExecutionError`` if it cannot be had."""

    @abc.abstractmethod
    def submit(self, need: dict[str, float], payload: dict[str, Any]) -> Run:
        """Start the execution described by ``payload`` as a task needing ``need`` (Ray's
        resource names); what its node sends arrives on the returned run's ``items``."""

    def usable(self) -> bool:
        """Whether this connection can still be used (else :func:`connect` makes another)."""
        return True


class Run:
    """One execution sent to the cluster, seen from the submitting side.

    ``items`` receives ("item", (kind, data)) for each message of the node (kind
    "accepted", "started", "lines" or "outcome"), then one of ("end", None), ("error",
    text: the task or its worker failed), ("died", text: its node died) or ("lost", text:
    the gateway relaying it went away).
    """

    def __init__(self, stop: Callable[[], None], close: Callable[[], None]) -> None:
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stop = stop  # stop the step (its grace period, then Ray ends the worker)
        self.close = close  # the submitting side is done with it


# -- this process as the Ray driver ----------------------------------------------------
class DriverCluster(Cluster):
    """This process joined to the cluster as a Ray driver (the gateway does this)."""

    def __init__(self, address: str) -> None:
        self.address = address
        ray = self.ray = _load_ray()
        if ray.is_initialized():
            ray.shutdown()
        # Ray installs its own SIGINT/SIGTERM handlers in a driver; cairn's supervisor needs
        # its own (a stop request), so they are put back after joining.
        main = threading.current_thread() is threading.main_thread()
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        # A driver's exit waits ~0.25 s to flush Ray's task events (its dashboard's task
        # list) unless told not to; cairn records its executions itself. Ray reads it
        # when it joins; the steps this process may start later should not inherit it.
        flush = "RAY_task_events_shutdown_flush_timeout_ms"
        set_flush = flush not in os.environ
        if set_flush:
            os.environ[flush] = "0"
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level="ERROR",
                     log_to_driver=False, ignore_reinit_error=True)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError and others
            raise ExecutionError(f"cannot join the Ray cluster at {address}: {exc}",
                                 "check the address and that the cluster is up") from None
        finally:
            if set_flush:
                os.environ.pop(flush, None)
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        # Before Ray's own exit hook (hooks run last first), which sleeps 0.5 s "for log
        # messages to print" -- there are none with log_to_driver=False.
        atexit.register(self.close)

    def usable(self) -> bool:
        return bool(self.ray.is_initialized())

    def close(self) -> None:
        try:
            if self.ray.is_initialized():
                self.ray.shutdown()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.ray.nodes())

    def submit(self, need: dict[str, float], payload: dict[str, Any]) -> Run:
        relay = _Relay(self.ray, need, payload)
        relay.submit()
        run = Run(relay.stop, relay.abandon)
        relay.follow(run.items.put)
        return run


_task_fn: Any = None


class _Relay:
    """Drives one execution's task from the driver: forwards what the node yields, stops
    it on request, and notices when its node dies."""

    def __init__(self, ray: Any, need: dict[str, float], payload: dict[str, Any]) -> None:
        self.ray = ray
        self.need = need
        self.payload = payload
        self.grace = float(payload["grace_seconds"])
        self.accepted = False
        self.node_id: str | None = None
        self.last_word = time.monotonic()
        self.done = threading.Event()
        self._put: Callable[[tuple[str, Any]], None] = lambda item: None
        self._lock = threading.Lock()
        self._stopping = False

    def submit(self) -> None:
        global _task_fn
        need = self.need
        options: dict[str, Any] = {
            "num_cpus": need.get("CPU", 0), "num_gpus": need.get("GPU", 0), "max_retries": 0,
            "resources": {k: v for k, v in need.items() if k not in ("CPU", "GPU", "memory")}}
        if "memory" in need:
            options["memory"] = need["memory"]
        if _task_fn is None:
            from cairn.executors.ray_node import _run_task

            _task_fn = self.ray.remote(_run_task)
        self.stream = _task_fn.options(num_returns="streaming", **options).remote(self.payload)

    def follow(self, put: Callable[[tuple[str, Any]], None]) -> None:
        """Hand what comes of the submitted task to ``put``, from threads of its own."""
        self._put = put
        name = self.payload["execution_id"][:8]
        threading.Thread(target=self._consume, daemon=True, name=f"ray-stream-{name}").start()
        threading.Thread(target=self._watch, daemon=True, name=f"ray-watch-{name}").start()

    def _consume(self) -> None:
        # A Ray call can block for long when the node holding the task dies: the watch
        # thread stays free to notice that.
        try:
            for ref in self.stream:
                kind, data = self.ray.get(ref)
                self.last_word = time.monotonic()
                if kind == "accepted":
                    self.accepted, self.node_id = True, data["node_id"]
                if not self._send(("item", (kind, data))):
                    return
            self._finish(("end", None))
        except Exception as exc:  # noqa: BLE001 - the node or its worker died, or cancelled
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self._finish(("error", f"{type(exc).__name__}: {text}".rstrip(": ")))

    def _watch(self) -> None:
        while not self.done.wait(1.0):
            node_id = self.node_id
            if (node_id is not None and time.monotonic() - self.last_word > SILENCE_SECONDS
                    and not _node_alive(self.ray, node_id)):
                self._finish(("died", f"the Ray node {node_id[:12]} running it died"))

    def _send(self, item: tuple[str, Any]) -> bool:
        try:
            self._put(item)
            return True
        except (OSError, EOFError, ValueError):  # the submitting side is gone
            self.abandon()
            return False

    def _finish(self, item: tuple[str, Any]) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self.done.set()
        self._send(item)

    def stop(self) -> None:
        with self._lock:
            if self._stopping or self.done.is_set():
                return
            self._stopping = True
        if not self.accepted:
            _cancel(self.ray, self.stream, force=False)  # still queued: it never starts
            return
        # The node sees the request in the store and stops the step; cancel too in case it
        # cannot (then Ray ends the worker).
        timer = threading.Timer(self.grace + 5, self._force_cancel)
        timer.daemon = True
        timer.start()

    def _force_cancel(self) -> None:
        if not self.done.is_set():
            _cancel(self.ray, self.stream, force=True)

    def abandon(self) -> None:
        """The submitting side went away: stop the step rather than run it unwatched."""
        if not self.done.is_set():
            self.stop()


def _cancel(ray: Any, stream: Any, *, force: bool) -> None:
    try:
        ray.cancel(stream, force=force)
    except Exception:  # noqa: BLE001 - it ended meanwhile
        pass


def _node_alive(ray: Any, node_id: str) -> bool:
    try:
        return any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
    except Exception:  # noqa: BLE001 - cannot ask: assume it lives, ask again later
        return True


# -- the executor ----------------------------------------------------------------------
class RayExecutor(Executor):
    name = "ray"

    def __init__(self, ctx: Context, *, grace_seconds: float | None = None) -> None:
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

    def grace_for(self, execution: Execution) -> float:
        from cairn.executors.local import LocalExecutor

        return LocalExecutor(self.ctx, grace_seconds=self.grace_seconds).grace_for(execution)

    def execute(self, execution: Execution, allocation: Allocation, reporter: Reporter) -> Outcome:
        from cairn.runtime.process import LogWriter

        env = self.environment(execution)
        cluster = connect(env.address)
        settings = self.ctx.settings
        grace = self.grace_for(execution)
        payload = {
            "execution_id": execution.id,
            "project_id": execution.project_id,
            "project_name": self.ctx.project.name,
            "database_url": settings.database_url,
            "store_url": _absolute(settings.store_url, settings.project_root),
            "cache_max_bytes": settings.cache_max_bytes,
            "grace_seconds": grace,
            "code_digest": execution.code.tree_digest if execution.code else None,
        }
        run = cluster.submit(_resources(execution, env), payload)
        log = LogWriter(settings.logs_dir / f"{execution.id}.log")
        try:
            return self._follow(run, execution, reporter, log, grace)
        finally:
            log.close()
            run.close()

    def _follow(self, run: Run, execution: Execution, reporter: Reporter, log: Any,
                grace: float) -> Outcome:
        """Relay what the node sends until the step's outcome."""
        outcome: Outcome | None = None
        accepted = False
        stop_sent_at: float | None = None
        asked = time.monotonic()  # a stop before this was seen while it was queued
        while True:
            # Asked about twice a second (a store query), not for each message.
            if stop_sent_at is None and time.monotonic() - asked >= STOP_POLL_SECONDS:
                asked = time.monotonic()
                if reporter.should_stop():
                    stop_sent_at = time.monotonic()
                    run.stop()
            try:
                tag, value = run.items.get(timeout=STOP_POLL_SECONDS)
            except queue.Empty:
                if (stop_sent_at is not None
                        and time.monotonic() - stop_sent_at > grace + STOP_CONFIRM_SECONDS):
                    return Outcome(exit_code=None, reason="stopped", detail=(
                        "stopped; the Ray node did not confirm that the step ended"))
                continue
            if tag == "end":
                break
            if tag in ("died", "lost"):
                return _crashed(value)
            if tag == "error":
                if stop_sent_at is not None:
                    return Outcome(exit_code=None, reason="stopped", detail=(
                        "stopped before it started on the cluster" if not accepted else
                        "stopped; Ray ended the worker after the grace period"))
                return _crashed(f"the Ray node or worker running it died: {value}")
            kind, data = value
            if kind == "accepted":
                accepted = True
            elif kind == "started":
                reporter.started(data["pid"])
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
        if outcome is None:
            return _crashed("the Ray task ended without reporting how the step ended")
        return outcome


def _resources(execution: Execution, env: Environment) -> dict[str, float]:
    """Ray's resource names and amounts the execution needs (zero amounts left out)."""
    need = execution.resources
    amounts: dict[str, float] = {"CPU": float(need.cpus), "GPU": float(need.gpus)}
    if need.memory_mb:
        amounts["memory"] = float(need.memory_mb * 2**20)
    amounts.update({k: float(v) for k, v in dict(env.resources).items()})
    return {k: v for k, v in amounts.items() if v}


def _crashed(detail: str) -> Outcome:
    return Outcome(exit_code=None, reason="crashed", detail=detail)


def _record_node(ctx: Context, execution_id: str, data: dict[str, Any]) -> None:
    from cairn.entities import Status

    ctx.store.transition(execution_id, Status.RUNNING, expect=[Status.RUNNING],
                         node=f"{data['ip']} {data['node_id']}")


def _absolute(store_url: str, root: Path) -> str:
    if "://" in store_url:
        return store_url
    path = Path(store_url)
    return str(path if path.is_absolute() else (root / path).resolve())


def _uid() -> int:
    """This user's id: the private folders of the gateway and of the node's data are per user."""
    return os.getuid() if hasattr(os, "getuid") else 0


register_executor("ray", RayExecutor)
