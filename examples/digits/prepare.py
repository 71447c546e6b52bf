"""Step `prepare`: turn scikit-learn's bundled digits into a PNG image tree.

Writes, under the outputs folder:
    digits/train/<label>/<index>.png
    digits/test/<label>/<index>.png
    digits/labels.csv              (split,path,label; path relative to digits/)

The split is stratified by class and fixed by --seed; PNGs carry no
timestamps, so a re-run produces byte-identical files.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
from digits_common import log, log_metrics, outputs_dir, stratified_split
from PIL import Image
from sklearn.datasets import load_digits


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of each class held out as the test split (0.05-0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    args = parser.parse_args(argv)
    if not 0.05 <= args.test_fraction <= 0.5:
        parser.error("--test-fraction must be between 0.05 and 0.5")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    digits = load_digits()
    # sklearn stores 0..16 intensities; scale to 0..255 grayscale
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)

    _, test_idx = stratified_split(labels, args.test_fraction, args.seed)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True

    root = outputs_dir() / "digits"
    rows = []
    for index in range(len(labels)):  # original dataset index: file names are unique overall
        split = "test" if is_test[index] else "train"
        rel = f"{split}/{labels[index]}/{index:04d}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index]).save(path, format="PNG", compress_level=9)
        rows.append((split, rel, int(labels[index])))

    rows.sort()
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["split", "path", "label"])
        writer.writerows(rows)

    n_test = int(is_test.sum())
    log(f"wrote {len(labels)} PNGs to {root}")
    log_metrics(train_images=len(labels) - n_test, test_images=n_test,
                classes=len(np.unique(labels)))


if __name__ == "__main__":
    main()
