"""Step `evaluate`: score a trained model on the `test` images.

Inputs: `model` (a model.pt state_dict written by train.py) and `images`
(the PNG tree written by prepare.py).  Prints a JSON metrics line with
test_accuracy/test_loss plus the confusion matrix, shows the matrix as a
text table, and writes confusion_matrix.csv and report.json to the outputs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from digits_common import (
    NUM_CLASSES,
    choose_device,
    evaluate_model,
    find_files,
    inputs_dir,
    load_model,
    load_png_tree,
    log,
    log_metrics,
    outputs_dir,
)


def parse_args(argv=None) -> argparse.Namespace:
    # no parameters: the step's `{parameters}` expands to nothing, unknown options fail loudly
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    return parser.parse_args(argv)


def find_model(folder: Path) -> Path:
    candidates = find_files(folder, ".pt")
    if not candidates:
        raise SystemExit(f"no .pt model file under {folder}")
    if len(candidates) > 1:
        log(f"several models under {folder}; using {candidates[0]}")
    return candidates[0]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def format_table(matrix: np.ndarray) -> str:
    width = max(4, len(str(matrix.max())) + 1)
    head = "true\\pred".rjust(9) + "".join(str(c).rjust(width) for c in range(NUM_CLASSES))
    rows = [str(i).rjust(9) + "".join(str(v).rjust(width) for v in row)
            for i, row in enumerate(matrix)]
    return "\n".join([head, *rows])


def per_class(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    report = {}
    for c in range(NUM_CLASSES):
        tp = int(matrix[c, c])
        support, predicted = int(matrix[c].sum()), int(matrix[:, c].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[str(c)] = {"precision": round(precision, 6), "recall": round(recall, 6),
                          "f1": round(f1, 6), "support": support}
    return report


def main(argv=None) -> None:
    parse_args(argv)
    device = choose_device()
    log(f"device: {device}")

    model_path = find_model(inputs_dir() / "model")
    model = load_model(model_path, device)

    source = inputs_dir() / "images"
    data = load_png_tree(source)
    test = data.subset("test")
    if len(test) == 0:
        log(f"no 'test' folder under {source}: evaluating on all {len(data)} images")
        test = data
    loss, accuracy, predictions = evaluate_model(model, test.images, test.labels, device)
    matrix = confusion_matrix(test.labels, predictions)

    log(f"model {model_path.name}, {len(test)} test images")
    log(format_table(matrix))
    log_metrics(test_accuracy=round(accuracy, 6), test_loss=round(loss, 6), test_images=len(test))
    log_metrics(confusion_matrix=matrix.tolist())

    out = outputs_dir()
    with (out / "confusion_matrix.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["true\\pred", *range(NUM_CLASSES)])
        for c, row in enumerate(matrix):
            writer.writerow([c, *row.tolist()])
    report = {
        "model": model_path.name,
        "test_images": len(test),
        "test_accuracy": round(accuracy, 6),
        "test_loss": round(loss, 6),
        "per_class": per_class(matrix),
        "confusion_matrix": matrix.tolist(),
        "misclassified": [
            {"path": str(test.paths[i].relative_to(source)), "label": int(test.labels[i]),
             "predicted": int(predictions[i])}
            for i in np.flatnonzero(predictions != test.labels)
        ],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
