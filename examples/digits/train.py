"""Step `train`: fit a small CNN on the `train` images of the digits PNG tree.

Input `images`: the tree written by prepare.py (any layout that keeps the
`<label>/<file>.png` folders, or a flattened one with its labels.csv).
A validation split is held out from the train images (stratified, by --seed).

Outputs: model.pt (state_dict), model.onnx, and a model.pt.metadata.json
sidecar that tags the model as a candidate and records its val_accuracy.
One JSON metrics line is printed per epoch.
"""

from __future__ import annotations

import argparse
import json
import time

from digits_common import (
    build_model,
    choose_device,
    evaluate_model,
    inputs_dir,
    load_png_tree,
    log,
    log_metrics,
    make_deterministic,
    outputs_dir,
    stratified_split,
)

VAL_FRACTION = 0.1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--width", type=int, default=16,
                        help="channels of the first conv layer (the second has twice as many)")
    args = parser.parse_args(argv)
    if not 1 <= args.epochs <= 200:
        parser.error("--epochs must be between 1 and 200")
    if not 1e-5 <= args.learning_rate <= 1:
        parser.error("--learning-rate must be between 0.00001 and 1")
    if not 1 <= args.batch_size <= 1024:
        parser.error("--batch-size must be between 1 and 1024")
    if not 1 <= args.width <= 256:
        parser.error("--width must be between 1 and 256")
    return args


def export_onnx(model, path) -> str:
    """Export to ONNX with a dynamic batch axis; returns which exporter worked."""
    import logging
    import warnings

    import torch

    # the exporter is chatty (missing torchvision ops, deprecations); keep the log readable
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    model = model.to("cpu").eval()
    example = (torch.zeros(1, 1, 8, 8),)
    names = {"input_names": ["image"], "output_names": ["logits"]}
    try:
        torch.onnx.export(model, example, str(path), dynamo=True, external_data=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                          verbose=False, **names)
        exporter = "dynamo"
    except Exception as exc:  # noqa: BLE001  (any failure: fall back to TorchScript)
        log(f"dynamo ONNX export failed ({type(exc).__name__}: {exc}); using dynamo=False")
        torch.onnx.export(model, example, str(path), dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **names)
        exporter = "torchscript"
    import onnx

    proto = onnx.load(str(path))
    # the dynamo exporter records Python stack traces (absolute paths of this
    # workspace) on every node; drop them so the file only depends on the weights
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if not p.key.endswith("stack_trace")]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return exporter


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F

    device = choose_device()
    make_deterministic(args.seed, device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    log(f"device: {device}{gpu}")

    source = inputs_dir() / "images"
    data = load_png_tree(source).subset("train")
    if len(data) == 0:
        raise SystemExit(f"no images in a 'train' folder under {source}")
    fit_idx, val_idx = stratified_split(data.labels, VAL_FRACTION, args.seed)
    x_fit = torch.from_numpy(data.images[fit_idx]).to(device)
    y_fit = torch.from_numpy(data.labels[fit_idx]).to(device)
    x_val, y_val = data.images[val_idx], data.labels[val_idx]
    log(f"{len(fit_idx)} training and {len(val_idx)} validation images from {source}")

    model = build_model(args.width).to(device)
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=0.9)
    shuffler = torch.Generator().manual_seed(args.seed)

    started = time.perf_counter()
    val_acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_fit), generator=shuffler).to(device)
        total_loss, correct = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            logits = model(x_fit[batch])
            loss = F.cross_entropy(logits, y_fit[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y_fit[batch]).sum().item())
        val_loss, val_acc, _ = evaluate_model(model, x_val, y_val, device)
        log_metrics(epoch=epoch,
                    loss=round(total_loss / len(y_fit), 6),
                    accuracy=round(correct / len(y_fit), 6),
                    val_loss=round(val_loss, 6),
                    val_accuracy=round(val_acc, 6))
    log(f"trained {args.epochs} epochs in {time.perf_counter() - started:.2f}s")

    out = outputs_dir()
    model = model.to("cpu").eval()
    torch.save(model.state_dict(), out / "model.pt")
    exporter = export_onnx(model, out / "model.onnx")
    log(f"wrote model.pt and model.onnx ({exporter} exporter, checked)")

    info = {
        "val_accuracy": round(val_acc, 6),
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "width": args.width,
        "seed": args.seed,
        "device": device.type,
    }
    for name in ("model.pt", "model.onnx"):
        sidecar = {"cairn.tags": ["candidate"], **info}
        if name == "model.onnx":
            sidecar["onnx_exporter"] = exporter
        (out / f"{name}.metadata.json").write_text(json.dumps(sidecar, indent=2) + "\n")


if __name__ == "__main__":
    main()
