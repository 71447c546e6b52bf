"""The result cache: an execution's fingerprint, and finding one to reuse.

The fingerprint is a BLAKE3 digest over everything that decides what an execution
computes: the exact code bytes (the snapshot's tree digest), the step definition as run,
the command, the resolved parameters, each input file's digest and place, the step's
environment variables and the package lock of the environment. Not in it: titles, tags,
resources, the time, the machine -- so a result computed on one machine is reused on any
other that shares the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from cairn.entities import Execution
    from cairn.store.base import MetadataStore, NewExecution

FINGERPRINT_VERSION = 1
"""Bump when what goes into a fingerprint changes: older fingerprints then never match."""


def fingerprint(new: NewExecution) -> str:
    """The result-cache key of an execution about to be created."""
    from blake3 import blake3

    env = new.environment or {}
    document = {
        "v": FINGERPRINT_VERSION,
        "code": new.code.tree_digest if new.code is not None else None,
        "step": new.step_config,
        "command": list(new.command),
        "parameters": new.parameters,
        "inputs": sorted((f.input_name, f.name, f.digest) for f in new.inputs),
        "variables": env.get("step_variables", {}),
        "packages": env.get("packages_digest"),
    }
    data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return blake3(data).hexdigest()


def find_reusable(store: MetadataStore, project_id: str, key: str) -> Execution | None:
    """A completed execution with fingerprint ``key`` whose outputs can stand in, or None."""
    return store.find_reusable(project_id, key)
