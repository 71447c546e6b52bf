"""Forked children that run Python: whether this process may fork, and what passes
between a parent and its child.

A child gets only the thread that forked it. Any lock another thread held at that moment
stays held in the child forever, and a pool whose threads are gone waits for them
forever. That includes pools Python does not see: the BLAKE3 hasher's Rust thread pool,
once started, is one. So a process may fork only while the kernel lists a single
thread for it (:func:`can_fork`).

Parent and child talk over pipes in messages: ``(ok, value)`` pickled behind its length
(:func:`send`, :func:`receive`), ``value`` being a result or, with ``ok`` false, the
exception to raise on the other side.
"""

from __future__ import annotations

import os
import pickle
import threading

LOST_HINT = ("run it again; if it happens again, look for an out-of-memory kill in the "
             "system log (dmesg)")
"""What to tell a user whose command lost a child process without a word from it."""


def can_fork() -> bool:
    """Whether this process may fork now: POSIX, and one thread, native ones included."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc (macOS, BSD): only Python's threads can be counted
        return True


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (a pipe or a signal can cut a write short)."""
    written = os.write(fd, data)
    if written < len(data):  # rare: finish it off
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def send(fd: int, ok: bool, value: object) -> None:
    """Send ``(ok, value)``. An exception that cannot be pickled goes as a
    ``RuntimeError`` that carries its type and text."""
    try:
        data = pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - report it rather than lose it
        data = pickle.dumps(
            (False, RuntimeError(f"{type(value).__name__}: {value} (not sendable: {exc})")))
    write_all(fd, len(data).to_bytes(8, "little") + data)


def receive(fd: int) -> tuple[bool, object] | None:
    """The next message, or None where the other side closed the pipe (or died) first."""
    header = _read_exactly(fd, 8)
    if len(header) < 8:
        return None
    body = _read_exactly(fd, int.from_bytes(header, "little"))
    return pickle.loads(body)  # type: ignore[no-any-return]


def _read_exactly(fd: int, n: int) -> bytes:
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def reap(pid: int) -> int | None:
    """Wait for the child ``pid`` to end, through Ctrl-C too (it is cleaning up): its
    exit code, negative for a signal, or None if it was reaped already."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            return None
        except (InterruptedError, KeyboardInterrupt):
            continue
