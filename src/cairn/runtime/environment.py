"""What an execution ran on: Python, packages, OS, CPU, memory, GPUs, selected variables."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from cairn.store.cas import ContentStore

# Variables worth recording: they change what code does. Never secrets (no *_TOKEN etc.).
_RECORDED_PREFIXES = ("CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "PYTHONHASHSEED",
                      "CUBLAS_", "TORCH_", "TF_", "XLA_", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")


def capture_environment(content: ContentStore, cache_dir: Path | None = None) -> dict[str, Any]:
    """Describe this machine and Python environment; the package list goes to the store.

    Listing installed packages costs ~0.1 s; with ``cache_dir`` the list is reused for as
    long as no folder on ``sys.path`` changed (installing or removing a package does).
    """
    digest, count = _package_lock(content, cache_dir)
    env = dict(_static_facts())
    env["packages_digest"] = digest
    env["package_count"] = count
    env["variables"] = recorded_variables(os.environ)
    return env


def _package_lock(content: ContentStore, cache_dir: Path | None) -> tuple[str, int]:
    key = None
    if cache_dir is not None:
        stamps = [sys.executable]
        for entry in sys.path[1:]:  # [0] is the script's folder or the cwd: not packages
            try:
                stamps.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
            except OSError:
                stamps.append(f"{entry}:-")
        key = hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:32]
        cached = cache_dir / f"packages-{key}.json"
        try:
            data = json.loads(cached.read_text())
            if content.has(data["digest"]):
                return data["digest"], data["count"]
        except (OSError, ValueError, KeyError):
            pass
    packages = installed_packages()
    lock = "".join(f"{name}=={version}\n" for name, version in packages).encode()
    digest = content.put_bytes(lock)
    if key is not None and cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f".packages-{key}.{os.getpid()}"
            tmp.write_text(json.dumps({"digest": digest, "count": len(packages)}))
            os.replace(tmp, cache_dir / f"packages-{key}.json")
        except OSError:
            pass  # a cache, nothing more
    return digest, len(packages)


def installed_packages() -> list[tuple[str, str]]:
    """(name, version) of every distribution importable by this interpreter, sorted."""
    from importlib import metadata

    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return sorted((v.split("==", 1)[0], v.split("==", 1)[1]) for v in seen.values())


def recorded_variables(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(environ.items())
        if k.startswith(_RECORDED_PREFIXES) and not any(w in k for w in _SECRET_WORDS)
    }


@lru_cache(maxsize=1)
def _static_facts() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "os": platform.platform(),
        "hostname": platform.node(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_mb": total_memory_mb(),
        "gpus": detect_gpus(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 20))
    except (ValueError, OSError, AttributeError):
        return 0


@lru_cache(maxsize=1)
def detect_gpus() -> list[dict[str, Any]]:
    """GPUs reported by ``nvidia-smi`` (index, name, memory, driver); empty without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total,driver_version,uuid",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 5 and parts[0].isdigit():
            gpus.append({"index": int(parts[0]), "name": parts[1],
                         "memory_mb": int(float(parts[2])) if parts[2] else None,
                         "driver": parts[3], "uuid": parts[4]})
    return gpus
