"""The Ray executor: each execution runs as a Ray task on whichever node has its resources.

The task asks Ray for the execution's CPUs, GPUs, memory and the environment's custom
resources (``{"accelerator_type:A100": 1}``), so Ray places it. On the node it runs the same
code as the local executor -- workspace, code snapshot and inputs from the shared blob store
(through a node-local cache for a remote store), the execution contract, outputs into the
store, metrics into the metadata store -- in a node-local data folder. The task is a
streaming generator: the step's output lines come back to the submitting side as they are
printed, where they go to the execution's log file (``cairn logs --follow``) and terminal.

The gateway. Joining a Ray cluster as a driver costs a process about a second (importing
Ray, connecting, and Ray's exit), and Ray never lends one driver's worker processes to
another, so each new driver's first task also waits for a fresh Python to start and import
cairn on the node. So cairn's processes on a machine share one long-lived driver per
cluster: the *gateway*, a background process started on first use (``python -c`` of
:func:`serve_gateway`), reached over a Unix socket in a folder only this user can read, and
ending itself after :data:`GATEWAY_IDLE_SECONDS` without work or soon after its cluster
goes away. The executions of every `cairn run` then are tasks of one Ray job, which reuse
its warm workers. ``CAIRN_RAY_GATEWAY=0`` makes each process join the cluster itself.

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
import hashlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from multiprocessing import AuthenticationError
from typing import TYPE_CHECKING, Any

from cairn.errors import ConfigError, ExecutionError
from cairn.executors.base import Executor, Outcome, Reporter, register_executor

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from cairn.entities import Environment, Execution
    from cairn.orchestration.context import Context
    from cairn.store.base import Allocation

NAMESPACE = "cairn"
BATCH_SECONDS = 0.2  # how long the node gathers output lines before sending them
SILENCE_SECONDS = 5.0  # no word from the node this long: ask the cluster whether it lives
CONNECT_TIMEOUT = 20.0
STOP_POLL_SECONDS = 0.5  # how often both sides look for a stop request
STOP_CONFIRM_SECONDS = 30.0  # after the grace period, how long to wait for the node's word
GATEWAY_IDLE_SECONDS = 300.0  # a gateway without requests this long ends itself
GATEWAY_WATCH_SECONDS = 2.0  # how often a gateway checks that its cluster is still there

_lock = threading.Lock()
_import_lock = threading.Lock()
_clusters: dict[str, Cluster] = {}


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


# -- the gateway -----------------------------------------------------------------------
# No gateway listens (yet, or any more), or one that does not know this user's key.
_UNANSWERED = (OSError, EOFError, AuthenticationError)


class GatewayCluster(Cluster):
    """The cluster through this machine's gateway process (started if none runs)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.place = _gateway_place(address)
        self._ensure()

    def _client(self) -> Connection:
        return self.place.dial()

    def _ensure(self) -> None:
        """Make sure the gateway answers; start it if it does not."""
        try:
            self._ask(("ping",))
            return
        except _UNANSWERED:
            pass
        process = _start_gateway(self.address, self.place)
        deadline = time.monotonic() + CONNECT_TIMEOUT + 30
        while True:
            try:
                self._ask(("ping",))
                return
            except _UNANSWERED:
                pass
            if process.poll() is not None:
                if process.returncode != 0:
                    raise ExecutionError(
                        f"cannot join the Ray cluster at {self.address}: "
                        f"{self.place.log_tail() or 'the gateway process exited'}",
                        "check the address and that the cluster is up")
                # Another gateway held the place, and may have been just ending.
                process = _start_gateway(self.address, self.place)
            if time.monotonic() > deadline:
                raise ExecutionError(
                    f"cairn's gateway to the Ray cluster at {self.address} did not start: "
                    f"{self.place.log_tail()}", f"see {self.place.log}")
            time.sleep(0.02)

    def _ask(self, request: tuple[Any, ...]) -> Any:
        with self._client() as conn:
            conn.send(request)
            status, value = conn.recv()
        if status != "ok":
            raise ExecutionError(f"cairn's gateway to the Ray cluster at {self.address}: "
                                 f"{value}", f"see {self.place.log}")
        return value

    def _open_run(self, need: dict[str, float], payload: dict[str, Any]) -> Connection:
        conn = self._client()
        try:
            conn.send(("run", need, payload))
            status, value = conn.recv()  # the task is submitted
        except BaseException:
            conn.close()
            raise
        if status != "ok":
            conn.close()
            raise ExecutionError(f"cairn's gateway to the Ray cluster at {self.address} "
                                 f"could not submit it: {value}", f"see {self.place.log}")
        return conn

    def usable(self) -> bool:
        return self.place.socket.exists()

    def nodes(self) -> list[dict[str, Any]]:
        try:
            return list(self._ask(("nodes",)))
        except (OSError, EOFError):
            self._ensure()  # it had ended (idle, or a cairn upgrade): once more
            return list(self._ask(("nodes",)))

    def submit(self, need: dict[str, float], payload: dict[str, Any]) -> Run:
        try:
            conn = self._open_run(need, payload)
        except (OSError, EOFError):
            # It had ended (idle, or just deciding to) before taking the run: nothing was
            # submitted, so once more with a gateway that runs.
            self._ensure()
            conn = self._open_run(need, payload)
        send_lock = threading.Lock()

        def stop() -> None:
            with send_lock:
                try:
                    conn.send(("stop",))
                except (OSError, ValueError):
                    pass

        run = Run(stop, conn.close)

        def read() -> None:
            try:
                while True:
                    item = conn.recv()
                    run.items.put(item)
                    if item[0] != "item":
                        return
            except (OSError, EOFError, ValueError):
                run.items.put(("lost", "lost the connection to cairn's gateway to the Ray "
                                       f"cluster, which relayed it (see {self.place.log})"))

        threading.Thread(target=read, daemon=True,
                         name=f"ray-gateway-{payload['execution_id'][:8]}").start()
        return run


