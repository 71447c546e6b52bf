"""Rules for the names users give: datum aliases, datasets and dataset versions.

They appear in URIs (``datum://NAME``, ``dataset://NAME/VERSION/path``) and in folder
names, so they are kept to characters that need no quoting anywhere.
"""

from __future__ import annotations

import re
import uuid

from cairn.errors import ParameterError

MAX_NAME = 128
MAX_SOURCE = 32
RESERVED_VERSION = "latest"

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_VERSION_NUMBER = re.compile(r"v(\d+)")


def _problem(name: str) -> str | None:
    """What is wrong with ``name`` as a name, or ``None``."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is {len(name)} characters long (at most {MAX_NAME})"
    if "/" in name:
        return "it contains '/'"
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not _NAME.fullmatch(c)})
        return f"it contains {', '.join(repr(c) for c in bad)}"
    if name.startswith("."):
        return "it starts with '.'"
    if ".." in name:
        return "it contains '..'"
    return None


def check_alias_name(name: str) -> None:
    """Raise ``ParameterError`` unless ``name`` can be a datum alias."""
    problem = _problem(name)
    if problem is None and looks_like_uuid(name):
        problem = "it looks like a datum id"
    if problem is not None:
        raise ParameterError(
            f"invalid alias name {name!r}: {problem}",
            hint=f"use 1-{MAX_NAME} letters, digits, '.', '_' or '-' (not first '.'), "
            "e.g. best-model",
        )


def check_dataset_names(dataset: str, version: str) -> None:
    """Raise ``ParameterError`` unless ``dataset``/``version`` can name a new version."""
    problem = _problem(dataset)
    if problem is not None:
        raise ParameterError(
            f"invalid dataset name {dataset!r}: {problem}",
            hint=f"use 1-{MAX_NAME} letters, digits, '.', '_' or '-' (not first '.'), "
            "e.g. images",
        )
    problem = _problem(version)
    if problem is None and version == RESERVED_VERSION:
        problem = f"'{RESERVED_VERSION}' always means the newest version"
    if problem is not None:
        raise ParameterError(
            f"invalid version name {version!r} for dataset {dataset!r}: {problem}",
            hint=f"use 1-{MAX_NAME} letters, digits, '.', '_' or '-' (not first '.'), "
            "e.g. v3, or leave the version out to get the next vN",
        )


def check_source(source: str) -> None:
    """Raise ``ParameterError`` unless ``source`` can say where a dataset version came from."""
    if not source or len(source) > MAX_SOURCE:
        raise ParameterError(
            f"invalid dataset version source {source!r}: give 1-{MAX_SOURCE} characters",
            hint="use 'upload' or 'execution'",
        )


def looks_like_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def next_version(existing: list[str]) -> str:
    """``v`` + one more than the highest ``vN`` among ``existing`` (``v1`` if none)."""
    highest = 0
    for name in existing:
        match = _VERSION_NUMBER.fullmatch(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return f"v{highest + 1}"
