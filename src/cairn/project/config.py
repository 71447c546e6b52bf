"""The parsed project file: everything it declares, by kind and name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cairn.errors import NotFoundError, Problem
from cairn.project.blueprints import Deployment, Endpoint, Pipeline, Task
from cairn.project.step import Step

T = TypeVar("T")


@dataclass
class ProjectConfig:
    """Steps, pipelines, tasks, endpoints and deployments of one project file.

    ``warnings`` holds the warning-severity problems found while parsing (errors make
    parsing fail instead).
    """

    path: Path | None = None
    steps: dict[str, Step] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def filename(self) -> str:
        """The file name messages use (``cairn.yaml`` when parsed from text without one)."""
        return self.path.name if self.path else "cairn.yaml"

    def get_step(self, name: str) -> Step:
        """The step called ``name``.

        Matches exactly first, then ignoring case, then as an unambiguous case-insensitive
        prefix (as ``vh exec run`` does). Raises :class:`~cairn.errors.NotFoundError`
        with the known steps and a did-you-mean otherwise.
        """
        return self._get(self.steps, name, "step")

    def get_pipeline(self, name: str) -> Pipeline:
        """The pipeline called ``name`` (matched like :meth:`get_step`)."""
        return self._get(self.pipelines, name, "pipeline")

    def get_task(self, name: str) -> Task:
        """The task called ``name`` (matched like :meth:`get_step`)."""
        return self._get(self.tasks, name, "task")

    def get_endpoint(self, name: str) -> Endpoint:
        """The endpoint called ``name`` (matched like :meth:`get_step`)."""
        return self._get(self.endpoints, name, "endpoint")

    def _get(self, items: dict[str, T], name: str, kind: str) -> T:
        if name in items:
            return items[name]
        folded = [n for n in items if n.lower() == name.lower()]
        if len(folded) == 1:
            return items[folded[0]]
        prefixed = [n for n in items if n.lower().startswith(name.lower())]
        if len(prefixed) == 1 and name:
            return items[prefixed[0]]
        if len(prefixed) > 1 and name:
            raise NotFoundError(
                f"'{name}' matches several {kind}s in {self.filename}: {', '.join(prefixed)}",
                f"give more of the {kind} name",
            )
        from cairn.project._check import did_you_mean

        known = ", ".join(items) if items else "none"
        hint = f"known {kind}s: {known}"
        guess = did_you_mean(name, items)
        if guess:
            hint = f"{hint}; {guess}"
        raise NotFoundError(f"unknown {kind} '{name}' in {self.filename}", hint)
