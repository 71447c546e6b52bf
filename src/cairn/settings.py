"""One Settings object.

Precedence, highest first: explicit argument > environment ``CAIRN_*`` > project config
(``.cairn/config.toml``) > user config (``~/.config/cairn/config.toml``) > default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cairn.errors import ConfigError

PROJECT_FILES = ("cairn.yaml", "valohai.yaml")
DATA_DIR_NAME = ".cairn"


@dataclass(frozen=True)
class Settings:
    """Where a project's metadata and blobs live and what this machine offers."""

    project_root: Path
    data_dir: Path
    database_url: str
    store_url: str
    project_name: str
    local_cpus: float | None = None  # None: this machine's CPU count
    local_memory_mb: int | None = None  # None: this machine's memory
    local_gpus: str | None = None  # None: nvidia-smi; "" none; "0,1" these
    keep_workspaces: bool = False
    cache_max_bytes: int | None = None  # local cache of a remote (s3://) store; None: no bound
    # A scheduler started on demand (`cairn run --detach`) ends after this many idle seconds.
    scheduler_idle_exit: float = 30.0
    # Preemption and `cairn stop`: seconds between SIGTERM to the step and SIGKILL.
    stop_grace_seconds: float = 10.0
    # Named machine types, ``[environments.NAME]`` tables of the user's and the project's
    # config (the project's win, key by key); see cairn.orchestration.environments.
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_environment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @classmethod
    def load(cls, project_root: Path | str | None = None, **overrides: Any) -> Settings:
        """Build settings for the project at ``project_root`` (default: found from cwd)."""
        root = Path(project_root) if project_root else find_project_root(Path.cwd())
        root = root.resolve()
        values: dict[str, Any] = {}
        environments: dict[str, dict[str, Any]] = {}
        user_cfg = Path(os.environ.get("CAIRN_USER_CONFIG", "~/.config/cairn/config.toml"))
        data_dir = Path(
            overrides.get("data_dir") or os.environ.get("CAIRN_DATA_DIR") or root / DATA_DIR_NAME
        )
        for path in (user_cfg.expanduser(), data_dir / "config.toml"):
            data = _read_toml(path)
            for name, table in (data.pop("environments", None) or {}).items():
                if not isinstance(table, dict):
                    raise ConfigError(f"{path}: environments.{name} must be a table",
                                      f"write it as [environments.{name}] with keys below it")
                merged = environments.setdefault(str(name), {})
                merged.update(table)
                merged["_source"] = str(path)
            values.update(data)
        values["environments"] = environments
        for f in fields(cls):
            env = os.environ.get(f"CAIRN_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = data_dir
        values["project_root"] = root
        values.setdefault("database_url", f"sqlite:///{data_dir / 'cairn.db'}")
        values.setdefault("store_url", str(data_dir / "store"))
        values.setdefault("project_name", root.name)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"unknown setting(s): {', '.join(sorted(unknown))}",
                f"known settings are: {', '.join(sorted(known - {'extra'}))}",
            )
        return cls(**_coerce(values))

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding a project file; ``start`` if none."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / name).is_file() for name in PROJECT_FILES):
            return folder
    return start


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import tomllib

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", "fix the TOML syntax of that file") from exc
    return {k.replace("-", "_"): v for k, v in data.items()}


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    try:
        for key in ("local_cpus", "scheduler_idle_exit", "stop_grace_seconds"):
            if out.get(key) not in (None, ""):
                out[key] = float(out[key])
        if out.get("cache_max_bytes") not in (None, ""):
            out["cache_max_bytes"] = _bytes(out["cache_max_bytes"])
        if out.get("local_memory_mb") not in (None, ""):
            out["local_memory_mb"] = int(out["local_memory_mb"])
        if out.get("local_gpus") is not None:
            out["local_gpus"] = str(out["local_gpus"])
        if isinstance(out.get("keep_workspaces"), str):
            out["keep_workspaces"] = out["keep_workspaces"].lower() in ("1", "true", "yes")
    except ValueError as exc:
        raise ConfigError(f"bad setting value: {exc}", "check CAIRN_* variables") from exc
    out["data_dir"] = Path(out["data_dir"])
    return out


def _bytes(value: object) -> int:
    """``10GB``, ``500M``, ``1048576`` → bytes."""
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))
