"""`cairn task`: sweeps end to end with real step processes, pruning and stop conditions."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cairn.entities import FlowStatus, NodeStatus, Status
from cairn.orchestration.context import Context
from tests.func.conftest import pid_alive, wait_for

# `fit` prints one JSON line per epoch: `score` grows towards `quality` (so a low quality
# is behind at every step) and `accuracy` is `quality` from the first epoch on. A
# negative quality fails the step; the last line says the run finished.
FIT = """\
import json, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
quality, epochs, delay = float(args["quality"]), int(args["epochs"]), float(args["delay"])
if quality < 0:
    sys.exit("quality must not be negative")
for epoch in range(1, epochs + 1):
    print(json.dumps({"epoch": epoch, "score": quality * epoch / epochs,
                      "accuracy": quality}), flush=True)
    time.sleep(delay)
print(json.dumps({"finished": 1}), flush=True)
"""

YAML = """\
- step:
    name: fit
    image: python:3.11
    command: python fit.py {parameters}
    parameters:
      - {name: quality, type: float, default: 0.5, max: 1}
      - {name: epochs, type: integer, default: 3}
      - {name: delay, type: float, default: 0}
      - {name: label, type: string, default: x}
- task:
    name: grid
    step: fit
    parameters:
      - {name: quality, style: multiple, rules: {items: [0.2, 0.9, 0.5]}}
      - {name: label, style: multiple, rules: {items: [a, b]}}
- task:
    name: tpe
    step: fit
    type: bayesian_tpe
    execution-count: 4
    maximum-queued-executions: 2
    optimization-target-metric: score
    parameters:
      - {name: quality, style: random, rules: {min: 0.1, max: 1}}
- task:
    name: halving
    step: fit
    maximum-queued-executions: 2
    optimization-target-metric: score
    prune: successive-halving
    parameters:
      - {name: quality, style: multiple, rules: {items: [0.9, 0.9, 0.2, 0.1]}}
      - {name: epochs, style: single, rules: {value: 8}}
      - {name: delay, style: single, rules: {value: 0.2}}
- task:
    name: manual
    step: fit
    type: manual_search
    parameter-sets:
      - {quality: 0.3, epochs: 2}
      - {quality: 0.7, epochs: 1}
