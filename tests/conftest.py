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
    # Schedulers that `cairn run --detach` starts end soon after the test's queue empties.
    monkeypatch.setenv("CAIRN_SCHEDULER_IDLE_EXIT", "3")


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


@pytest.fixture(scope="session")
def postgres_url():  # noqa: ANN201
    """A PostgreSQL database: CAIRN_TEST_POSTGRES_URL, else a throwaway local server.

    `make test` installs PostgreSQL where it can; without a server the test is skipped
    with the reason.
    """
    url = os.environ.get("CAIRN_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from cairn.testing.postgres import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here: install it (`make test` does, as root) "
                    "or set CAIRN_TEST_POSTGRES_URL")
    server = PostgresServer(bin_dir).start()
    try:
        yield server.url
    finally:
        server.stop()


# A real S3-protocol server (moto) on loopback, shared by the blob and data tests.
from cairn.testing.s3server import s3_bucket_url, s3_env, s3_server  # noqa: E402,F401
