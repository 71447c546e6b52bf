"""Helpers shared by the digits example steps (prepare, train, evaluate).

Nothing here imports cairn: a step only relies on the execution contract,
i.e. environment variables naming its input and output folders and JSON
lines on stdout for metrics.  torch is imported lazily so that `prepare.py`
does not pay for it.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
NUM_CLASSES = 10
IMAGE_SIZE = 8  # sklearn's digits are 8x8 grayscale; stored as-is to keep files tiny


# --------------------------------------------------------------------------- contract

def _dir_from_env(names: tuple[str, ...], fallback: str) -> Path:
    for name in names:
        value = os.environ.get(name)
        if value:
            return Path(value)
    return Path(fallback)


def inputs_dir() -> Path:
    """`$CAIRN_INPUTS_DIR`, else `$VH_INPUTS_DIR`, else `./inputs`."""
    return _dir_from_env(("CAIRN_INPUTS_DIR", "VH_INPUTS_DIR"), "inputs")


def outputs_dir() -> Path:
    """`$CAIRN_OUTPUTS_DIR`, else `$VH_OUTPUTS_DIR`, else `./outputs` (created)."""
    path = _dir_from_env(("CAIRN_OUTPUTS_DIR", "VH_OUTPUTS_DIR"), "outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_metrics(**values) -> None:
    """Print one JSON object on one stdout line: a metadata event for cairn/Valohai."""
    print(json.dumps(values), flush=True)


def log(message: str) -> None:
    """Ordinary (non-metric) log line."""
    print(message, flush=True)


# --------------------------------------------------------------------------- PNG tree

@dataclass
class ImageSet:
    images: np.ndarray  # float32, shape (N, 1, H, W), values in [0, 1]
    labels: np.ndarray  # int64, shape (N,)
    splits: list[str]   # "train" / "test" / "" per image
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, split: str) -> ImageSet:
        idx = [i for i, s in enumerate(self.splits) if s == split]
        return ImageSet(self.images[idx], self.labels[idx],
                        [self.splits[i] for i in idx], [self.paths[i] for i in idx])


def _split_of(rel: Path) -> str:
    # the last train/test component wins: "digits/train/3/0042.png" -> "train"
    for part in reversed(rel.parts[:-1]):
        if part in SPLITS:
            return part
    return ""


def _label_of(rel: Path) -> int | None:
    parent = rel.parent.name
    if parent.isdigit() and 0 <= int(parent) < NUM_CLASSES:
        return int(parent)
    return None


def find_files(root: Path, suffix: str) -> list[Path]:
    """Files under `root` ending in `suffix`, sorted; follows linked folders (inputs are links)."""
    found = []
    for folder, _dirs, names in os.walk(root, followlinks=True):
        found.extend(Path(folder) / n for n in names if n.lower().endswith(suffix))
    return sorted(p for p in found if p.is_file())


def _labels_from_csv(root: Path) -> dict[str, tuple[str, int]]:
    """basename -> (split, label) from any labels.csv under root (for flattened inputs)."""
    table: dict[str, tuple[str, int]] = {}
    for csv_path in (p for p in find_files(root, ".csv") if p.name == "labels.csv"):
        with csv_path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                table[Path(row["path"]).name] = (row["split"], int(row["label"]))
    return table


def load_png_tree(root: Path) -> ImageSet:
    """Load every PNG found (recursively) under `root`.

    The label is the name of the PNG's parent folder (0-9), the split is the
    nearest `train`/`test` path component.  If an input was flattened
    (keep-directories: none) the file names are still unique, and a
    `labels.csv` beside them supplies split and label.
    """
    from PIL import Image

    root = Path(root)
    files = find_files(root, ".png")
    if not files:
        raise SystemExit(f"no PNG images found under {root}")
    fallback = None
    images, labels, splits = [], [], []
    for path in files:
        rel = path.relative_to(root)
        label, split = _label_of(rel), _split_of(rel)
        if label is None:
            if fallback is None:
                fallback = _labels_from_csv(root)
            if rel.name not in fallback:
                raise SystemExit(f"cannot tell the label of {path}: parent folder is not 0-9 "
                                 "and no labels.csv lists it")
            split, label = fallback[rel.name]
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        images.append(pixels[None, :, :])
        labels.append(label)
        splits.append(split)
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), splits, files)


def stratified_split(labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of every class held out, chosen by `seed`.

    Uses numpy's legacy RandomState, whose streams are stable across numpy versions.
    """
    rng = np.random.RandomState(seed)
    keep, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_held = round(len(idx) * fraction)
        held.extend(idx[:n_held].tolist())
        keep.extend(idx[n_held:].tolist())
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


# --------------------------------------------------------------------------- torch

def choose_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_deterministic(seed: int, device) -> None:
    """Seed everything and ask torch for deterministic kernels.

    On CPU the run is also pinned to one thread: the model is tiny, so this
    costs nothing, and it makes the result independent of the core count.
    """
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.set_num_threads(1)
    else:
        # cuBLAS needs this for deterministic matmuls; must be set before first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception as exc:  # noqa: BLE001  (depends on the torch build)
        print(f"deterministic algorithms unavailable: {exc}", file=sys.stderr)


def build_model(width: int = 16):
    """The network: two 3x3 conv layers (``width`` and 2*``width`` channels) and one
    linear layer (~6k parameters at the default width of 16)."""
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1)  # width x8x8
            self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)  # -> pool /2
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(2 * width * (IMAGE_SIZE // 2) ** 2, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv1(x))
            x = self.pool(torch.relu(self.conv2(x)))
            return self.fc(torch.flatten(x, 1))

    return DigitsCNN()


def load_model(path: Path, device):
    """A model saved by train.py, at whatever width it was trained with."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(width=int(state["conv1.weight"].shape[0]))
    model.load_state_dict(state)
    return model.to(device).eval()


def evaluate_model(model, images: np.ndarray, labels: np.ndarray, device,
                   batch_size: int = 512) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy loss, accuracy, predictions) of `model` on a set of images."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total_loss, preds = 0.0, []
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).to(device)
            y = torch.from_numpy(labels[start:start + batch_size]).to(device)
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            preds.append(logits.argmax(1).cpu().numpy())
    predictions = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    n = max(len(labels), 1)
    return total_loss / n, float((predictions == labels).sum()) / n, predictions
