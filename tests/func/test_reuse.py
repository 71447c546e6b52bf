"""The result cache through `cairn run --reuse`: what invalidates a reuse, what does not."""

from __future__ import annotations

from pathlib import Path

from cairn.client import Client


def _count(project: Path) -> int:
    with Client(project) as client:
        return len(client.executions())


def test_reuse_matches_code_parameters_and_inputs(project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data.txt"
    data.write_text("one")
    assert cli("run", "copy", "-q", "--input", f"data={data}")[0] == 0
    code, out, err = cli("run", "copy", "-q", "--reuse", "--input", f"data={data}")
    assert code == 0, err
    assert "#1 copy" in err and "reused" in err
    assert _count(project) == 1  # nothing new was run

    data.write_text("two")  # one input byte changed: runs again
    assert cli("run", "copy", "-q", "--reuse", "--input", f"data={data}")[0] == 0
    assert _count(project) == 2
    assert "reused" in cli("run", "copy", "-q", "--reuse", "--input", f"data={data}")[2]
    assert _count(project) == 2

    (project / "hello.py").write_text(
        (project / "hello.py").read_text() + "\n# a change the copy step never reads\n")
    assert "reused" in cli("run", "copy", "-q", "--reuse", "--input", f"data={data}")[2]
    assert _count(project) == 2
    with Client(project) as client:
        reads = client.execution(2).code_reads
        assert reads is not None and "copy_inputs.py" in reads and "hello.py" not in reads

    (project / "copy_inputs.py").write_text(
        (project / "copy_inputs.py").read_text() + "\n# one more line\n")  # code changed
    assert cli("run", "copy", "-q", "--reuse", "--input", f"data={data}")[0] == 0
    assert _count(project) == 3

    # --no-reuse (the default) always runs
    assert cli("run", "copy", "-q", "--no-reuse", "--input", f"data={data}")[0] == 0
    assert _count(project) == 4


def test_reuse_follows_parameters_and_skips_failures(project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "hello", "-q", "--count=2")[0] == 0
    assert cli("run", "hello", "-q", "--reuse", "--count=3")[0] == 0  # a new value
    assert _count(project) == 2
    assert "reused" in cli("run", "hello", "-q", "--reuse", "--count=2")[2]
    assert "reused" in cli("run", "hello", "-q", "--reuse", "--count=3")[2]
    assert cli("run", "hello", "-q", "--reuse", "--count=2", "--title", "x", "--tag", "t")[0] == 0
    assert _count(project) == 2  # titles and tags are not part of the fingerprint
    assert cli("run", "fail", "-q")[0] == 3
    assert cli("run", "fail", "-q", "--reuse")[0] == 3  # a failed run is never reused
    with Client(project) as client:
        runs = client.executions()
        assert len(runs) == 4
        by_counter = {r.counter: r for r in runs}
        assert by_counter[1].fingerprint and by_counter[1].fingerprint != by_counter[2].fingerprint