class _GatewayPlace:
    """Where the gateway for one cluster (and cairn build and Ray settings) listens."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.socket = folder / f"{name}.sock"
        self.lock = folder / f"{name}.lock"
        self.log = folder / f"{name}.log"
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The secret both ends prove they know (a file only this user can read)."""
        if self._key is None:
            path = self.folder / "key"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(os.urandom(32))
            key = path.read_bytes()
            while len(key) < 32:  # another process is writing it right now
                time.sleep(0.01)
                key = path.read_bytes()
            self._key = key
        return self._key

    def dial(self) -> Connection:
        from multiprocessing.connection import Client

        return Client(str(self.socket), family="AF_UNIX", authkey=self.key())

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " / ".join(lines[-3:])


def _gateway_place(address: str) -> _GatewayPlace:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = base / f"cairn-ray-{_uid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != _uid() or info.st_mode & 0o077:
        raise ExecutionError(f"{folder} is not private to this user",
                             "remove it, or set CAIRN_RAY_GATEWAY=0")
    ray_settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("RAY_"))
    build = hashlib.blake2b(repr((_build_tag(), ray_settings)).encode(), digest_size=6)
    return _GatewayPlace(folder, f"{_address_tag(address)}-{build.hexdigest()}")


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _address_tag(address: str) -> str:
    return hashlib.blake2b(address.encode(), digest_size=6).hexdigest()


def _other_gateways(place: _GatewayPlace, address: str) -> list[_GatewayPlace]:
    """The places of the gateways to ``address`` of other cairn builds or Ray settings."""
    return [_GatewayPlace(place.folder, path.stem)
            for path in sorted(place.folder.glob(f"{_address_tag(address)}-*.sock"))
            if path != place.socket]


_tag: str | None = None


def _build_tag() -> str:
    """Names this cairn build (version and its files), so that a gateway (and the workers
    it keeps) started by another build -- an upgrade, an edited checkout -- is never handed
    this one's work."""
    global _tag
    if _tag is None:
        import cairn

        package = Path(cairn.__file__).parent
        digest = hashlib.blake2b(cairn.__version__.encode(), digest_size=8)
        for path in sorted(package.rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}"
                          .encode())
        _tag = digest.hexdigest()
    return _tag


def _start_gateway(address: str, place: _GatewayPlace) -> subprocess.Popen[bytes]:
    code = "from cairn.executors.ray_backend import serve_gateway; serve_gateway()"
    with open(place.log, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, address, str(place.socket)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=place.folder, env=dict(os.environ))


def stop_gateway(address: str) -> int:
    """Ask every gateway to ``address`` on this machine to end now (a cluster that is going
    away); how many answered."""
    try:
        place = _gateway_place(address)
    except ExecutionError:
        return 0
    return sum(_tell(p, "quit") for p in [place, *_other_gateways(place, address)])


