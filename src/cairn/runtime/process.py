"""The process runner: one step command in its own process group, watched.

Output is read line by line on two threads, time-stamped into the execution's log file,
echoed to an optional callback, and JSON-object stdout lines are handed to a metric sink.
The runner enforces ``time-limit`` and ``no-output-timeout`` and honours stop requests by
stopping the whole process group: SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cairn.runtime.metrics import MetricSink

LineCallback = Callable[[str, str], None]  # (stream "out"|"err", text without newline)


@dataclass
class ProcessResult:
    """How the process ended: ``reason`` is exited | time-limit | no-output-timeout | stopped."""

    exit_code: int | None
    reason: str
    detail: str | None = None
    last_stderr: list[str] = field(default_factory=list)


class LogWriter:
    """Appends time-stamped lines (``<unix time> <o|e> <text>``) to the log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8", errors="replace", buffering=1 << 16)
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._dirty = False

    def write(self, stream: str, text: str, when: float) -> None:
        self.write_many(stream, [text], when)

    def write_many(self, stream: str, lines: list[str], when: float) -> None:
        prefix = f"{when:.6f} {stream[0]} "
        block = prefix + ("\n" + prefix).join(lines) + "\n"
        with self._lock:
            self._fh.write(block)
            now = time.monotonic()
            if now - self._last_flush > 0.2:  # readable by `cairn logs --follow` soon
                self._fh.flush()
                self._last_flush = now
                self._dirty = False
            else:
                self._dirty = True

    def flush_if_dirty(self) -> None:
        """Write out lines still buffered (a line followed by silence must show up too)."""
        if self._dirty:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()
            self._last_flush = time.monotonic()
            self._dirty = False

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def parse_log_line(line: str) -> tuple[float, str, str] | None:
    """Split a stored log line into (time, "out"|"err", text)."""
    try:
        when, stream, text = line.rstrip("\n").split(" ", 2)
        return float(when), "out" if stream == "o" else "err", text
    except ValueError:
        return None


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: LogWriter,
    metrics: MetricSink | None = None,
    on_line: LineCallback | None = None,
    on_start: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    time_limit: float | None = None,
    no_output_timeout: float | None = None,
    grace_seconds: float = 10.0,
    poll_seconds: float = 0.05,
    stop_poll_seconds: float = 0.5,
) -> ProcessResult:
    """Run ``argv`` to its end (or until stopped) and say how it ended."""
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return ProcessResult(None, "exited", f"cannot start {argv[0]}: {exc.strerror or exc}")
    for pipe in (proc.stdout, proc.stderr):
        _widen(pipe)
    if on_start is not None:
        on_start(proc.pid)
    last_output = [time.monotonic()]
    stderr_tail: deque[str] = deque(maxlen=20)
    readers = [
        threading.Thread(target=_read, args=(proc.stdout, "out", log, metrics, on_line,
                                              last_output, None), daemon=True),
        threading.Thread(target=_read, args=(proc.stderr, "err", log, None, on_line,
                                              last_output, stderr_tail), daemon=True),
    ]
    for reader in readers:
        reader.start()

    started = time.monotonic()
    next_stop_poll = started + stop_poll_seconds
    reason, detail = "exited", None
    try:
        while True:
            try:
                proc.wait(timeout=poll_seconds)
                break
            except subprocess.TimeoutExpired:
                pass
            log.flush_if_dirty()
            now = time.monotonic()
            if time_limit is not None and now - started > time_limit:
                reason, detail = "time-limit", f"stopped: ran past its time limit of {_fmt(time_limit)}"
            elif no_output_timeout is not None and now - last_output[0] > no_output_timeout:
                reason, detail = ("no-output-timeout",
                                  f"stopped: no output for {_fmt(no_output_timeout)}")
            elif should_stop is not None and now >= next_stop_poll:
                next_stop_poll = now + stop_poll_seconds
                if should_stop():
                    reason, detail = "stopped", "stopped by request"
            if reason != "exited":
                _stop_group(proc, grace_seconds)
                break
    except KeyboardInterrupt:
        reason, detail = "stopped", "stopped by request"
        _stop_group(proc, grace_seconds)
    # Children the command left behind would keep our pipes open: end them too.
    _stop_group(proc, min(grace_seconds, 2.0), main_exited=True)
    for reader in readers:
        reader.join()
    return ProcessResult(proc.returncode, reason, detail, list(stderr_tail))


def _read(
    pipe: IO[bytes] | None,
    stream: str,
    log: LogWriter,
    metrics: MetricSink | None,
    on_line: LineCallback | None,
    last_output: list[float],
    tail: deque[str] | None,
) -> None:
    """Drain one pipe in large chunks: a step that prints fast is never held up by us.

    Lines that arrive together share one arrival time; JSON lines are only picked out
    here and parsed on the metric sink's own thread.
    """
    assert pipe is not None
    fd = pipe.fileno()
    pending = b""
    with pipe:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            last_output[0] = time.monotonic()
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending += chunk
                if len(pending) < 1 << 20:  # a very long line is flushed in pieces
                    continue
                complete, pending = pending, b""
            else:
                complete, pending = pending + chunk[:cut], chunk[cut + 1:]
            _emit(complete.decode("utf-8", "replace").split("\n"), stream, log, metrics,
                  on_line, tail)
        if pending:
            _emit([pending.decode("utf-8", "replace")], stream, log, metrics, on_line, tail)


def _emit(
    lines: list[str],
    stream: str,
    log: LogWriter,
    metrics: MetricSink | None,
    on_line: LineCallback | None,
    tail: deque[str] | None,
) -> None:
    now = time.time()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    log.write_many(stream, lines, now)
    if metrics is not None:
        events = [line for line in lines if line[:1] == "{"]
        if events:
            metrics.put_lines(events, now)
    if tail is not None:
        tail.extend(lines[-tail.maxlen:] if tail.maxlen else lines)
    if on_line is not None:
        for line in lines:
            on_line(stream, line)


def _widen(pipe: IO[bytes] | None) -> None:
    """Give the pipe a 1 MB buffer (Linux): a burst of output never waits for our reader."""
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: keep the default


def _stop_group(proc: subprocess.Popen[bytes], grace: float, *, main_exited: bool = False) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not main_exited and proc.poll() is None:
            time.sleep(0.05)
            continue
        if not _group_alive(proc.pid):
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not (h or m) else ""]
    return " ".join(p for p in parts if p)
