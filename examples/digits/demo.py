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
    print(f"\n$ cairn {_shorten(args)}", flush=True)
    subprocess.run(["cairn", *args], cwd=HERE, check=True)


def outputs_of(client, run, prefix: str) -> list[str]:
    return [f"{d.uri}" for d in run.outputs if d.name.startswith(prefix)]


def main() -> int:
    import cairn as cairn_sdk

    gpus = ["--gpus", "1"] if shutil.which("nvidia-smi") and _gpu_count() > 0 else []
    cairn("run", "prepare")
    client = cairn_sdk.Client(HERE)
    prepare = client.executions(step="prepare", status="complete", limit=1)[0]
    images = [a for uri in outputs_of(client, prepare, "digits/") for a in ("--input", f"images={uri}")]
    print(f"(passing {len(images) // 2} image datums of #{prepare.counter} as the `images` input)")
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
    client.close()
    print("\nEverything above is recorded in examples/digits/.cairn/. Try:"
          "\n  cd examples/digits && cairn show 2 && cairn metrics 2 && cairn rerun 1")
    return 0


def _shorten(args: tuple[str, ...]) -> str:
    """The command line as typed, with long runs of --input options summarized."""
    shown: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--input" and i + 1 < len(args):
            name = args[i + 1].split("=", 1)[0]
            j = i
            while j + 1 < len(args) and args[j] == "--input" and args[j + 1].startswith(name + "="):
                j += 2
            count = (j - i) // 2
            shown.append(f"--input {args[i + 1]}" if count == 1 else
                         f"--input {name}=datum://… ({count} datums)")
            i = j
        else:
            shown.append(args[i])
            i += 1
    return " ".join(shown)


def _gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
