"""Peer side of bench_query: MLflow ``search_runs`` ordered by a metric, at growing N.

Run with the peer interpreter (``.bench-venv``)::

    python _mlflow_query.py DB SIZES API_RUNS REPEAT

``SIZES`` is a comma list (e.g. ``2000,10000,100000``). Runs mirror cairn's synthetic
executions: param ``lr``, metrics ``accuracy`` and ``loss`` (uniform in [0, 1)), tag
``sweep`` on every tenth, status FINISHED.

The first ``API_RUNS`` runs go through MLflow's public API (``create_run``, ``log_batch``,
``set_terminated``; their rate is reported). Creating 100,000 runs that way would take
far too long, so the rest are copies of an API-made run: its rows in ``runs``, ``tags``,
``params``, ``metrics`` and ``latest_metrics`` are read back and inserted again in
batches (fresh run ids, names and metric values) through MLflow's own SQLAlchemy tables
(``mlflow.store.tracking.dbmodels.models``) on the store's engine. ``search_runs`` then
cannot tell them apart from API-made runs.

At each size: ``MlflowClient().search_runs(order_by=["metrics.accuracy DESC"],
max_results=50)`` timed in process (median of REPEAT after one warm-up), and a fresh
interpreter doing the same and printing the 50 rows (the analogue of ``cairn ls``).
Prints one JSON line.
"""

import json
import random
import statistics
import subprocess
import sys
import time
import uuid

ONE_SHOT = """
import sys, time
t0 = time.perf_counter()
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
runs = client.search_runs([sys.argv[2]], order_by=["metrics.accuracy DESC"], max_results=50)
for r in runs:
    print(r.info.run_name, r.info.status, r.data.params.get("lr"),
          r.data.metrics.get("accuracy"), r.data.metrics.get("loss"))
"""


def main() -> None:
    db, sizes_arg, api_runs, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sizes = sorted(int(s) for s in sizes_arg.split(","))
    import mlflow
    import sqlalchemy as sa
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.store.tracking.dbmodels import models
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("bench-query")
    rng = random.Random(0)
    store = client._tracking_client.store
    engine = store.engine

    def api_run(i: int) -> str:
        ms = int(time.time() * 1000)
        tags = {"sweep": "true"} if i % 10 == 0 else {}
        run = client.create_run(experiment_id, run_name=f"run-{i}", tags=tags)
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("accuracy", rng.random(), ms, 1), Metric("loss", rng.random(), ms, 1)],
            params=[Param("lr", str(round(rng.random(), 6)))],
        )
        client.set_terminated(run_id, "FINISHED")
        return run_id

    tables = {
        "runs": models.SqlRun.__table__,
        "tags": models.SqlTag.__table__,
        "params": models.SqlParam.__table__,
        "metrics": models.SqlMetric.__table__,
        "latest_metrics": models.SqlLatestMetric.__table__,
    }
    template: dict = {}

    def load_template(run_id: str) -> None:
        with engine.connect() as conn:
            for name, table in tables.items():
                rows = conn.execute(sa.select(table).where(table.c.run_uuid == run_id)).mappings()
                template[name] = [dict(r) for r in rows]
        template["runs"][0]["artifact_uri"] = template["runs"][0]["artifact_uri"].replace(
            run_id, "{run_id}")

    def bulk(start: int, stop: int, batch: int = 20_000) -> None:
        for lo in range(start, stop, batch):
            rows = {name: [] for name in tables}
            for i in range(lo, min(stop, lo + batch)):
                run_id = uuid.uuid4().hex
                name = f"run-{i}"
                values = {"accuracy": rng.random(), "loss": rng.random()}
                run = dict(template["runs"][0], run_uuid=run_id, name=name,
                           artifact_uri=template["runs"][0]["artifact_uri"].format(run_id=run_id))
                rows["runs"].append(run)
                for tag in template["tags"]:
                    if tag["key"] == "sweep":
                        continue
                    value = name if tag["key"] == "mlflow.runName" else tag["value"]
                    rows["tags"].append(dict(tag, run_uuid=run_id, value=value))
                if i % 10 == 0:
                    rows["tags"].append({"key": "sweep", "value": "true", "run_uuid": run_id})
                for param in template["params"]:
                    rows["params"].append(dict(param, run_uuid=run_id,
                                               value=str(round(rng.random(), 6))))
                for table in ("metrics", "latest_metrics"):
                    for metric in template[table]:
                        rows[table].append(dict(metric, run_uuid=run_id,
                                                value=values[metric["key"]]))
            with engine.begin() as conn:
                for name, table in tables.items():
                    if rows[name]:
                        conn.execute(sa.insert(table), rows[name])

    def search():
        return client.search_runs([experiment_id], order_by=["metrics.accuracy DESC"],
                                  max_results=50)

    results = []
    have = 0
    api_seconds = None
    api_made = 0
    for size in sizes:
        t0 = time.perf_counter()
        api_target = min(size, api_runs)
        if have < api_target:
            a0 = time.perf_counter()
            last = None
            for i in range(have, api_target):
                last = api_run(i)
            api_seconds = time.perf_counter() - a0
            api_made = api_target - have
            have = api_target
            load_template(last)
        if have < size:
            if not template:
                load_template(api_run(have))
                have += 1
            bulk(have, size)
            have = size
        build = time.perf_counter() - t0
        count = _count(engine, sa)
        # one warm-up, then REPEAT timed calls (fewer when a call is very slow)
        w0 = time.perf_counter()
        runs = search()
        first = time.perf_counter() - w0
        times = []
        for _ in range(repeat if first < 5 else 1):
            s0 = time.perf_counter()
            runs = search()
            times.append(time.perf_counter() - s0)
        accuracies = [r.data.metrics["accuracy"] for r in runs]
        ok = len(runs) == 50 and accuracies == sorted(accuracies, reverse=True)
        o0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", ONE_SHOT, uri, experiment_id],
                              capture_output=True, text=True)
        one_shot = time.perf_counter() - o0
        ok = ok and proc.returncode == 0 and len(proc.stdout.splitlines()) == 50
        results.append({"n": size, "count": count, "build_seconds": build,
                        "search_median": statistics.median(times), "search_times": times,
                        "warmup": first, "one_shot": one_shot, "ok": ok,
                        "top": accuracies[:3], "stderr": proc.stderr[-500:]})
        print(json.dumps({"progress": results[-1]}), file=sys.stderr, flush=True)
    print(json.dumps({"version": mlflow.__version__, "api_runs": api_runs,
                      "api_seconds": api_seconds, "api_made": api_made, "results": results}))


def _count(engine, sa) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()


if __name__ == "__main__":
    main()
