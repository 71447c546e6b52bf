"""The digits example through cairn: datums chain the steps, and a re-run reproduces them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cairn.client import Client
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "digits"
    shutil.copytree(REPO / "examples" / "digits", root,
                    ignore=shutil.ignore_patterns(".cairn", "__pycache__"))
    monkeypatch.chdir(root)
    return root


def test_prepare_train_evaluate_and_an_exact_rerun(digits: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "prepare", "-q")[0] == 0
    with Client(digits) as client:
        images = [d.uri for d in client.execution(1).outputs if d.name.startswith("digits/")]
    assert len(images) == 1798  # 1797 PNGs and labels.csv
    image_args = [a for uri in images for a in ("--input", f"images={uri}")]

    code, out, err = cli("run", "train", "--epochs=2", "-q", *image_args)
    assert code == 0, err
    with Client(digits) as client:
        train = client.execution(2)
        assert len(train.metric("val_accuracy")) == 2
        assert train.metrics["val_accuracy"] > 0.8
        outputs = {d.name: d for d in train.outputs}
        assert {"model.pt", "model.onnx"} <= set(outputs)
        assert "candidate" in outputs["model.pt"].tags
        model = outputs["model.pt"].uri

    code, out, err = cli("run", "evaluate", "--input", f"model={model}", *image_args)
    assert code == 0, err
    with Client(digits) as client:
        assert client.execution(3).metrics["test_accuracy"] > 0.8

    code, _, err = cli("rerun", "2", "-q")
    assert code == 0, err
    with Client(digits) as client:
        first, again = client.execution(2), client.execution(4)
        assert again.rerun_of == first.id
        assert ({d.name: d.digest for d in again.outputs}
                == {d.name: d.digest for d in first.outputs})
        assert first.metric("loss") == again.metric("loss")
