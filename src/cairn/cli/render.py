"""Terminal rendering: tables, durations, values and status colours (no heavy imports)."""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from cairn.units import format_size

if TYPE_CHECKING:
    from cairn.errors import Problem

STATUS_COLORS = {
    "created": "white", "queued": "cyan", "starting": "cyan", "running": "blue",
    "complete": "green", "error": "red", "stopped": "yellow", "crashed": "magenta",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
          right: Sequence[int] = ()) -> str:
    """A plain aligned table; cells may hold ANSI styles. Wide tables are clipped per cell."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(visible_len(row[i]) for row in cells) for i in range(len(headers))]
    width = shutil.get_terminal_size((160, 24)).columns
    while sum(widths) + 2 * (len(widths) - 1) > width and max(widths) > 12:
        widths[widths.index(max(widths))] -= 1
    out = []
    for n, row in enumerate(cells):
        parts = []
        for i, cell in enumerate(row):
            if visible_len(cell) > widths[i]:
                cell = _ANSI.sub("", cell)[: widths[i] - 1] + "…"
            pad = " " * (widths[i] - visible_len(cell))
            parts.append(pad + cell if i in right else cell + pad)
        line = "  ".join(parts).rstrip()
        out.append(click.style(line, bold=True) if n == 0 else line)
    return "\n".join(out)


def problem(p: Problem) -> str:
    """A project-file finding as a compiler prints one: ``file:line:col: error: message``,
    its hint on the next line."""
    color = "red" if p.severity == "error" else "yellow"
    text = (f"{p.file}:{p.line}:{p.column}: " + click.style(p.severity, fg=color, bold=True)
            + f": {p.message}")
    if p.hint:
        text += f"\n  {click.style('hint:', fg='cyan')} {p.hint}"
    return text


def emit(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str,
         right: Sequence[int] = ()) -> None:
    """Print rows as an aligned table, CSV or JSON (a list of objects)."""
    if fmt == "csv":
        click.echo(to_csv(headers, rows), nl=False)
    elif fmt == "json":
        import json

        click.echo(json.dumps([dict(zip(headers, r)) for r in rows], indent=2, default=str))
    else:
        click.echo(table(headers, rows, right=right))


def to_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(["" if c is None else c for c in r] for r in rows)
    return buf.getvalue()


def status(value: str) -> str:
    return click.style(value, fg=STATUS_COLORS.get(value, "white"))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(timezone.utc) - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:.5g}"
    if isinstance(v, (list, tuple)):
        return ",".join(value(x) for x in v)
    return "" if v is None else str(v)


size = format_size


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """A one-line plot of a series (resampled to ``width`` points)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width - 1)] + [values[-1]]
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        return _SPARKS[3] * len(values)
    return "".join(_SPARKS[min(7, int((v - low) / span * 7.999))] for v in values)
