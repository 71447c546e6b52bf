"""The executor interface and registry."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cairn.errors import ConfigError

if TYPE_CHECKING:
    from cairn.entities import Datum, Execution
    from cairn.orchestration.context import Context
    from cairn.store.base import Allocation


class Reporter(Protocol):
    """How an executor tells the scheduler what happens; it never writes state itself."""

    def started(self, pid: int) -> None:
        """The step's process is running with this pid."""

    def should_stop(self) -> bool:
        """Whether a stop was requested (polled about twice a second)."""

    def line(self, stream: str, text: str) -> None:
        """A line of the step's output ("out" or "err"), for live display."""


@dataclass
class Outcome:
    """What happened: the process's exit and what was stored."""

    exit_code: int | None
    reason: str  # exited | time-limit | no-output-timeout | stopped | failed-to-start | crashed
    detail: str | None = None
    datums: list[Datum] = field(default_factory=list)
    refused_outputs: list[str] = field(default_factory=list)
    log_digest: str | None = None
    metric_points: int = 0
    code_reads: dict[str, str] | None = None  # snapshot files the step read (None: untraced)


class Executor(abc.ABC):
    """Runs one execution to its end on some machine."""

    name: str

    @abc.abstractmethod
    def execute(self, execution: Execution, allocation: Allocation, reporter: Reporter) -> Outcome:
        """Prepare the workspace, run the command, store outputs, logs and metrics.

        Returns when the process has ended (or was stopped). Raises only for failures of
        cairn itself (the scheduler records those as ``crashed``).
        """


EXECUTORS: dict[str, Callable[[Context], Executor]] = {}


def register_executor(name: str, factory: Callable[[Context], Executor]) -> None:
    EXECUTORS[name] = factory


_MODULES = {"local": "cairn.executors.local", "ray": "cairn.executors.ray_backend"}


def get_executor(name: str, ctx: Context) -> Executor:
    if name not in EXECUTORS and name in _MODULES:
        import importlib

        importlib.import_module(_MODULES[name])  # registers itself
    try:
        return EXECUTORS[name](ctx)
    except KeyError:
        raise ConfigError(f"unknown executor backend {name!r}",
                          f"use one of: {', '.join(sorted(EXECUTORS))}") from None
