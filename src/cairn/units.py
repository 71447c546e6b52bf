"""Human-readable quantities, shared by the core's log lines and the CLI."""

from __future__ import annotations


def format_size(n: int | None) -> str:
    """``1536`` → ``"1.5 KB"``; bytes below 1 KB as whole numbers."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "file")`` → ``"1 file"``, ``count(20000, "file")`` → ``"20,000 files"``."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
