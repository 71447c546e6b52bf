"""The Python SDK: `cairn.Client` reads what the CLI recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

import cairn


def test_client_lists_filters_sorts_and_reads(project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    for count in (2, 6, 4):
        assert cli("run", "hello", f"--count={count}", "-q")[0] == 0
    assert cli("run", "fail", "-q")[0] == 3
    client = cairn.Client(project)
    assert [r.counter for r in client.executions()] == [4, 3, 2, 1]
    assert [r.counter for r in client.executions(step="hello", sort="metric:accuracy")] == [2, 3, 1]
    assert [r.counter for r in client.executions(status="error")] == [4]
    best = client.executions(step="hello", sort="metric:accuracy", limit=1)[0]
    assert best.parameters["count"] == 6
    assert best.metrics["accuracy"] == pytest.approx(5 / 6)
    paths = best.download(tmp_path / "best")
    assert (tmp_path / "best" / "result.txt").read_text() == "count=6 mode=fast\n"
    assert len(paths) == 2
    client.close()


def test_sdk_is_safe_outside_an_execution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("CAIRN_EXECUTION_ID", "VH_JOB_ID", "CAIRN_CONFIG_DIR", "VH_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    params = cairn.Parameters()
    assert dict(params) == {} and params.get("epochs", 10) == 10
    assert cairn.log(step=1, loss=0.5) == {"step": 1, "loss": 0.5}
    assert capsys.readouterr().out == ""
    assert cairn.inputs("images").paths() == []
    assert cairn.outputs.path("m.onnx") == tmp_path / "outputs" / "m.onnx"
