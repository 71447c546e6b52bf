"""Inputs from paths, folders, URLs and datums; exact re-runs."""

from __future__ import annotations

from pathlib import Path

from cairn.client import Client


def test_inputs_are_recorded_with_digests_and_linked_read_only(
    project: Path, cli, tmp_path: Path, http_root: Path, http_server: str  # noqa: ANN001
) -> None:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "one.txt").write_text("one")
    (data / "two.txt").write_text("two")
    (http_root / "remote.csv").write_text("x,y\n1,2\n")
    code, out, err = cli("run", "copy", "--input", f"data={data}",
                         "--input", f"data={http_server}/remote.csv")
    assert code == 0, err
    assert "a/one.txt writable=False" in out and "remote.csv writable=False" in out
    with Client(project) as client:
        run = client.execution(1)
        files = {f.name: f for f in run.inputs}
        assert set(files) == {"a/one.txt", "two.txt", "remote.csv"}
        assert files["remote.csv"].uri == f"{http_server}/remote.csv"
        assert files["remote.csv"].size == 8
        assert {d.name for d in run.outputs} == {"copy/data/a/one.txt", "copy/data/two.txt",
                                                 "copy/data/remote.csv"}


def test_each_input_is_an_option_of_its_own_as_in_vh(
    project: Path, cli, tmp_path: Path  # noqa: ANN001
) -> None:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("1")
    two.write_text("2")
    code, out, _ = cli("run", "copy", "--help")
    assert "--data URI" in out
    code, out, err = cli("run", "copy", "--data", str(one), "--input", f"data={two}")
    assert code == 0, err
    assert "one.txt writable=False" in out and "two.txt writable=False" in out
    with Client(project) as client:
        assert {f.name for f in client.execution(1).inputs} == {"one.txt", "two.txt"}


def test_outputs_feed_later_runs_by_datum_uri(project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "hello", "--count=7", "-q")[0] == 0
    with Client(project) as client:
        result = next(d for d in client.execution(1).outputs if d.name == "result.txt")
    code, out, err = cli("run", "copy", "--input", f"data={result.uri}")
    assert code == 0, err
    with Client(project) as client:
        run = client.execution(2)
        assert run.inputs[0].datum_id == result.id
        assert run.inputs[0].digest == result.digest
        copied = next(d for d in run.outputs if d.name == "copy/data/result.txt")
        assert copied.digest == result.digest  # same bytes, same digest


def test_unknown_datum_is_an_input_error(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "copy", "--input", "data=datum://0000dead")
    assert code == 2
    assert "input 'data'" in err


def test_rerun_uses_the_recorded_code_and_inputs_not_the_folder(
    project: Path, cli, tmp_path: Path  # noqa: ANN001
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("original")
    assert cli("run", "copy", "--input", f"data={src}", "-q")[0] == 0
    # Change both the code and the input in place: a re-run must not see either change.
    src.write_text("changed")
    (project / "copy_inputs.py").write_text("raise SystemExit('new code ran')\n")
    code, _, err = cli("rerun", "1")
    assert code == 0, err
    assert "re-running #1" in err
    with Client(project) as client:
        first, second = client.execution(1), client.execution(2)
        assert second.rerun_of == first.id
        assert second.code.tree_digest == first.code.tree_digest
        assert [f.digest for f in second.inputs] == [f.digest for f in first.inputs]
        assert second.parameters == first.parameters and second.command == first.command
        assert ({d.name: d.digest for d in second.outputs}
                == {d.name: d.digest for d in first.outputs})
        out = next(d for d in second.outputs if d.name == "copy/data/in.txt")
        assert client.read_bytes(out) == b"original"
    code, out, _ = cli("show", "2")
    assert "re-run of #1" in out


def test_git_snapshot_has_commit_dirty_flag_and_untracked_files(project: Path, cli) -> None:  # noqa: ANN001
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)

    git("init", "-q")
    (project / ".gitignore").write_text("ignored.txt\n.cairn/\n")
    (project / "ignored.txt").write_text("secret")
    git("add", "cairn.yaml", "hello.py", ".gitignore")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init")
    (project / "hello.py").write_text((project / "hello.py").read_text() + "\n# edited\n")
    assert cli("run", "hello", "-q")[0] == 0
    with Client(project) as client:
        run = client.execution(1)
        assert run.code.git_commit and len(run.code.git_commit) == 40
        assert run.code.git_dirty
        tree = {e.path: e for e in client.ctx.content.get_tree(run.code.tree_digest)}
        assert "sleeper.py" in tree  # untracked, not ignored
        assert "ignored.txt" not in tree
        edited = client.ctx.content.read_bytes(tree["hello.py"].digest)
        assert edited.endswith(b"# edited\n")  # the working-tree bytes, not the commit's
