"""The benchmark step: print N metric events as JSON lines as fast as it can.

``python _emit_metrics.py N REPORT``: each line is ``{"step": i, "loss": ..., "accuracy": ...}``
(two metric points per event). At the end the script writes its own wall and CPU time
(from its first line of output to the last byte flushed) as JSON to REPORT, a path
outside stdout so the report is not itself a metric.
"""

import json
import sys
import time


def main() -> None:
    n, report = int(sys.argv[1]), sys.argv[2]
    dumps, out = json.dumps, sys.stdout
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        out.write(dumps({"step": i, "loss": 1.0 / (i + 1), "accuracy": i / n}) + "\n")
    out.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with open(report, "w") as fh:
        json.dump({"n": n, "wall": wall, "cpu": cpu, "end": time.time()}, fh)


if __name__ == "__main__":
    main()
