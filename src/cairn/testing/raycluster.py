"""A real local Ray cluster for tests: a head and worker nodes started with ``ray start``.

Each node runs ``ray start --block`` in its own session, so stopping it is killing that
process group (by id: other clusters on the machine are left alone), after asking cairn's
gateway to the cluster, if one runs, to end. Token auth is turned off for these
loopback-only nodes; object stores are kept small. Each node's temporary folder (cairn's
node-local data) lies inside the cluster's, removed with it. A worker can be given
environment variables of its own (``worker_env``): a node that reaches the network
differently from the others, as a real cluster's may.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE_BYTES = 78_643_200  # Ray's minimum


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fixed_ports(count: int) -> list[int]:
    """``count`` consecutive free ports below the kernel's ephemeral range (32768+), so
    that no process binding port 0 meanwhile (Ray starts many) can take one of them."""
    import random

    for _ in range(200):
        base = random.randrange(12000, 20000 - count)
        ports = list(range(base, base + count))
        if all(_bindable(p) for p in ports):
            return ports
    raise RuntimeError("no run of free ports found for the Ray test cluster")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def node_ports(ports: list[int], index: int) -> list[str]:
    """Ports of one node, all chosen here: Ray's defaults (such as the dashboard agent's
    52365) would collide between nodes of one machine, and a raylet that cannot bind aborts.
    Worker processes get a disjoint range per node."""
    own = ports[index * 6:(index + 1) * 6]
    low = 20000 + index * 2000
    return [f"--node-manager-port={own[0]}", f"--object-manager-port={own[1]}",
            f"--metrics-export-port={own[2]}", f"--dashboard-agent-listen-port={own[3]}",
            f"--dashboard-agent-grpc-port={own[4]}", f"--runtime-env-agent-port={own[5]}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 1999}"]


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


@dataclass
class RayCluster:
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    node_ids: dict[str, str] = field(default_factory=dict)  # custom resource → node id
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # resource → node

    def kill_node(self, resource: str) -> None:
        """Kill the worker node holding ``resource`` -- its raylet and every process of
        it -- at once, as a machine failure would."""
        proc = self.workers[resource]
        family = _descendants({proc.pid})
        _kill(proc, signal.SIGKILL)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def ray_cluster(
    workers: Sequence[dict[str, float]] = ({"nodeA": 1}, {"nodeB": 1}),
    *,
    cpus_per_node: int = 1,
    timeout: float = 90.0,
    worker_env: Sequence[Mapping[str, str] | None] = (),
) -> Iterator[RayCluster]:
    """Start a head (no CPUs: work goes to the workers) and one worker per resource dict;
    ``worker_env[i]``, where given, is added to worker ``i``'s environment."""
    import json

    ray_bin = str(Path(sys.executable).parent / "ray")
    fixed = _fixed_ports(1 + 6 * (1 + len(workers)))
    port = fixed.pop()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="cr", dir="/tmp")  # short: Ray's socket paths are limited
    logs = Path(temp) / "logs"
    logs.mkdir()
    common = ["--block", "--node-ip-address=127.0.0.1", f"--object-store-memory={OBJECT_STORE_BYTES}",
              "--disable-usage-stats"]
    cluster = RayCluster(address)
    try:
        cluster.processes.append(subprocess.Popen(
            [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=0",
             "--include-dashboard=false", f"--temp-dir={temp}", *node_ports(fixed, 0), *common],
            stdout=open(logs / "head.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True, env=_node_env(temp, "head", None)))
        _wait_port(port, timeout)
        for i, resources in enumerate(workers):
            # One at a time: nodes starting together race for ports Ray probes and binds.
            log = logs / f"worker{i}.log"
            extra = worker_env[i] if i < len(worker_env) else None
            proc = subprocess.Popen(
                [ray_bin, "start", f"--address={address}", f"--num-cpus={cpus_per_node}",
                 f"--resources={json.dumps(resources)}", *node_ports(fixed, i + 1), *common],
                stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                start_new_session=True, env=_node_env(temp, f"worker{i}", extra))
            cluster.processes.append(proc)
            cluster.workers[next(iter(resources))] = proc
            _wait_started(proc, log, timeout)
        try:
            cluster.node_ids = _wait_nodes(address, workers, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_log_tails(Path(temp))}") from None
        yield cluster
    finally:
        from cairn.executors.ray_backend import stop_gateway

        stop_gateway(address)
        # Everything the nodes started, found before any of it exits (Ray's processes
        # stay in the node's process group, but some re-parent when their parent dies).
        family = _descendants({p.pid for p in cluster.processes})
        for proc in cluster.processes:
            _kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in cluster.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def _node_env(temp: str, name: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = ray_env()
    tmp = Path(temp) / "tmp" / name  # what the node's processes write to /tmp goes here
    tmp.mkdir(parents=True)
    env["TMPDIR"] = str(tmp)
    env.update(extra or {})
    return env


def _descendants(roots: set[int]) -> set[int]:
    """The pids of every process below ``roots`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _log_tails(temp: Path) -> str:
    """The ends of the nodes' logs and the raylets' errors, for a failed start."""
    parts = []
    for log in sorted((temp / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace")
                                                    .splitlines()[-8:]))
    for log in sorted(temp.glob("session_*/logs/raylet*.out")):
        lines = log.read_text(errors="replace").splitlines()
        first = next((i for i, line in enumerate(lines) if " E " in line), None)
        if first is not None:
            parts.append(f"--- {log.name}\n" + "\n".join(lines[max(0, first - 6):first + 2]))
    return "\n".join(parts)


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"Ray runtime started" in log.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` of a worker exited ({proc.returncode})")
        time.sleep(0.1)
    raise RuntimeError(f"a Ray worker did not start within {timeout:.0f} s")


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the Ray head did not open port {port} within {timeout:.0f} s")


def _wait_nodes(address: str, workers: Sequence[dict[str, float]], timeout: float) -> dict[str, str]:
    """Node id of each worker (by its first custom resource), once all have joined."""
    code = (
        "import json, sys, time, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
        f"want = {[next(iter(w)) for w in workers]!r}\n"
        f"deadline = time.time() + {timeout}\n"
        "while time.time() < deadline:\n"
        "    ids = {k: n['NodeID'] for n in ray.nodes() if n['Alive'] for k in want\n"
        "           if n['Resources'].get(k)}\n"
        "    if len(ids) == len(want):\n"
        "        print(json.dumps(ids)); sys.exit(0)\n"
        "    time.sleep(0.2)\n"
        "sys.exit(1)\n")
    import json

    # In a child process: this one must not stay connected to the cluster.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ray_env(), timeout=timeout + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"Ray workers did not join: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
