from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from cairn.runtime.metrics import MetricSink
from cairn.runtime.process import LogWriter, parse_log_line, run_process


def _run(tmp_path: Path, script: str, **kw):  # noqa: ANN003, ANN202
    log = LogWriter(tmp_path / "x.log")
    lines: list[tuple[str, str]] = []
    try:
        result = run_process([sys.executable, "-c", script], cwd=tmp_path, env=os.environ,
                             log=log, on_line=lambda s, t: lines.append((s, t)), **kw)
    finally:
        log.close()
    return result, lines, (tmp_path / "x.log").read_text().splitlines()


def test_output_is_streamed_logged_and_timestamped(tmp_path: Path) -> None:
    result, lines, logged = _run(
        tmp_path, "import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)")
    assert result.exit_code == 3 and result.reason == "exited"
    assert ("out", "hello") in lines and ("err", "oops") in lines
    parsed = [parse_log_line(line) for line in logged]
    assert {(p[1], p[2]) for p in parsed} == {("out", "hello"), ("err", "oops")}
    assert all(abs(p[0] - time.time()) < 60 for p in parsed)
    assert result.last_stderr == ["oops"]


def test_json_lines_on_stdout_become_metrics(tmp_path: Path) -> None:
    stored = []
    sink = MetricSink(stored.extend, lambda m: None)
    log = LogWriter(tmp_path / "x.log")
    run_process([sys.executable, "-c",
                 "import json\nfor i in range(3): print(json.dumps({'step': i, 'loss': 1/(i+1)}))"],
                cwd=tmp_path, env=os.environ, log=log, metrics=sink)
    sink.close()
    log.close()
    assert [(p.step, p.value) for p in stored] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]


def test_time_limit_stops_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']);"
              f"open({str(marker)!r}, 'w').write(str(p.pid)); print('started', flush=True);"
              "time.sleep(60)")
    start = time.monotonic()
    result, _, _ = _run(tmp_path, script, time_limit=1.0, grace_seconds=1.0)
    assert time.monotonic() - start < 10
    assert result.reason == "time-limit"
    assert "time limit of 1s" in result.detail
    child = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the grandchild is gone too


def test_no_output_timeout(tmp_path: Path) -> None:
    result, _, _ = _run(tmp_path, "print('one', flush=True); import time; time.sleep(30)",
                        no_output_timeout=1.0, grace_seconds=1.0)
    assert result.reason == "no-output-timeout"
    assert "no output for 1s" in result.detail


def test_stop_request_ends_it_with_sigterm_then_sigkill(tmp_path: Path) -> None:
    flag = {"stop": False}
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, lambda *a: None)\n"
              "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)")

    def should_stop() -> bool:
        return flag["stop"]

    started = time.monotonic()
    def on_line(stream: str, text: str) -> None:  # noqa: E306
        flag["stop"] = True

    log = LogWriter(tmp_path / "x.log")
    result = run_process([sys.executable, "-c", script], cwd=tmp_path, env=os.environ, log=log,
                         on_line=on_line, should_stop=should_stop, grace_seconds=1.0,
                         stop_poll_seconds=0.1)
    log.close()
    assert result.reason == "stopped"
    assert result.exit_code == -9  # it ignored SIGTERM, so the grace period ended in SIGKILL
    assert time.monotonic() - started < 10


def test_missing_program_is_reported(tmp_path: Path) -> None:
    log = LogWriter(tmp_path / "x.log")
    result = run_process(["/nonexistent/program"], cwd=tmp_path, env=os.environ, log=log)
    log.close()
    assert result.exit_code is None
    assert "cannot start /nonexistent/program" in result.detail


def test_a_line_followed_by_silence_is_readable_while_the_step_runs(tmp_path: Path) -> None:
    import threading

    log_path = tmp_path / "log"
    log = LogWriter(log_path)
    seen: list[str] = []

    def watch() -> None:  # what `cairn logs --follow` would read meanwhile
        time.sleep(0.2)
        for _ in range(6):
            time.sleep(0.05)
            seen.append(log_path.read_text())

    watcher = threading.Thread(target=watch)
    watcher.start()
    # Two lines in quick succession (the second lands inside the writer's flush window),
    # then nothing for a second.
    run_process([sys.executable, "-c",
                 "import time; print('one', flush=True); print('two', flush=True); "
                 "time.sleep(1)"], cwd=tmp_path, env=os.environ, log=log)
    watcher.join()
    log.close()
    assert "two" in seen[-1], seen
