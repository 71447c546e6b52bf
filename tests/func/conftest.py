"""Functional tests: a real project folder, the real CLI through ``main([...])``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest


PROJECT_YAML = """\
- step:
    name: hello
    image: python:3.11
    description: Says hello, writes outputs, logs metrics.
    command: python hello.py {parameters}
    parameters:
      - name: count
        type: integer
        default: 3
        min: 1
        max: 100
      - name: rate
        type: float
        default: 0.5
      - name: mode
        type: string
        default: fast
        choices: [fast, slow]
      - name: verbose
        type: flag
    inputs:
      - name: data
        optional: true
- step:
    name: fail
    image: python:3.11
    command: python -c "import sys; print('failing'); sys.exit(3)"
- step:
    name: missing-command
    image: python:3.11
    command: definitely-not-a-command-xyz --flag
- step:
    name: needs-input
    image: python:3.11
    command: ls -R $CAIRN_INPUTS_DIR
    inputs:
      - name: data
- step:
    name: leak
    image: python:3.11
    command: ln -s /etc/hostname $CAIRN_OUTPUTS_DIR/leak.txt
- step:
    name: sleep
    image: python:3.11
    command: python sleeper.py {parameters}
    parameters:
      - name: seconds
        type: float
        default: 30
- step:
    name: limited
    image: python:3.11
    time-limit: 1s
    command: python -c "import time; print('working', flush=True); time.sleep(30)"
- step:
    name: copy
    image: python:3.11
    command: python copy_inputs.py
    inputs:
      - name: data
        keep-directories: full
"""

HELLO = """\
import json, os, sys
import cairn

args = sys.argv[1:]
print("args:", " ".join(args))
count = cairn.parameters["count"]
for i in range(count):
    print(json.dumps({"step": i, "loss": 1.0 / (i + 1), "accuracy": i / count}))
cairn.log(step=count, final_loss=0.125)
print("to stderr", file=sys.stderr)
cairn.outputs.path("result.txt").write_text(f"count={count} mode={cairn.parameters['mode']}\\n")
cairn.outputs.path("sub/deep.txt").write_text("deep\\n")
print("cuda:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")))
"""

SLEEPER = """\
import json, os, sys, time
seconds = float(sys.argv[1].split("=")[1]) if len(sys.argv) > 1 else 30
print(json.dumps({"started": time.time()}), flush=True)
print("gpus", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
time.sleep(seconds)
print(json.dumps({"ended": time.time()}), flush=True)
"""

COPY = """\
import hashlib, os, pathlib
src = pathlib.Path(os.environ["CAIRN_INPUTS_DIR"])
dst = pathlib.Path(os.environ["CAIRN_OUTPUTS_DIR"])
for f in sorted(src.rglob("*")):
    if f.is_file():
        out = dst / "copy" / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(f.read_bytes())
        writable = bool(f.stat().st_mode & 0o222)
        print(f"{f.relative_to(src)} writable={writable}")
"""


def write_files(root: Path, files: dict[str, str]) -> Path:
    """A new folder ``root`` holding ``files`` (relative path → text); returns it."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_files(tmp_path / "proj", {
        "cairn.yaml": PROJECT_YAML, "hello.py": HELLO, "sleeper.py": SLEEPER,
        "copy_inputs.py": COPY})
    monkeypatch.chdir(root)
    return root


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def cairn_proc(*args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cairn ARGS`` in a process of its own (as a user's shell would run it)."""
    return subprocess.run([sys.executable, "-m", "cairn", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a child of this process that exited is reaped first)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def dedent(text: str) -> str:
    return textwrap.dedent(text)


@pytest.fixture
def http_root(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def http_server(http_root: Path):  # noqa: ANN201
    """A real HTTP server on loopback serving ``http_root``."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(http_root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
