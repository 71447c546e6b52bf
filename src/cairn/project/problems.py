"""Showing problems to people."""

from __future__ import annotations

from collections.abc import Iterable

from cairn.errors import Problem


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in file order (file, line, column), errors before warnings at one place."""
    return sorted(problems, key=lambda p: (p.file, p.line, p.column, p.severity != "error"))


def format_problems(problems: Iterable[Problem]) -> str:
    """One ``file:line:col: severity: message`` block per problem and a count line."""
    ordered = sort_problems(problems)
    if not ordered:
        return "no problems found"
    errors = sum(1 for p in ordered if p.severity == "error")
    warnings = len(ordered) - errors
    parts = [str(p) for p in ordered]
    counts = []
    if errors:
        counts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        counts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    parts.append(", ".join(counts))
    return "\n".join(parts)
