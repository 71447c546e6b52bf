"""A progress bar for long work: files and bytes, rate and ETA, on stderr.

The core reports progress through a callback ``(files_done, files_total, bytes_done,
bytes_total)`` (totals may be None while unknown); :class:`ProgressBar` is that callback.
It redraws at most ten times a second and only on a terminal.
"""

from __future__ import annotations

import sys
import time

from cairn.units import count, format_size

_WIDTH = 24


class ProgressBar:
    def __init__(self, label: str, *, stream=None) -> None:  # noqa: ANN001
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_line = ""
        self.files = 0
        self.bytes = 0
        self._closed = False

    def __call__(self, files_done: int, files_total: int | None, bytes_done: int,
                 bytes_total: int | None) -> None:
        self.files, self.bytes = files_done, bytes_done
        now = time.monotonic()
        if not self.tty or now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self._draw(self._line(files_done, files_total, bytes_done, bytes_total, now))

    def _line(self, files_done: int, files_total: int | None, bytes_done: int,
              bytes_total: int | None, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = bytes_done / elapsed
        fraction = None
        if bytes_total:
            fraction = bytes_done / bytes_total
        elif files_total:
            fraction = files_done / files_total
        if fraction is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            filled = int(fraction * _WIDTH)
            bar = "█" * filled + "░" * (_WIDTH - filled) + f" {fraction * 100:3.0f}%"
            eta = (elapsed / fraction - elapsed) if fraction > 0 else None
        else:
            bar, eta = "", None
        files = f"{files_done:,}" + (f"/{files_total:,}" if files_total else "") + " files"
        size = format_size(bytes_done) + (f"/{format_size(bytes_total)}" if bytes_total else "")
        parts = [self.label, bar, files, size, f"{format_size(int(rate))}/s"]
        if eta is not None and fraction is not None and fraction < 1:
            parts.append(f"ETA {_fmt(eta)}")
        return "  ".join(p for p in parts if p)

    def _draw(self, line: str) -> None:
        pad = " " * max(0, len(self._last_line) - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_line = line

    def close(self, summary: str | None = None) -> None:
        """End the bar: one final line (the summary, or the totals)."""
        self._closed = True
        elapsed = time.monotonic() - self.started
        text = summary or (f"{self.label}  {count(self.files, 'file')}  "
                           f"{format_size(self.bytes)}  in {_fmt(elapsed)}")
        if self.tty:
            self._draw(text)
            self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tty and self._last_line and not self._closed:  # cut short: end its line
            self.stream.write("\n")


def _fmt(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
