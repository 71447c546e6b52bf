"""Every user error names what is wrong, where, and what to do, and stores nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cairn.client import Client


def _no_executions(project: Path) -> bool:
    db = project / ".cairn" / "cairn.db"
    if not db.exists():
        return True
    with Client(project) as client:
        return client.executions() == []


def test_unknown_step(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "helo")
    assert code == 4
    assert "unknown step 'helo'" in err and "hello" in err
    assert _no_executions(project)


def test_unknown_parameter_suggests_the_close_one(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "hello", "--cont=3")
    assert code == 2
    assert "--cont" in err and "--count" in err
    assert _no_executions(project)


@pytest.mark.parametrize("args,needles", [
    (["--count=abc"], ["count", "integer", "abc"]),
    (["--count=1000"], ["count", "100"]),
    (["--rate=fast"], ["rate", "number", "fast"]),
    (["--mode=medium"], ["mode", "fast", "slow"]),
])
def test_bad_parameter_values(project: Path, cli, args: list[str], needles: list[str]) -> None:  # noqa: ANN001
    code, _, err = cli("run", "hello", *args)
    assert code == 2, err
    for needle in needles:
        assert needle in err
    assert _no_executions(project)


def test_missing_required_input(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "needs-input")
    assert code == 2
    assert "needs input 'data'" in err and "--input data=" in err
    assert _no_executions(project)


def test_input_path_that_does_not_exist(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "needs-input", "--input", "data=nowhere/file.csv")
    assert code == 2
    assert "no such file or folder" in err and "nowhere/file.csv" in err
    assert _no_executions(project)


def test_input_url_that_does_not_exist(project: Path, cli, http_server: str) -> None:  # noqa: ANN001
    code, _, err = cli("run", "needs-input", "--input", f"data={http_server}/missing.csv")
    assert code == 2
    assert "HTTP 404" in err and "missing.csv" in err
    assert _no_executions(project)


def test_unknown_input_name(project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "f").write_text("x")
    code, _, err = cli("run", "needs-input", "--input", f"dta={tmp_path / 'f'}")
    assert code == 2
    assert "no input named 'dta'" in err and "did you mean 'data'" in err


def test_invalid_yaml_is_located(project: Path, cli) -> None:  # noqa: ANN001
    (project / "cairn.yaml").write_text("- step:\n    name: x\n   image: [oops\n")
    code, _, err = cli("run", "x")
    assert code == 3
    assert "cairn.yaml:3:" in err


def test_project_file_errors_print_as_a_compiler_does(project: Path, cli) -> None:  # noqa: ANN001
    (project / "cairn.yaml").write_text("- step:\n    name: x\n    command: 'true'\n")
    code, _, err = cli("run", "x")
    assert code == 3
    first, hint = err.splitlines()[:2]
    assert first == (f"{project / 'cairn.yaml'}:2:5: error: step 'x' is missing the "
                     "required key 'image'")
    assert hint.startswith("  hint: add `image: python:3.11`")


def test_command_not_found(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "missing-command")
    assert code == 127
    assert "command was not found" in err and "definitely-not-a-command-xyz" in err
    with Client(project) as client:
        assert client.execution(1).status.value == "error"


def test_outputs_escaping_the_outputs_dir_are_refused(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "leak")
    assert code == 1
    assert "outside the outputs directory" in err
    with Client(project) as client:
        ex = client.execution(1)
        assert ex.status.value == "error" and ex.outputs == []


def test_store_folder_not_writable(project: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    blocker = project / "blocker"
    blocker.write_text("a file where a folder should be")
    monkeypatch.setenv("CAIRN_DATA_DIR", str(blocker / "data"))
    code, _, err = cli("run", "hello")
    assert code == 5
    assert "cannot write" in err and "CAIRN_DATA_DIR" in err


def test_database_from_a_newer_cairn(project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "hello", "-q")[0] == 0
    with sqlite3.connect(project / ".cairn" / "cairn.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    code, _, err = cli("ls")
    assert code == 5
    assert "newer version of cairn" in err
    assert (project / ".cairn" / "cairn.db").stat().st_size > 0  # nothing was touched


def test_database_url_unreachable_or_refused(
    project: Path, cli, monkeypatch: pytest.MonkeyPatch, postgres_url: str  # noqa: ANN001
) -> None:
    """A real PostgreSQL server: a port nothing listens on, an unknown user, a missing
    database. Each says what is wrong and what to fix; no password is ever printed."""
    from sqlalchemy.engine import make_url

    from cairn.testing.raycluster import free_port

    server = make_url(postgres_url)
    cases = [
        (server.set(port=free_port(), password="s3cret"), "cannot reach the database server",
         "host and port in database_url"),
        (server.set(username="nobody-here", password="s3cret"), "refused the login",
         "user name and password in database_url"),
        (server.set(database="no_such_db"), "no such database", "createdb"),
    ]
    for url, what, hint in cases:
        monkeypatch.setenv("CAIRN_DATABASE_URL", url.render_as_string(hide_password=False))
        code, _, err = cli("ls")
        assert code == 5, err
        assert what in err and hint in err, err
        assert "s3cret" not in err


def test_missing_project_file(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", "x")
    assert code == 3
    assert "no cairn.yaml or valohai.yaml" in err and "cairn init" in err


def test_unknown_execution(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("show", "42")
    assert code == 4
