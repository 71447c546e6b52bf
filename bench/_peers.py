"""Peers (MLflow) live in their own virtualenv, ``.bench-venv/`` at the repo root.

They are never installed into ``.venv`` and are no dependency of cairn: this module
creates ``.bench-venv`` with ``python3 -m venv`` when it is missing, pip-installs the
pinned peers into it, and runs peer code as a subprocess with that interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = ROOT / ".bench-venv"
PYTHON = VENV / "bin" / "python"
MLFLOW_VERSION = "3.17.2"
PEERS = {"mlflow": MLFLOW_VERSION}
_STAMP = VENV / ".peers-installed"


def _stamp_text() -> str:
    return json.dumps(PEERS, sort_keys=True)


def ensure_peers(verbose: bool = True) -> Path:
    """Create ``.bench-venv`` and install the pinned peers if needed; return its python."""
    if not PYTHON.exists():
        base = shutil.which("python3") or sys.executable
        if verbose:
            print(f"[peers] creating {VENV.relative_to(ROOT)} with {base} -m venv", file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    if not _STAMP.exists() or _STAMP.read_text() != _stamp_text():
        specs = [f"{name}=={version}" for name, version in PEERS.items()]
        if verbose:
            print(f"[peers] pip install {' '.join(specs)} into {VENV.relative_to(ROOT)} "
                  "(first run only; takes a minute or two)", file=sys.stderr)
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *specs],
            check=True,
        )
        _STAMP.write_text(_stamp_text())
    return PYTHON


def peer_env() -> dict[str, str]:
    """Environment for peer subprocesses: no cairn venv on PATH, quiet MLflow."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    env["PYTHONWARNINGS"] = "ignore"
    env["GIT_PYTHON_REFRESH"] = "quiet"
    return env


def compile_peers() -> None:
    """Precompile the peer venv's site-packages (PYTHONDONTWRITEBYTECODE is set here)."""
    subprocess.run([str(PYTHON), "-m", "compileall", "-q", "-j", "0", str(VENV / "lib")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def run_peer(script: str, *args: str, timeout: float = 600) -> dict:
    """Run ``bench/<script>`` with the peer interpreter; it prints one JSON object last."""
    proc = subprocess.run(
        [str(PYTHON), str(BENCH / script), *args],
        capture_output=True, text=True, env=peer_env(), timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{script} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def peer_version(package: str) -> str:
    proc = subprocess.run(
        [str(PYTHON), "-c",
         f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, env=peer_env(),
    )
    return proc.stdout.strip() or "?"



# DVC gets a virtualenv of its own: its dependency tree (dvc-data, scmrepo, pygit2, ...)
# is large and must not disturb the MLflow one.
DVC_VENV = ROOT / ".bench-dvc-venv"
DVC_VERSION = "3.67.1"
DVC_BIN = DVC_VENV / "bin" / "dvc"
_DVC_STAMP = DVC_VENV / ".dvc-installed"


def ensure_dvc(verbose: bool = True) -> Path:
    """Create ``.bench-dvc-venv`` with the pinned DVC if needed; return its ``dvc`` script."""
    python = DVC_VENV / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        if verbose:
            print(f"[peers] creating {DVC_VENV.relative_to(ROOT)} with {base} -m venv",
                  file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(DVC_VENV)], check=True)
        # Keep the venv out of git without needing a line in the repository's .gitignore.
        (DVC_VENV / ".gitignore").write_text("*\n")
    if not _DVC_STAMP.exists() or _DVC_STAMP.read_text() != DVC_VERSION:
        if verbose:
            print(f"[peers] pip install dvc=={DVC_VERSION} into {DVC_VENV.relative_to(ROOT)} "
                  "(first run only; takes a minute or two)", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"dvc=={DVC_VERSION}"],
            check=True,
        )
        subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0",
                        str(DVC_VENV / "lib")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        _DVC_STAMP.write_text(DVC_VERSION)
    return DVC_BIN


def dvc_env() -> dict[str, str]:
    """Environment for ``dvc`` subprocesses: its venv first on PATH, no analytics or updater."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{DVC_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["DVC_NO_UPDATER"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env["GIT_PYTHON_REFRESH"] = "quiet"
    return env


if __name__ == "__main__":
    ensure_peers()
    print(f"mlflow {peer_version('mlflow')} in {VENV}")
