from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own cairn settings."""
    for key in list(os.environ):
        if key.startswith("CAIRN_") and key != "CAIRN_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("CAIRN_USER_CONFIG", str(tmp_path / "no-user-config.toml"))


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from cairn.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main(list(args))
        out, err = capfd.readouterr()
        return code, out, err

    return run