def _tell(place: _GatewayPlace, what: str) -> bool:
    try:
        with place.dial() as conn:
            conn.send((what,))
            conn.recv()
        return True
    except (OSError, EOFError):
        return False


def serve_gateway(argv: list[str] | None = None) -> None:
    """The gateway process: ``ADDRESS SOCKET`` (see the module docstring)."""
    import fcntl
    from multiprocessing.connection import Listener

    address, path = (argv or sys.argv[1:])[:2]
    place = _GatewayPlace(Path(path).parent, Path(path).stem)
    holder = open(place.lock, "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another gateway serves this cluster
    try:
        cluster = DriverCluster(address)
    except Exception as exc:  # noqa: BLE001 - the client shows the log's last line
        print(f"gateway: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    place.socket.unlink(missing_ok=True)
    listener = Listener(str(place.socket), family="AF_UNIX", authkey=place.key())
    for other in _other_gateways(place, address):
        _tell(other, "retire")  # an older build's: end once its runs are done
    state_lock = threading.Lock()

    def quit_now() -> None:
        state["quit"] = True
        try:  # wake the accept() below
            place.dial().close()
        except Exception:  # noqa: BLE001 - it is closing anyway
            pass

    state: dict[str, Any] = {"active": 0, "last": time.monotonic(), "quit": False,
                             "retire": False, "quit_now": quit_now}

    def serve(conn: Connection) -> None:
        with state_lock:
            state["active"] += 1
        try:
            _serve_one(cluster, conn, state)
        except (OSError, EOFError):
            pass
        finally:
            conn.close()
            with state_lock:
                state["active"] -= 1
                state["last"] = time.monotonic()

    def watch() -> None:
        misses = 0
        while not state["quit"]:
            time.sleep(GATEWAY_WATCH_SECONDS)
            try:
                _check_reachable(address)
                misses = 0
            except ExecutionError:
                misses += 1
            with state_lock:
                idle = state["active"] == 0 and (
                    state["retire"] or time.monotonic() - state["last"] > GATEWAY_IDLE_SECONDS)
            if misses >= 3 or idle:
                quit_now()

    threading.Thread(target=watch, daemon=True, name="gateway-watch").start()
    try:
        while True:
            try:
                conn = listener.accept()
            except Exception:  # noqa: BLE001 - a client that failed the handshake
                if state["quit"]:
                    break
                continue
            if state["quit"]:
                conn.close()  # a client that comes now starts the next gateway
                break
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    finally:
        state["quit"] = True
        listener.close()
        place.socket.unlink(missing_ok=True)
        cluster.close()
        place.lock.unlink(missing_ok=True)
        if place.log.exists() and not place.log.stat().st_size:
            place.log.unlink(missing_ok=True)


def _serve_one(cluster: DriverCluster, conn: Connection, state: dict[str, Any]) -> None:
    request = conn.recv()
    kind = request[0]
    if kind == "ping":
        conn.send(("ok", os.getpid()))
    elif kind == "nodes":
        try:
            conn.send(("ok", cluster.nodes()))
        except Exception as exc:  # noqa: BLE001 - told to the client
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    elif kind == "quit":
        conn.send(("ok", None))
        state["quit_now"]()
    elif kind == "retire":
        state["retire"] = True
        conn.send(("ok", None))
    elif kind == "run":
        _, need, payload = request
        send_lock = threading.Lock()

        def put(item: tuple[str, Any]) -> None:
            with send_lock:
                conn.send(item)

        relay = _Relay(cluster.ray, need, payload)
        try:
            relay.submit()
        except Exception as exc:  # noqa: BLE001 - told to the client
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        # The first message: the client retries with a new gateway when it does not come.
        put(("ok", None))
        relay.follow(put)
        while True:
            try:
                message = conn.recv()
            except (OSError, EOFError):
                relay.abandon()
                return
            if message[0] == "stop":
                relay.stop()


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


# -- on the node -----------------------------------------------------------------------
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
                current = holder["ctx"].store.get_execution(payload["project_id"], execution_id)
                # Also when it ended meanwhile: its supervisor died and it was reaped.
                if current.stop_requested or current.status.is_final:
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


register_executor("ray", RayExecutor)
