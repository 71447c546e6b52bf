"""The one exception tree of cairn.

Every error a user can cause or meet derives from :class:`CairnError` and carries a
message that says what is wrong and a ``hint`` that says what to do next. The CLI maps
these classes to exit codes in one place (``cairn.cli.main``); a server maps them to HTTP
statuses the same way.

::

    CairnError
    ├── ConfigError                 settings or environment that cannot work
    ├── ProjectError                cairn.yaml / valohai.yaml problems (file:line:col each)
    │   └── ProjectNotFoundError    no project file here or above
    ├── NotFoundError               unknown step, execution, datum, ...
    ├── ConflictError               something that must be unique already exists
    ├── ParameterError              unknown, mistyped, out-of-range parameter value
    ├── InputError                  missing required input, unreadable path or URL
    ├── OutputError                 an output that escapes the outputs directory
    ├── ExecutionError              an execution that cannot be started or changed
    └── StoreError                  metadata or blob storage trouble
        ├── StoreNotWritableError   the store folder cannot be written
        ├── SchemaError             database schema older or newer than this cairn
        └── CorruptBlobError        a blob whose bytes do not match its digest
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CairnError(Exception):
    """Base of every cairn error: ``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(CairnError):
    """Settings or environment that cannot work."""


@dataclass(frozen=True)
class Problem:
    """One finding in a project file, located at ``file:line:column`` (1-based)."""

    file: str
    line: int
    column: int
    message: str
    hint: str | None = None
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ProjectError(CairnError):
    """A project file with errors; ``problems`` lists each one with its location."""

    def __init__(self, problems: Sequence[Problem], message: str | None = None) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        if message is None:
            message = "\n".join(str(p) for p in errors) or "invalid project file"
        super().__init__(message)


class ProjectNotFoundError(ProjectError):
    """No cairn.yaml or valohai.yaml in this folder or any folder above it."""

    def __init__(self, start: str) -> None:
        CairnError.__init__(
            self,
            f"no cairn.yaml or valohai.yaml in {start} or any folder above it",
            "run `cairn init` to write a starter cairn.yaml, or cd into your project",
        )
        self.problems = []


class NotFoundError(CairnError):
    """An unknown step, execution, datum or other named thing."""


class ConflictError(CairnError):
    """Something that must be unique already exists (a dataset version, ...)."""


class ParameterError(CairnError):
    """A parameter that is unknown, of the wrong type, or out of range."""


class InputError(CairnError):
    """A missing required input or an input path/URL that cannot be read."""


class OutputError(CairnError):
    """An output that escapes the outputs directory or cannot be stored."""


class ExecutionError(CairnError):
    """An execution that cannot be started, stopped or changed as asked."""


class StoreError(CairnError):
    """Metadata or blob storage trouble."""


class StoreNotWritableError(StoreError):
    """The store folder or database cannot be written."""


class SchemaError(StoreError):
    """The database schema is older or newer than this version of cairn."""


class CorruptBlobError(StoreError):
    """A blob whose bytes no longer match its digest."""
