"""The result cache: an execution's fingerprint, and finding one to reuse.

Two parts decide whether a completed execution can stand in for a new one:

- the *fingerprint*, a BLAKE3 digest over the step definition as run, the command, the
  resolved parameters, each input file's digest and place, the step's environment
  variables and the package lock of the environment. Not in it: titles, tags, resources,
  the time, the machine -- so a result computed on one machine is reused on any other that
  shares the store;
- the *code it ran*: a Python step records which files of its code snapshot it opened
  (imports included, see :mod:`cairn.runtime.codetrace`); those files must have the same
  bytes in the new snapshot. So editing ``train.py`` invalidates the training step and
  what consumes its outputs, not the data preparation next to it. A step that could not
  be traced (a command that is not ``python ...``) matches on the whole snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from cairn.entities import CodeSnapshot, Execution
    from cairn.store.base import MetadataStore, NewExecution

FINGERPRINT_VERSION = 2
"""Bump when what goes into a fingerprint changes: older fingerprints then never match."""


def fingerprint(new: NewExecution) -> str:
    """The result-cache key of an execution about to be created (code is matched apart)."""
    from blake3 import blake3

    env = new.environment or {}
    document = {
        "v": FINGERPRINT_VERSION,
        "step": new.step_config,
        "command": list(new.command),
        "parameters": new.parameters,
        "inputs": sorted((f.input_name, f.name, f.digest) for f in new.inputs),
        "variables": env.get("step_variables", {}),
        "packages": env.get("packages_digest"),
    }
    data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return blake3(data).hexdigest()


class CodeIndex:
    """Path → digest of one code snapshot, read once (shared by a pipeline's nodes)."""

    def __init__(self, content: object, code: CodeSnapshot | None) -> None:
        self._content = content
        self.code = code
        self._paths: dict[str, str] | None = None

    def paths(self) -> dict[str, str]:
        if self._paths is None:
            if self.code is None:
                self._paths = {}
            else:
                tree = self._content.iter_tree(self.code.tree_digest)  # type: ignore[attr-defined]
                self._paths = {e.path: e.digest for e in tree}
        return self._paths

    def same_code(self, candidate: Execution) -> bool:
        """Whether ``candidate`` ran the same code bytes as this snapshot holds."""
        if candidate.code is None or self.code is None:
            return candidate.code is None and self.code is None
        if candidate.code.tree_digest == self.code.tree_digest:
            return True
        if candidate.code_reads is None:
            return False  # untraced: only the very same snapshot will do
        paths = self.paths()
        return all(paths.get(path) == digest for path, digest in candidate.code_reads.items())


def find_reusable(
    store: MetadataStore, project_id: str, new: NewExecution, code: CodeIndex
) -> Execution | None:
    """The newest completed execution that can stand in for ``new``, or None."""
    for candidate in store.reuse_candidates(project_id, new.fingerprint or ""):
        if code.same_code(candidate):
            return candidate
    return None
