"""The digits demo: prepare → train (twice) → evaluate, all through cairn, versioned.

Run by `make demo` from the repository root. Each step runs with `cairn run`; outputs of
one step become inputs of the next by their `datum://` URIs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cairn(*args: str) -> None:
    print(f"\n$ cairn {' '.join(args)}", flush=True)
    subprocess.run(["cairn", *args], cwd=HERE, check=True)


def main() -> int:
    import cairn as cairn_sdk

    gpus = ["--gpus", "1"] if shutil.which("nvidia-smi") and _gpu_count() > 0 else []
    cairn("run", "prepare")
    client = cairn_sdk.Client(HERE)
    prepare = client.executions(step="prepare", status="complete", limit=1)[0]
    # Every output of the prepare run under digits/, by one URI: datum://EXECUTION/GLOB.
    images = ["--input", f"images=datum://{prepare.counter}/digits/**"]
    cairn("run", "train", "--epochs=8", "--learning-rate=0.01", *gpus, *images)
    cairn("run", "train", "--epochs=8", "--optimizer=sgd", "--learning-rate=0.05", *gpus,
          *images)
    best = client.executions(step="train", status="complete", sort="metric:val_accuracy",
                             limit=1)[0]
    model = [d.uri for d in best.outputs if d.name == "model.pt"][0]
    print(f"(best training run: #{best.counter}, val_accuracy={best.metrics.get('val_accuracy')})")
    cairn("run", "evaluate", "--input", f"model={model}", *images)
    cairn("ls")
    trains = client.executions(step="train", limit=2)
    cairn("compare", *[str(t.counter) for t in reversed(trains)])
    cairn("lineage", model)
    # The same work as one pipeline, with the result cache: nodes whose code, parameters,
    # inputs and packages match a completed execution reuse it instead of running again.
    cairn("pipeline", "run", "digits", "--train.epochs=8", "--reuse")
    client.close()
    print("\nEverything above is recorded in examples/digits/.cairn/. Try:"
          "\n  cd examples/digits && cairn show 2 && cairn metrics 2 && cairn rerun 1")
    return 0


def _gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