"""


@pytest.fixture
def sweeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sweeps"
    root.mkdir()
    (root / "cairn.yaml").write_text(YAML)
    (root / "fit.py").write_text(FIT)
    monkeypatch.chdir(root)
    return root


def task(root: Path, ref: int = 1):  # noqa: ANN201
    ctx = Context.load(root)
    try:
        flow = ctx.store.get_flow(ctx.project_id, "task", ref)
        executions = {n.name: ctx.store.get_execution(ctx.project_id, n.execution_id)
                      for n in flow.nodes if n.execution_id}
        metrics = {name: ctx.store.get_metrics(ex.id) for name, ex in executions.items()}
        return flow, executions, metrics
    finally:
        ctx.close()


def test_a_grid_task_runs_every_combination_and_show_ranks_the_best_first(
        sweeps: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("task", "run", "grid", "--target", "score")
    assert code == 0, err
    assert "best: trial 3" in err  # quality 0.9, label a
    flow, executions, _ = task(sweeps)
    assert flow.status == FlowStatus.COMPLETE and len(flow.nodes) == 6
    assert [n.parameters for n in flow.nodes] == [
        {"quality": q, "label": label} for q in (0.2, 0.9, 0.5) for label in ("a", "b")]
    assert all(ex.status == Status.COMPLETE for ex in executions.values())
    assert executions["4"].parameters == {"quality": 0.9, "epochs": 3, "delay": 0.0,
                                          "label": "b"}
    assert "task-1" in executions["4"].tags
    assert flow.result["best"]["parameters"] == {"quality": 0.9, "label": "a"}

    code, out, _ = cli("task", "show", "1")
    assert code == 0
    assert "best: trial 3" in out and "maximize score" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[1] for r in rows] == ["3", "4", "5", "6", "1", "2"]  # 0.9, 0.9, 0.5, 0.5, ...
    assert rows[0][0] == "1*"  # the winner is marked
    assert cli("task", "show")[1] == out  # the latest task by default

    code, out, _ = cli("task", "show", "1", "--format", "json")
    shown = json.loads(out)
    assert shown["best"]["trial"] == "3" and shown["status"] == "complete"
    assert [t["value"] for t in shown["trials"]] == pytest.approx([0.9, 0.9, 0.5, 0.5, 0.2, 0.2])
    assert shown["trials"][0]["execution"] == executions["3"].counter

    code, out, _ = cli("task", "ls", "--format", "json")
    listed = json.loads(out)
    assert listed[0]["#"] == 1 and listed[0]["status"] == "complete"
    assert listed[0]["trials"] == {"done": 6, "total": 6}


@pytest.mark.slow
def test_median_pruning_stops_trials_that_fall_behind(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("task", "run", "fit", "-p", "quality=0.9,0.8,0.1,0.15",
                         "-p", "epochs=10", "-p", "delay=0.25", "--parallel", "2",
                         "--target", "score", "--prune", "median")
    assert code == 0, err
    flow, executions, metrics = task(sweeps)
    status = {n.name: n.status for n in flow.nodes}
    assert status == {"1": NodeStatus.COMPLETE, "2": NodeStatus.COMPLETE,
                      "3": NodeStatus.PRUNED, "4": NodeStatus.PRUNED}
    for name in ("3", "4"):
        node = flow.node(name)
        assert node.detail.startswith("pruned at step ")
        assert "below the median" in node.detail
        # really stopped early: the process did not get to its last epoch
        assert executions[name].status == Status.STOPPED
        keys = [p.key for p in metrics[name]]
        assert "finished" not in keys and keys.count("score") < 10
    assert [p.key for p in metrics["1"]].count("score") == 10
    assert flow.result["best"]["trial"] == "1"
    assert "2 complete, 2 pruned" in out


@pytest.mark.slow
def test_successive_halving_keeps_the_better_half(sweeps: Path, cli) -> None:  # noqa: ANN001
    # Pruning from the project file (`prune:` in the task); the median test uses --prune.
    code, _, err = cli("task", "run", "halving")
    assert code == 0, err
    flow, executions, metrics = task(sweeps)
    assert [n.status for n in flow.nodes] == [NodeStatus.COMPLETE, NodeStatus.COMPLETE,
                                              NodeStatus.PRUNED, NodeStatus.PRUNED]
    for name in ("3", "4"):
        assert "successive halving" in flow.node(name).detail
        assert "finished" not in [p.key for p in metrics[name]]


def test_a_stop_condition_ends_the_whole_task(sweeps: Path, cli) -> None:  # noqa: ANN001
    # trial 1 meets it at its first epoch while trial 2 (slow) runs: 2 is stopped, 3-4 skipped
    code, out, err = cli("task", "run", "fit", "-p", "quality=0.95,0.3,0.5,0.6",
                         "-p", "epochs=20", "-p", "delay=0.1", "-j", "2",
                         "--stop-condition", "metadata.accuracy > 0.9 and parameter.epochs == 20")
    assert code == 0, err
    flow, executions, metrics = task(sweeps)
    assert flow.status == FlowStatus.COMPLETE
    assert flow.status_detail.startswith("stop condition `metadata.accuracy > 0.9")
    assert "met by trial 1" in flow.status_detail
    assert [n.status for n in flow.nodes] == [NodeStatus.COMPLETE, NodeStatus.STOPPED,
                                              NodeStatus.SKIPPED, NodeStatus.SKIPPED]
    assert executions["1"].status == Status.COMPLETE  # the trial that met it finishes
    assert executions["2"].status == Status.STOPPED
    assert "finished" not in [p.key for p in metrics["2"]]
    assert set(executions) == {"1", "2"}
    assert "met by trial 1" in out


@pytest.mark.parametrize(("policy", "code", "statuses"), [
    ("stop-all-and-error", 1, ["error", "skipped", "skipped"]),
    ("continue-and-error", 1, ["error", "complete", "complete"]),
    ("continue-and-complete", 0, ["error", "complete", "complete"]),
])
def test_on_child_error(sweeps: Path, cli, policy: str, code: int,  # noqa: ANN001
                        statuses: list[str]) -> None:
    got, _, err = cli("task", "run", "fit", "-p", "quality=-1,0.5,0.6", "-j", "1",
                      "--on-child-error", policy, "--target", "score")
    assert got == code, err
    flow, _, _ = task(sweeps)
    assert [n.status.value for n in flow.nodes] == statuses
    assert flow.node("1").detail == "the command exited with status 1"
    expected = {"stop-all-and-error": FlowStatus.ERROR, "continue-and-error": FlowStatus.ERROR,
                "continue-and-complete": FlowStatus.COMPLETE}[policy]
    assert flow.status == expected
    if policy == "continue-and-error":
        assert flow.status_detail == "1 of 3 trials failed"


def test_bayesian_and_manual_tasks(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("task", "run", "tpe", "--seed", "3")
    assert code == 0, err
    flow, executions, _ = task(sweeps)
    assert len(flow.nodes) == 4 and all(n.status == NodeStatus.COMPLETE for n in flow.nodes)
    values = [n.parameters["quality"] for n in flow.nodes]
    assert all(0.1 <= v <= 1 for v in values) and len(set(values)) == 4
    assert flow.result["best"]["value"] == max(values)
    assert executions["1"].parameters["quality"] == values[0]

    code, _, err = cli("task", "run", "manual")
    assert code == 0, err
    flow, executions, _ = task(sweeps, 2)
    assert [n.parameters for n in flow.nodes] == [{"quality": 0.3, "epochs": 2},
                                                  {"quality": 0.7, "epochs": 1}]
    assert executions["2"].parameters["epochs"] == 1


def test_random_search_with_a_seed_repeats_its_plan_and_reuse_skips_runs(
        sweeps: Path, cli) -> None:  # noqa: ANN001
    args = ("task", "run", "fit", "--type", "random-search", "-n", "3", "--seed", "11",
            "-p", "quality=uniform:0.1:0.9", "-p", "label=a,b,c", "--target", "score")
    assert cli(*args)[0] == 0
    code, _, err = cli(*args, "--reuse")
    assert code == 0, err
    first, ex1, _ = task(sweeps, 1)
    again, ex2, _ = task(sweeps, 2)
    assert [n.parameters for n in again.nodes] == [n.parameters for n in first.nodes]
    assert all(0.1 <= n.parameters["quality"] <= 0.9 for n in first.nodes)
    assert [n.status for n in again.nodes] == [NodeStatus.REUSED] * 3
    assert {e.id for e in ex2.values()} == {e.id for e in ex1.values()}
    assert again.result["best"] == first.result["best"]


def test_task_stop_stops_a_detached_sweep(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("task", "run", "fit", "-p", "quality=0.1,0.2,0.3", "-p", "epochs=300",
                         "-p", "delay=0.1", "-j", "1", "--detach")
    assert code == 0, err
    assert out.strip() == "1"
    wait_for(lambda: task(sweeps)[0].node("1").status == NodeStatus.RUNNING
             and any(task(sweeps)[2].get("1", [])), what="the first trial to run")
    code, _, err = cli("task", "stop", "1")
    assert code == 0 and "stopping" in err
    wait_for(lambda: task(sweeps)[0].status.is_final, what="the task to stop")
    flow, executions, _ = task(sweeps)
    assert flow.status == FlowStatus.STOPPED
    assert [n.status for n in flow.nodes] == [NodeStatus.STOPPED, NodeStatus.SKIPPED,
                                              NodeStatus.SKIPPED]
    assert executions["1"].status == Status.STOPPED
    code, _, err = cli("task", "stop", "1")
    assert code == 1 and "already ended" in err


def test_a_sweep_whose_driver_is_killed_is_marked_crashed(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("task", "run", "fit", "-p", "quality=0.1,0.2,0.3", "-p", "epochs=300",
                         "-p", "delay=0.1", "-j", "1", "--detach")
    assert code == 0, err
    wait_for(lambda: task(sweeps)[0].node("1").status == NodeStatus.RUNNING
             and any(task(sweeps)[2].get("1", [])), what="the first trial to run")
    driver = task(sweeps)[0].pid
    assert driver
    os.kill(driver, signal.SIGKILL)
    wait_for(lambda: not pid_alive(driver), what="the driver to be gone")
    code, out, err = cli("task", "ls")  # looking at the tasks reaps a dead driver's
    assert code == 0, err
    flow, executions, _ = task(sweeps)
    assert flow.status == FlowStatus.CRASHED
    assert f"pid {driver}" in (flow.status_detail or "")
    assert [n.status for n in flow.nodes] == [NodeStatus.CRASHED, NodeStatus.SKIPPED,
                                              NodeStatus.SKIPPED]
    wait_for(lambda: task(sweeps)[1]["1"].status == Status.CRASHED,
             what="the orphaned trial to be reaped")


# -- errors that must be clear ---------------------------------------------------------


def test_show_without_tasks_says_how_to_start_one(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("task", "show")
    assert code == 1 and "no tasks yet" in err and "cairn task run" in err


def test_an_empty_parameter_space_is_refused(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("task", "run", "fit")
    assert code == 2
    assert "varies no parameters: its parameter space is empty" in err
    assert "-p lr=0.1,0.01" in err
    (sweeps / "cairn.yaml").write_text(YAML + """\
