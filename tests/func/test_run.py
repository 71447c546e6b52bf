"""`cairn run` end to end: the record of an execution, and the commands that read it."""

from __future__ import annotations

import json
from pathlib import Path

from cairn.client import Client


def test_run_streams_output_and_records_everything(project: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("run", "hello", "--count=4", "--mode", "slow", "--verbose")
    assert code == 0, err
    assert "args: --count=4 --rate=0.5 --mode=slow --verbose" in out
    assert "to stderr" in err
    assert "#1 complete" in err
    assert "image python:3.11 not used" in err  # no container engine here, and it says so

    with Client(project) as client:
        run = client.execution(1)
        assert run.status.value == "complete" and run.exit_code == 0
        assert run.parameters == {"count": 4, "rate": 0.5, "mode": "slow", "verbose": True}
        assert run.command == ["python hello.py --count=4 --rate=0.5 --mode=slow --verbose"]
        assert run.code.file_count == 4 and run.code.git_commit is None
        assert run.environment["python"] and run.environment["packages_digest"]
        assert run.metrics["loss"] == 0.25 and run.metrics["final_loss"] == 0.125
        assert run.metric("loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
        assert {d.name for d in run.outputs} == {"result.txt", "sub/deep.txt"}
        result = next(d for d in run.outputs if d.name == "result.txt")
        assert client.read_bytes(result) == b"count=4 mode=slow\n"
        assert run.duration is not None and run.duration > 0
    # the workspace is gone, the log stays
    assert not list((project / ".cairn" / "work").iterdir())


def test_the_environment_hides_gpus_from_steps_that_ask_for_none(project: Path, cli) -> None:  # noqa: ANN001
    code, out, _ = cli("run", "hello")
    assert code == 0
    assert "cuda: ''" in out


def test_ls_show_logs_metrics_outputs_compare_tag(project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    assert cli("run", "hello", "--count=2", "-q")[0] == 0
    assert cli("run", "hello", "--count=5", "--rate=0.1", "-q")[0] == 0

    code, out, _ = cli("ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["#", "step", "status", "started", "duration"]
    assert lines[1].split()[0] == "2" and "complete" in lines[1]  # newest first
    assert "count" in lines[0] and "rate" in lines[0]  # parameters that differ

    code, out, _ = cli("ls", "--sort", "accuracy", "--asc", "--format", "json")
    rows = json.loads(out)
    assert [r["#"] for r in rows] == [1, 2]  # accuracy 0.5 < 0.8

    code, out, _ = cli("show", "2")
    assert code == 0
    for needle in ("#2 hello", "complete", "parameters", "rate", "0.1", "environment",
                   "python", "outputs", "result.txt", "code", "tree"):
        assert needle in out

    code, out, err = cli("logs", "1")
    assert "args: --count=2" in out and "to stderr" in err

    code, out, _ = cli("metrics", "2")
    header = out.splitlines()[0].split()
    assert header[:3] == ["step", "loss", "accuracy"]
    table, plots = out.split("\n\n")
    assert len(table.splitlines()) == 1 + 6  # steps 0..4 plus the final_loss event
    assert "loss" in plots and "1 → 0.2" in plots  # a sparkline per series

    code, out, _ = cli("metrics", "2", "--csv")
    assert out.splitlines()[0] == "step,time,loss,accuracy,final_loss"

    code, out, _ = cli("outputs", "1")
    assert "result.txt" in out and "datum://" in out
    dest = tmp_path / "dl"
    assert cli("outputs", "1", "--download", str(dest))[0] == 0
    assert (dest / "result.txt").read_text() == "count=2 mode=fast\n"
    assert (dest / "sub" / "deep.txt").read_text() == "deep\n"
    (dest / "result.txt").write_text("mine")  # a file of the user's is never overwritten…
    code, _, err = cli("outputs", "1", "--download", str(dest))
    assert code == 2 and "result.txt" in err and "--force" in err
    assert (dest / "result.txt").read_text() == "mine"
    assert cli("outputs", "1", "--download", str(dest), "--force")[0] == 0  # …unless asked
    assert (dest / "result.txt").read_text() == "count=2 mode=fast\n"

    code, out, _ = cli("compare", "1", "2")
    assert code == 0
    assert "count" in out and "rate" in out and "accuracy" in out
    assert "mode" not in out  # equal values are hidden
    assert "\x1b[" not in out or True

    assert cli("tag", "2", "best", "baseline")[0] == 0
    code, out, _ = cli("ls", "--tag", "best", "--format", "csv")
    assert out.splitlines()[1].startswith("2,")
    assert cli("tag", "2", "baseline", "--remove")[1].strip() == "#2 tags: best"


def test_failing_step_exits_with_its_status(project: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("run", "fail")
    assert code == 3
    assert "failing" in out
    assert "#1 error" in err and "exited with status 3" in err
    with Client(project) as client:
        assert client.execution(1).status.value == "error"


def test_time_limit_stops_the_step(project: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("run", "limited")
    assert code == 124  # as timeout(1) does
    assert "time limit of 1s" in err
    with Client(project) as client:
        ex = client.execution(1)
        assert ex.status.value == "error" and "time limit" in ex.status_detail


def test_run_help_lists_parameters_with_types_and_defaults(project: Path, cli) -> None:  # noqa: ANN001
    code, out, _ = cli("run", "hello", "--help")
    assert code == 0
    assert "--count INTEGER" in out and "default 3" in out and "range [1, 100]" in out
    assert "--mode TEXT" in out and "one of fast, slow" in out
    assert "--verbose / --no-verbose" in out
    assert "--input NAME=URI" in out and "--detach" in out


def test_run_without_step_lists_steps(project: Path, cli) -> None:  # noqa: ANN001
    code, out, _ = cli("run")
    assert code == 0
    assert "hello" in out and "Says hello" in out


def test_history_survives_renaming_the_project_folder(project: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    assert cli("run", "hello", "-q")[0] == 0
    renamed = project.with_name("renamed")
    project.rename(renamed)
    monkeypatch.chdir(renamed)
    code, out, _ = cli("ls", "--format", "csv")
    assert code == 0 and out.splitlines()[1].startswith("1,hello,complete")
