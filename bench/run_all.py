"""Run every side-by-side benchmark and print all their tables (``make bench``).

Each benchmark runs as its own process with this interpreter (cairn's ``.venv``); peers
are installed on first use into ``.bench-venv`` (see ``bench/_peers.py``). Arguments after
``--`` go to every benchmark (e.g. ``-- --no-peers``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BENCHES = ("bench_startup.py", "bench_query.py", "bench_metrics.py", "bench_datasets.py",
           "bench_pipelines.py", "bench_ray.py")


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    only = [a for a in (argv[:argv.index("--")] if "--" in argv else argv)]
    chosen = [b for b in BENCHES if not only or any(o in b for o in only)]
    C.compile_trees()
    tables: list[str] = []
    failed = []
    started = time.perf_counter()
    for name in chosen:
        print(f"--- {name} ---", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).parent / name), *extra],
                              stdout=subprocess.PIPE, text=True)
        print(proc.stdout, end="", flush=True)
        print(f"--- {name}: {time.perf_counter() - t0:.0f}s, exit {proc.returncode} ---",
              file=sys.stderr, flush=True)
        if proc.returncode != 0:
            failed.append(name)
        tables.append(proc.stdout.strip())
    print("\n\n======== all benchmarks ========")
    print("\n\n".join(t for t in tables if t))
    print(f"\n(total {time.perf_counter() - started:.0f}s"
          + (f"; FAILED: {', '.join(failed)})" if failed else ")"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