- task:
    name: empty
    step: fit
    parameters:
      - {name: quality, style: multiple, rules: {items: []}}
""")
    code, _, err = cli("task", "run", "empty")
    assert code == 2 and "parameter 'quality' of task 'empty' gives no values" in err
    assert cli("task", "ls")[2].startswith("no tasks yet")  # nothing was stored


def test_an_unknown_task_type_is_refused(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("task", "run", "fit", "-p", "quality=0.1,0.2", "--type", "grid")
    assert code == 2
    assert "unknown task type 'grid'" in err and "did you mean 'grid_search'?" in err
    (sweeps / "cairn.yaml").write_text(YAML.replace("type: bayesian_tpe", "type: bayes"))
    code, _, err = cli("task", "run", "tpe")
    assert code == 3 and "'type' of task 'tpe' must be one of" in err


def test_a_stop_condition_that_does_not_parse_is_refused(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("task", "run", "fit", "-p", "quality=0.1,0.2",
                       "--stop-condition", "metadata.accuracy >")
    assert code == 2
    assert "stop condition of the sweep of step 'fit' cannot be used" in err
    assert "metadata.accuracy > 0.98" in err  # the hint shows the form


def test_other_mistakes_are_refused_before_anything_runs(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, _, err = cli("task", "run", "fit", "-p", "quality=0.5,2")
    assert code == 2 and "trial 2 of the sweep of step 'fit' (quality=2)" in err
    code, _, err = cli("task", "run", "fit", "-p", "qualty=0.5")
    assert code == 2 and "did you mean 'quality'" in err
    code, _, err = cli("task", "run", "fit", "-p", "quality=0.1,0.2", "--prune", "median")
    assert code == 2 and "--target METRIC" in err
    code, _, err = cli("task", "run", "tpe", "--target", "")
    assert code == 2 and "needs a target metric" in err
    code, _, err = cli("task", "run", "fitt", "-p", "quality=0.1")
    assert code == 4
    assert cli("task", "ls")[2].startswith("no tasks yet")


def test_an_unknown_target_metric_is_reported_at_the_end(sweeps: Path, cli) -> None:  # noqa: ANN001
    code, out, err = cli("task", "run", "fit", "-p", "quality=0.1,0.2", "--target", "acuracy")
    assert code == 0, err
    assert "no completed trial reported the target metric 'acuracy'; " \
           "did you mean 'accuracy'?" in err
    flow, _, _ = task(sweeps)
    assert flow.status == FlowStatus.COMPLETE and flow.result["best"] is None
    code, out, _ = cli("task", "show", "1", "--format", "json")
    assert "did you mean 'accuracy'" in json.loads(out)["problem"]


@pytest.mark.slow
def test_the_digits_example_sweeps_learning_rate_and_width(tmp_path: Path, cli,  # noqa: ANN001
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil  # torch, sklearn, PIL, onnx: `make test` installs the example's requirements

    from tests.conftest import REPO

    root = tmp_path / "digits"
    shutil.copytree(REPO / "examples" / "digits", root,
                    ignore=shutil.ignore_patterns(".cairn", "__pycache__"))
    monkeypatch.chdir(root)
    assert cli("run", "prepare", "-q")[0] == 0
    # the task as written, one epoch per trial to keep the suite quick
    code, out, err = cli("task", "run", "lr-width", "-p", "epochs=1",
                         "--input", "images=datum://1/digits/**")
    assert code == 0, err
    flow, executions, _ = task(root)
    assert [n.parameters for n in flow.nodes] == [
        {"learning-rate": lr, "width": w, "epochs": 1} for lr in (0.003, 0.03) for w in (8, 16)]
    assert all(n.status == NodeStatus.COMPLETE and n.value > 0.3 for n in flow.nodes)
    best = flow.result["best"]
    assert best["value"] == max(n.value for n in flow.nodes)
    assert executions[best["trial"]].parameters["width"] == best["parameters"]["width"]
    # a model of any width can be evaluated
    narrow = next(ex for name, ex in executions.items() if ex.parameters["width"] == 8)
    code, _, err = cli("run", "evaluate", "-q", "--input", f"model=datum://{narrow.counter}/model.pt",
                       "--input", "images=datum://1/digits/**")
    assert code == 0, err
    assert "lr-width" in out and "best:" in out
