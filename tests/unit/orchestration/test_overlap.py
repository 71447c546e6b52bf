"""A call in a forked child: its result, its errors, cancelling it, losing it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cairn.errors import InputError
from cairn.orchestration import overlap


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_result_comes_back_from_another_process() -> None:
    with overlap.start(lambda check: {"pid": os.getpid(), "files": [1, 2]}) as job:
        result = job.result()
    assert result["files"] == [1, 2]
    assert result["pid"] == job.pid != os.getpid()
    assert _gone(job.pid)  # reaped: no zombie left


def test_an_error_comes_back_whole() -> None:
    def fail(check: object) -> None:
        raise InputError("cannot read /x/y.png: Permission denied", "check the permissions")

    with overlap.start(fail) as job, pytest.raises(InputError) as caught:
        job.result()
    assert caught.value.message == "cannot read /x/y.png: Permission denied"
    assert caught.value.hint == "check the permissions"


def test_an_error_that_cannot_be_pickled_is_still_reported() -> None:
    class Odd(Exception):
        def __init__(self) -> None:
            super().__init__("odd")
            self.callback = lambda: None

    def fail(check: object) -> None:
        raise Odd()

    with overlap.start(fail) as job, pytest.raises(RuntimeError, match="Odd: odd"):
        job.result()


def test_a_killed_child_is_reported() -> None:
    with overlap.start(lambda check: time.sleep(60)) as job:
        os.kill(job.pid, signal.SIGKILL)
        with pytest.raises(overlap.ChildLost, match="killed by signal 9"):
            job.result()


def test_cancelling_runs_the_calls_cleanup(tmp_path: Path) -> None:
    def work(check: object) -> None:
        (tmp_path / "started").touch()
        try:
            time.sleep(60)
        finally:
            (tmp_path / "cleaned up").touch()

    started = time.monotonic()
    with overlap.start(work) as job:
        _wait_for(tmp_path / "started")
    assert (tmp_path / "cleaned up").exists()  # leaving the block waited for the cleanup
    assert _gone(job.pid)
    assert time.monotonic() - started < 30


def test_an_orphaned_child_stops_at_its_next_check(tmp_path: Path) -> None:
    """kill -9 of the parent: the child's call is interrupted instead of running on."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from cairn.orchestration import overlap

        out = Path({str(tmp_path)!r})

        def work(check):
            try:
                while True:
                    check()
                    time.sleep(0.05)
            except KeyboardInterrupt:
                (out / "stopped").touch()
                raise

        job = overlap.start(work)
        print(job.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait(timeout=30)
    _wait_for(tmp_path / "stopped")
    deadline = time.monotonic() + 30
    while not _gone(child):
        assert time.monotonic() < deadline, "the orphaned child is still running"
        time.sleep(0.05)


def test_a_process_with_threads_does_not_fork() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not overlap.can_fork()
    finally:
        stop.set()
        thread.join()


def test_threads_python_does_not_see_count_too() -> None:
    """BLAKE3's Rust thread pool, once started, rules out forking (a fresh process)."""
    code = textwrap.dedent("""
        from blake3 import blake3
        from cairn.forking import can_fork
        before = can_fork()
        blake3(bytes(64 << 20), max_threads=blake3.AUTO).hexdigest()
        print(before, can_fork())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.split() == ["True", "False"]
