"""A script written for Valohai with the `valohai-utils` package runs unchanged."""

from __future__ import annotations

from pathlib import Path

from cairn.client import Client

VALOHAI_YAML = """\
- step:
    name: vh-train
    image: python:3.11
    command: python train.py {parameters}
    parameters:
      - name: epochs
        type: integer
        default: 3
      - name: learning_rate
        type: float
        default: 0.1
    inputs:
      - name: dataset
"""

TRAIN = """\
import valohai

valohai.prepare(
    step="vh-train",
    default_parameters={"epochs": 1, "learning_rate": 0.5},
    default_inputs={"dataset": "https://example.invalid/not-used.csv"},
)
epochs = valohai.parameters("epochs").value
lr = valohai.parameters("learning_rate").value
path = valohai.inputs("dataset").path()
rows = open(path).read().splitlines()
print(f"epochs={epochs} lr={lr} rows={len(rows)} from {path}")
for epoch in range(epochs):
    with valohai.logger() as logger:
        logger.log("epoch", epoch)
        logger.log("loss", 1.0 / (epoch + 1))
out = valohai.outputs().path("model.txt")
with open(out, "w") as fh:
    fh.write(f"trained for {epochs} epochs on {len(rows)} rows\\n")
print("wrote", out)
"""


def test_valohai_utils_script_runs_unchanged(tmp_path: Path, cli, monkeypatch) -> None:  # noqa: ANN001
    root = tmp_path / "vh"
    root.mkdir()
    (root / "valohai.yaml").write_text(VALOHAI_YAML)
    (root / "train.py").write_text(TRAIN)
    data = tmp_path / "data.csv"
    data.write_text("a\nb\nc\n")
    monkeypatch.chdir(root)
    code, out, err = cli("run", "vh-train", "--epochs=4", "--input", f"dataset={data}")
    assert code == 0, out + err
    assert "epochs=4 lr=0.1 rows=3" in out
    with Client(root) as client:
        run = client.execution(1)
        assert run.metric("loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
        (model,) = run.outputs
        assert model.name == "model.txt"
        assert client.read_bytes(model) == b"trained for 4 epochs on 3 rows\n"
