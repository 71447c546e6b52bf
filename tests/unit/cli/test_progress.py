"""The progress bar: redrawn in place on a terminal, one summary line at the end."""

from __future__ import annotations

import io

from cairn.cli.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_finished_bar_ends_with_its_summary_line_and_nothing_after() -> None:
    term = Terminal()
    with ProgressBar("adding imgs", stream=term) as bar:
        bar(10, 20, 100, 200)
        bar.close("dataset://imgs/v1: 20 files")
    out = term.getvalue()
    assert out.startswith("\radding imgs")
    assert "10/20 files" in out and "50%" in out
    last = out.split("\r")[-1]
    assert last.rstrip().endswith("dataset://imgs/v1: 20 files")
    assert last.endswith("\n") and not last.endswith("\n\n")


def test_a_bar_cut_short_still_ends_its_line() -> None:
    term = Terminal()
    try:
        with ProgressBar("adding imgs", stream=term) as bar:
            bar(10, 20, 100, 200)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert term.getvalue().endswith("\n")


def test_not_a_terminal_gets_only_the_summary() -> None:
    stream = io.StringIO()
    with ProgressBar("adding imgs", stream=stream) as bar:
        bar(10, 20, 100, 200)
        bar.close("done")
    assert stream.getvalue() == "done\n"
