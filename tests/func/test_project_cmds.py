"""`cairn init` and `cairn lint` on real files, including the public valohai.yaml corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED

CORPUS = SHARED / "corpus" / "valohai-yaml"


def test_init_writes_a_starter_that_lints_clean_and_runs(tmp_path: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("init")
    assert code == 0 and "wrote cairn.yaml" in out
    text = (tmp_path / "cairn.yaml").read_text()
    assert text.count("#") > 5  # commented
    code, out, err = cli("lint")
    assert code == 0, out
    assert "0 error(s)" in err
    code, _, err = cli("init")
    assert code == 1 and "already exists" in err


@pytest.mark.parametrize("path", sorted((CORPUS / "valid").glob("*.yaml")), ids=lambda p: p.name)
def test_lint_accepts_every_valid_corpus_file(path: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("lint", str(path))
    assert code == 0, out
    assert " error" not in out


@pytest.mark.parametrize("path", sorted((CORPUS / "invalid").glob("*.yaml")), ids=lambda p: p.name)
def test_lint_rejects_every_invalid_corpus_file_with_a_location(path: Path, cli) -> None:  # noqa: ANN001
    code, out, _ = cli("lint", str(path))
    assert code == 1
    first = next(line for line in out.splitlines() if ": error: " in line)
    location = first.split(": error: ")[0]
    file_part, line, column = location.rsplit(":", 2)
    assert file_part == str(path) and int(line) >= 1 and int(column) >= 1
