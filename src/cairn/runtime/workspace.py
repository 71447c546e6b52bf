"""The workspace of one execution and the contract its process sees.

::

    <work>/<execution-id>/
        repository/   the code snapshot (working directory)
        inputs/<name>/...   input files, linked read-only from the store
        outputs/      everything written here becomes a datum
        config/       parameters.json, inputs.json, execution.json (+ .yaml twins)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.entities import Execution, InputFile


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def repository(self) -> Path:
        return self.root / "repository"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @classmethod
    def create(cls, base: Path, execution_id: str) -> Workspace:
        ws = cls(base / execution_id)
        if ws.root.exists():
            shutil.rmtree(ws.root)
        for folder in (ws.repository, ws.inputs, ws.outputs, ws.config):
            folder.mkdir(parents=True)
        return ws

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def write_config(
    ws: Workspace,
    execution: Execution,
    *,
    project_name: str,
    inputs: Sequence[InputFile],
) -> None:
    """Write the config files a step (or valohai-utils) reads."""
    _write(ws.config / "parameters.json", execution.parameters)
    _write(ws.config / "inputs.json", inputs_config(ws, inputs))
    _write(ws.config / "execution.json", execution_config(execution, project_name))


def inputs_config(ws: Workspace, inputs: Sequence[InputFile]) -> dict[str, Any]:
    """``inputs.json`` in Valohai's format: per input, its files with path, size, digest."""
    config: dict[str, Any] = {}
    for f in inputs:
        entry = config.setdefault(f.input_name, {"input_id": None, "files": []})
        entry["files"].append({
            "name": f.name,
            "path": str(ws.inputs / f.input_name / f.name),
            "size": f.size,
            "uri": f.uri,
            "digest": f.digest,
            "checksums": {"blake3": f.digest},
            "datum_id": f.datum_id,
            "metadata": [],
        })
    return config


def execution_config(execution: Execution, project_name: str) -> dict[str, Any]:
    """``execution.json``: cairn's keys plus the ``valohai.*`` ones valohai-utils reads."""
    created = execution.created_at.isoformat()
    return {
        "cairn.execution-id": execution.id,
        "cairn.execution-counter": execution.counter,
        "cairn.execution-step": execution.step,
        "cairn.project-name": project_name,
        "cairn.code-tree": execution.code.tree_digest if execution.code else None,
        "valohai.execution-id": execution.id,
        "valohai.execution-counter": execution.counter,
        "valohai.execution-step": execution.step,
        "valohai.execution-title": execution.title,
        "valohai.execution-tags": list(execution.tags),
        "valohai.execution-ctime": created,
        "valohai.execution-image": execution.step_config.get("image"),
        "valohai.commit-identifier": execution.code.git_commit if execution.code else None,
        "valohai.project-id": execution.project_id,
        "valohai.project-name": project_name,
    }


def step_environment(
    ws: Workspace,
    execution: Execution,
    *,
    base: Mapping[str, str],
    variables: Mapping[str, str],
    gpu_ids: Sequence[int],
) -> dict[str, str]:
    """Environment variables of the step's process: inherited, the step's, the contract."""
    env = dict(base)
    # `python` in a step means the interpreter cairn runs on: the environment it records.
    bin_dir = os.path.dirname(sys.executable)
    path = env.get("PATH", os.defpath)
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = bin_dir + os.pathsep + path
    env.update(variables)
    contract = {
        "CAIRN_EXECUTION_ID": execution.id,
        "CAIRN_EXECUTION_COUNTER": str(execution.counter),
        "CAIRN_STEP": execution.step,
        "CAIRN_INPUTS_DIR": str(ws.inputs),
        "CAIRN_OUTPUTS_DIR": str(ws.outputs),
        "CAIRN_CONFIG_DIR": str(ws.config),
        "CAIRN_REPOSITORY_DIR": str(ws.repository),
        "VH_INPUTS_DIR": str(ws.inputs),
        "VH_OUTPUTS_DIR": str(ws.outputs),
        "VH_CONFIG_DIR": str(ws.config),
        "VH_REPOSITORY_DIR": str(ws.repository),
        "VH_JOB_ID": f"exec-{execution.id}",
        "VH_EXECUTION_ID": execution.id,
        "VH_PROJECT_ID": execution.project_id,
        "PYTHONUNBUFFERED": "1",
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids),
    }
    env.update(contract)
    return env


def _write(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    try:
        import yaml  # the .yaml twins Valohai also writes; optional

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: 5× faster
        path.with_suffix(".yaml").write_text(
            yaml.dump(json.loads(json.dumps(value, default=str)), Dumper=dumper))
    except ImportError:  # pragma: no cover
        pass
    os.chmod(path, 0o444)
