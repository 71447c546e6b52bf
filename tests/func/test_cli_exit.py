"""How the `cairn` process ends: it skips the interpreter's teardown, but never what a
normal exit would do for the user (the exit code, buffered output, exit handlers, threads
still at work)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.func.conftest import cairn_proc


def _exit_with(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` then ``cairn.cli.main._exit(3)`` in a fresh interpreter."""
    script = (
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "from cairn.cli.main import _exit\n"
        f"out = Path({str(tmp_path)!r})\n"
        f"{code}\n"
        "_exit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)


def test_exit_code_output_and_exit_handlers_survive(tmp_path: Path) -> None:
    result = _exit_with(
        "atexit.register(lambda: (out / 'atexit').write_text('ran'))\n"
        "sys.stdout.write('x' * 100_000)\n"  # more than a pipe's buffer, not yet flushed
        "sys.stderr.write('to stderr')",
        tmp_path,
    )
    assert result.returncode == 3
    assert result.stdout == "x" * 100_000
    assert result.stderr == "to stderr"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_thread_still_at_work_is_waited_for(tmp_path: Path) -> None:
    result = _exit_with(
        "def work():\n"
        "    time.sleep(0.3)\n"
        "    (out / 'thread').write_text('done')\n"
        "threading.Thread(target=work).start()",
        tmp_path,
    )
    assert result.returncode == 3
    assert (tmp_path / "thread").read_text() == "done"


def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`cairn ... | head -1`: the reader went away; no traceback, no error message (the
    status is click's for a broken pipe, 1, which a shell pipeline does not report)."""
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


def test_error_exit_codes_reach_the_shell(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    missing = cairn_proc("lint")
    assert missing.returncode == 3
    assert "error: no cairn.yaml or valohai.yaml" in missing.stderr
    assert cairn_proc("no-such-command").returncode == 2
