"""The digits example's scripts, run as plain processes (no cairn involved).

Each script only sees the execution contract: CAIRN_INPUTS_DIR / CAIRN_OUTPUTS_DIR
and JSON metric lines on stdout.  Inputs are laid out the way cairn does with
`keep-directories: full` (inputs/images/digits/train/<label>/<index>.png).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("torch", "sklearn", "PIL", "onnx", "numpy"):
    pytest.importorskip(_module)

import numpy as np

pytestmark = pytest.mark.slow  # ~25 s: three prepares, two trainings, one evaluation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
N_DIGITS = 1797  # images in sklearn's bundled digits data set
EPOCHS = 2


class StepRun:
    def __init__(self, proc: subprocess.CompletedProcess, outputs: Path):
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.outputs = outputs
        self.metrics = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                value = json.loads(line)  # every JSON-looking line must parse
                assert isinstance(value, dict)
                self.metrics.append(value)


def _env(inputs: Path, outputs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "VH_"))}
    env.update(CAIRN_INPUTS_DIR=str(inputs), CAIRN_OUTPUTS_DIR=str(outputs), PYTHONUNBUFFERED="1")
    return env


def _start(script: str, args: list[str], workdir: Path) -> tuple[subprocess.Popen, Path]:
    """Start one step in its own workspace (cwd) with inputs/ and outputs/ folders."""
    inputs, outputs = workdir / "inputs", workdir / "outputs"
    inputs.mkdir(parents=True, exist_ok=True)
    outputs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / script), *args],
        cwd=workdir, env=_env(inputs, outputs), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    return proc, outputs


def _finish(proc: subprocess.Popen, outputs: Path, timeout: float = 120) -> StepRun:
    stdout, stderr = proc.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 0, f"{proc.args} failed:\n{stdout}\n{stderr}"
    return StepRun(done, outputs)


def _run_parallel(*jobs: tuple[str, list[str], Path]) -> list[StepRun]:
    started = [_start(*job) for job in jobs]
    return [_finish(proc, out) for proc, out in started]


def _link_input(workdir: Path, name: str, target: Path) -> None:
    (workdir / "inputs").mkdir(parents=True, exist_ok=True)
    (workdir / "inputs" / name).symlink_to(target, target_is_directory=target.is_dir())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """prepare run twice with the same seed, and once with another seed."""
    base = tmp_path_factory.mktemp("prepare")
    return _run_parallel(
        ("prepare.py", ["--test-fraction=0.2", "--seed=0"], base / "a"),
        ("prepare.py", ["--test-fraction=0.2", "--seed=0"], base / "b"),
        ("prepare.py", ["--test-fraction=0.2", "--seed=1"], base / "c"),
    )


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """train run twice, same seed, in different workspaces (like two executions)."""
    base = tmp_path_factory.mktemp("train")
    jobs = []
    for name in ("a", "b"):
        _link_input(base / name, "images", prepared[0].outputs)  # images/digits/train/...
        jobs.append(("train.py", [f"--epochs={EPOCHS}", "--seed=0", "--learning-rate=0.01",
                                  "--batch-size=64", "--optimizer=adam"], base / name))
    return _run_parallel(*jobs)


@pytest.fixture(scope="module")
def evaluated(prepared, trained, tmp_path_factory):
    work = tmp_path_factory.mktemp("evaluate")
    (work / "inputs" / "model").mkdir(parents=True)
    (work / "inputs" / "model" / "model.pt").symlink_to(trained[0].outputs / "model.pt")
    _link_input(work, "images", prepared[0].outputs)
    return _run_parallel(("evaluate.py", [], work))[0]


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import digits_common
    finally:
        sys.path.remove(str(EXAMPLE))
    return digits_common


# --------------------------------------------------------------------------- prepare

def test_prepare_writes_every_digit_as_png(prepared):
    from PIL import Image

    run = prepared[0]
    digits = run.outputs / "digits"
    pngs = sorted(digits.rglob("*.png"))
    assert len(pngs) == N_DIGITS
    assert {p.relative_to(digits).parts[0] for p in pngs} == {"train", "test"}
    assert {p.parent.name for p in pngs} == {str(i) for i in range(10)}
    with Image.open(pngs[0]) as im:
        assert im.mode == "L" and im.size == (8, 8)

    with (digits / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N_DIGITS
    for row in rows:
        rel = Path(row["path"])
        assert (digits / rel).is_file()
        assert rel.parts[0] == row["split"] and rel.parent.name == row["label"]

    counts = run.metrics[-1]
    assert counts["train_images"] + counts["test_images"] == N_DIGITS
    assert abs(counts["test_images"] - 0.2 * N_DIGITS) <= 10  # stratified per class
    assert sum(r["split"] == "test" for r in rows) == counts["test_images"]


def test_prepare_is_byte_for_byte_reproducible(prepared):
    first, again, other_seed = (_tree_bytes(r.outputs) for r in prepared)
    assert first == again
    assert first.keys() != other_seed.keys()  # another seed gives another split


def test_loader_reads_tree_and_flattened_inputs(prepared, common, tmp_path):
    tree = common.load_png_tree(prepared[0].outputs)
    assert len(tree) == N_DIGITS
    assert set(tree.splits) == {"train", "test"}
    assert tree.images.shape == (N_DIGITS, 1, 8, 8)
    assert 0.0 <= tree.images.min() and tree.images.max() <= 1.0

    # keep-directories: none flattens the tree; names are unique and labels.csv has the rest
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in (prepared[0].outputs / "digits").rglob("*"):
        if path.is_file():
            shutil.copy(path, flat / path.name)
    flattened = common.load_png_tree(flat)
    by_name = dict(zip((p.name for p in tree.paths), zip(tree.labels.tolist(), tree.splits)))
    assert dict(zip((p.name for p in flattened.paths),
                    zip(flattened.labels.tolist(), flattened.splits))) == by_name


# --------------------------------------------------------------------------- train

def test_train_prints_one_metrics_line_per_epoch(trained):
    run = trained[0]
    assert "device: cpu" in run.stdout or "device: cuda" in run.stdout
    epochs = [m for m in run.metrics if "epoch" in m]
    assert [m["epoch"] for m in epochs] == list(range(1, EPOCHS + 1))
    for m in epochs:
        assert set(m) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert epochs[-1]["accuracy"] > 0.5
    assert epochs[-1]["val_accuracy"] > 0.5
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_train_writes_models_and_sidecar(trained):
    out = trained[0].outputs
    assert (out / "model.pt").stat().st_size > 0
    assert (out / "model.onnx").stat().st_size > 0
    assert not (out / "model.onnx.data").exists()  # weights are inside the ONNX file
    sidecar = json.loads((out / "model.pt.metadata.json").read_text())
    assert "candidate" in sidecar["cairn.tags"]
    last = [m for m in trained[0].metrics if "epoch" in m][-1]
    assert sidecar["val_accuracy"] == last["val_accuracy"]


def test_onnx_is_valid_and_agrees_with_torch(trained, prepared, common):
    import onnx
    import torch

    out = trained[0].outputs
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)

    images = common.load_png_tree(prepared[0].outputs).subset("test").images[:48]
    model = common.load_model(out / "model.pt", torch.device("cpu"))
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                               providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": images})[0]
    except ImportError:  # onnx's pure-Python reference runtime is enough for this model
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(proto).run(None, {"image": images})[0]
    assert got.shape == (len(images), 10)  # batch axis is dynamic (exported with batch 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_train_is_deterministic(trained):
    """Same seed, two workspaces: identical bytes.

    torch.save writes fixed zip timestamps and a content-derived serialization id, so
    model.pt is byte-identical; train.py strips the exporter's stack traces (absolute
    workspace paths) from model.onnx so it is identical too.  On CPU train.py pins
    torch to one thread: results are deterministic per thread count but differ
    between 1 and 2 threads.
    """
    a, b = (r.outputs for r in trained)
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    assert [m for m in trained[0].metrics] == [m for m in trained[1].metrics]


# --------------------------------------------------------------------------- evaluate

def test_evaluate_reports_test_accuracy(evaluated, prepared):
    scores = [m for m in evaluated.metrics if "test_accuracy" in m]
    assert len(scores) == 1
    n_test = prepared[0].metrics[-1]["test_images"]
    assert scores[0]["test_images"] == n_test
    assert scores[0]["test_accuracy"] > 0.5
    assert scores[0]["test_loss"] > 0

    report = json.loads((evaluated.outputs / "report.json").read_text())
    assert report["test_accuracy"] == scores[0]["test_accuracy"]
    assert set(report["per_class"]) == {str(i) for i in range(10)}

    with (evaluated.outputs / "confusion_matrix.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    matrix = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == n_test
    assert np.trace(matrix) / n_test == pytest.approx(scores[0]["test_accuracy"], abs=1e-6)
    assert "true\\pred" in evaluated.stdout  # the text table
