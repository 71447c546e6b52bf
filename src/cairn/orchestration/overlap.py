"""Run one call in a forked child while this process does other work.

A command that opens the metadata store first spends a quarter of a second importing
SQLAlchemy, on one core, while the machine's other cores idle. Work that needs no
database (hashing and storing a folder's files) can run in a forked child meanwhile:
:func:`start` forks, the child runs the call and sends back its result or its exception,
and :meth:`Forked.result` waits for it.

Only a process with one thread may fork: :func:`cairn.forking.can_fork` says whether
this one may.

Signals: Ctrl-C reaches both processes (they share the terminal's process group); the
child stops its call, cleaning up as the call does on ``KeyboardInterrupt`` (further
interrupts are ignored meanwhile), and the parent waits for it before going on. A child
whose parent died (``kill -9``) interrupts its call itself at the call's next ``check()``
(see :func:`start`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

from cairn import forking
from cairn.errors import CairnError
from cairn.forking import can_fork

__all__ = ["ChildLost", "Forked", "can_fork", "start"]

T = TypeVar("T")


class ChildLost(CairnError):
    """The child died without sending a result (killed, or out of memory)."""


class Forked(Generic[T]):
    """A call running in a forked child; see :func:`start`."""

    def __init__(self, pid: int, reader: int) -> None:
        self.pid = pid
        self._reader = reader
        self._done = False
        self._code: int | None = None

    def result(self) -> T:
        """Wait for the child: its call's return value, or its exception raised here."""
        try:
            message = forking.receive(self._reader)
        finally:
            self._reap()
        if message is None:
            code = self._code
            how = f"killed by signal {-code}" if code is not None and code < 0 else (
                f"exit status {code}")
            raise ChildLost(f"the worker process {self.pid} ended without a result ({how})",
                            forking.LOST_HINT)
        ok, value = message
        if ok:
            return value  # type: ignore[return-value]
        raise value  # type: ignore[misc]

    def cancel(self) -> None:
        """Interrupt the child's call (as Ctrl-C would) and wait for it to clean up."""
        if not self._done:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            self._reap()

    def _reap(self) -> None:
        if not self._done:
            self._done = True
            os.close(self._reader)
            self._code = forking.reap(self.pid)

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _interrupt_once(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def start(call: Callable[[Callable[[], None]], T]) -> Forked[T]:
    """Fork a child that runs ``call(check)`` and sends back what it returns or raises.

    Raises ``OSError`` (and leaks nothing) when the system refuses the fork.

    ``check`` raises ``KeyboardInterrupt`` in the child once its parent is gone: the call
    should run it now and then (a progress callback is the natural place). Use the
    result as a context manager: leaving it cancels a child whose result was not read.
    """
    reader, writer = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        os.close(reader)
        os.close(writer)
        raise
    if pid:
        os.close(writer)
        return Forked(pid, reader)
    # -- the child: never returns --------------------------------------------------------
    code = 0
    try:
        os.close(reader)
        # Ctrl-C reaches this child, and the parent then cancels it too: the second
        # interrupt must not cut short the cleanup that the first one started.
        signal.signal(signal.SIGINT, _interrupt_once)

        def check() -> None:
            if os.getppid() != parent:
                raise KeyboardInterrupt("the parent process is gone")

        try:
            outcome: tuple[bool, object] = (True, call(check))
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the parent
            outcome = (False, exc)
        forking.send(writer, *outcome)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the parent reports a child without a result
        code = 1
    finally:
        os._exit(code)
