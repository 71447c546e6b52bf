"""Peer side of bench_metrics: MLflow logging the same events into a SQLite tracking store.

Run with the peer interpreter (``.bench-venv``): ``python _mlflow_metrics.py MODE N DB``,
MODE ``log_metric`` (one call per point) or ``log_batch`` (MlflowClient.log_batch, 1000
metrics per call, MLflow's maximum). The events are those of ``_emit_metrics.py``:
``{"step": i, "loss": 1/(i+1), "accuracy": i/N}``, i.e. 2 points per event. Store setup
(schema migrations, experiment and run creation) is not timed. Prints one JSON line.
"""

import json
import sys
import time


def main() -> None:
    mode, n, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("bench-metrics")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    mlflow.start_run(run_id=run_id)  # log_metric goes to the active run, as in a script

    t0 = time.perf_counter()
    if mode == "log_metric":
        for i in range(n):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            mlflow.log_metric("accuracy", i / n, step=i)
    elif mode == "log_batch":
        batch = []
        for i in range(n):
            ms = int(time.time() * 1000)
            batch.append(Metric("loss", 1.0 / (i + 1), ms, i))
            batch.append(Metric("accuracy", i / n, ms, i))
            if len(batch) >= 1000:
                client.log_batch(run_id, metrics=batch)
                batch = []
        if batch:
            client.log_batch(run_id, metrics=batch)
    else:
        raise SystemExit(f"unknown mode {mode}")
    elapsed = time.perf_counter() - t0
    mlflow.end_run()

    stored = sum(len(client.get_metric_history(run_id, key)) for key in ("loss", "accuracy"))
    print(json.dumps({"mode": mode, "events": n, "points": 2 * n, "seconds": elapsed,
                      "stored": stored, "version": mlflow.__version__}))


if __name__ == "__main__":
    main()
