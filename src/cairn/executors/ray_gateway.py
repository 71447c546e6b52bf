"""cairn's gateway to a Ray cluster: one long-lived Ray driver per cluster on a machine.

Joining a Ray cluster as a driver costs a process about a second (importing Ray,
connecting, and Ray's exit), and Ray never lends one driver's worker processes to another,
so each new driver's first task also waits for a fresh Python to start and import cairn on
the node. So cairn's processes on a machine share one long-lived driver per cluster: the
*gateway*, a background process started on first use (``python -c`` of
:func:`serve_gateway`), reached over a Unix socket in a folder only this user can read, and
ending itself after :data:`GATEWAY_IDLE_SECONDS` without work or soon after its cluster goes
away. The executions of every `cairn run` then are tasks of one Ray job, which reuse its
warm workers.

A gateway is started per cairn build and Ray settings (:func:`_build_tag`): one of another
build is told to retire, ending once its runs are done. :class:`GatewayCluster` is the
client side (a :class:`~cairn.executors.ray_backend.Cluster`); :func:`serve_gateway` and
:func:`_serve_one` the gateway process, which drives each run with the same
:class:`~cairn.executors.ray_backend.DriverCluster` a gateway-less process uses.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import AuthenticationError
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import ExecutionError
from cairn.executors.ray_backend import (
    Cluster,
    DriverCluster,
    Run,
    _check_reachable,
    _Relay,
    _uid,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

CONNECT_TIMEOUT = 20.0
GATEWAY_IDLE_SECONDS = 300.0  # a gateway without requests this long ends itself
GATEWAY_WATCH_SECONDS = 2.0  # how often a gateway checks that its cluster is still there

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
    code = "from cairn.executors.ray_gateway import serve_gateway; serve_gateway()"
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
