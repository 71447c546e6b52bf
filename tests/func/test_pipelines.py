"""Pipelines through the real CLI: edges, parallel nodes, on-error, actions, reuse, resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from cairn.client import Client
from cairn.orchestration.context import Context

from .conftest import cairn_proc, pid_alive, wait_for

STEPS = """\
- step:
    name: make
    image: python:3.11
    command: python make.py {parameters}
    parameters:
      - name: size
        type: integer
        default: 5
      - name: rate
        type: float
        default: 0.5
- step:
    name: use
    image: python:3.11
    command: python use.py {parameters}
    parameters:
      - name: lr
        type: float
        default: 0.1
      - name: label
        type: string
        default: plain
    inputs:
      - name: data
        keep-directories: full
      - name: extra
        optional: true
- step:
    name: nap
    image: python:3.11
    command: python nap.py {parameters}
    parameters:
      - name: seconds
        type: float
        default: 1
      - name: fail
        type: flag
      - name: flaky
        type: string
        default: ""
      - name: gate
        type: string
        default: ""
"""

MAKE = """\
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
out = os.environ["CAIRN_OUTPUTS_DIR"]
os.makedirs(out + "/sub", exist_ok=True)
open(out + "/data.txt", "w").write("x" * int(args["size"]))
open(out + "/sub/more.csv", "w").write("a,b\\n")
print(json.dumps({"score": int(args["size"]) / 10, "rate_seen": float(args["rate"])}))
"""

USE = """\
import json, os, sys
root = os.environ["CAIRN_INPUTS_DIR"]
files = sorted(os.path.relpath(os.path.join(d, f), root)
               for d, _, fs in os.walk(root) for f in fs)
print("files", files)
print("args", sys.argv[1:])
print(json.dumps({"files": len(files)}))
open(os.environ["CAIRN_OUTPUTS_DIR"] + "/result.txt", "w").write(" ".join(sys.argv[1:]))
"""

NAP = """\
import json, os, sys, time
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1") for a in sys.argv[1:])
print(json.dumps({"started": time.time()}), flush=True)
if args.get("flaky"):
    marker = args["flaky"]
    if not os.path.exists(marker):
        open(marker, "w").write("failed once")
        sys.exit(4)
deadline = time.time() + float(args.get("seconds", 1))
while time.time() < deadline and not (args.get("gate") and os.path.exists(args["gate"])):
    time.sleep(0.05)
if "fail" in args:
    sys.exit(5)
print(json.dumps({"ended": time.time(), "accuracy": 0.5}), flush=True)
"""


def write_project(root: Path, pipelines: str) -> None:
    (root / "cairn.yaml").write_text(STEPS + pipelines)
    (root / "make.py").write_text(MAKE)
    (root / "use.py").write_text(USE)
    (root / "nap.py").write_text(NAP)


@pytest.fixture
def pipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pipes"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def flow(root: Path, ref: int | str = 1):  # noqa: ANN201
    ctx = Context.load(root)
    try:
        return ctx.store.get_flow(ctx.project_id, "pipeline", ref)
    finally:
        ctx.close()


def statuses(root: Path, ref: int | str = 1) -> dict[str, str]:
    return {n.name: n.status.value for n in flow(root, ref).nodes}


def execution_of(root: Path, node: str, ref: int | str = 1):  # noqa: ANN201
    with Client(root) as client:
        return client.execution(flow(root, ref).node(node).execution_id)


EDGES = """\
- pipeline:
    name: edges
    parameters:
      - name: size
        default: 6
        targets: [first.parameter.size]
    nodes:
      - name: first
        type: execution
        step: make
      - name: second
        type: execution
        step: make
        override:
          parameters:
            - name: size
              default: 9
      - name: consumer
        type: execution
        step: use
      - name: relay
        type: execution
        step: use
        edge-merge-mode: append
    edges:
      - [first.output.*.txt, consumer.input.data]
      - [second.output.sub/*, consumer.input.data]
      - [first.metadata.score, consumer.parameter.lr]
      - source: first.parameter.rate
        target: second.parameter.rate
      - [consumer.input.data, relay.input.data]
      - [second.output.data.txt, relay.input.extra]
"""


def test_edges_carry_outputs_inputs_parameters_and_metadata(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, EDGES)
    code, out, err = cli("pipeline", "run", "edges", "--first.rate=0.25",
                         "--consumer.label=hello")
    assert code == 0, err + out
    assert statuses(pipes) == {"first": "complete", "second": "complete",
                               "consumer": "complete", "relay": "complete"}
    first, second = execution_of(pipes, "first"), execution_of(pipes, "second")
    consumer, relay = execution_of(pipes, "consumer"), execution_of(pipes, "relay")
    assert first.parameters["size"] == 6  # a pipeline parameter with a target
    assert second.parameters["size"] == 9  # the node's override
    assert second.parameters["rate"] == 0.25  # parameter → parameter edge
    assert consumer.parameters == {"lr": 0.6, "label": "hello"}  # metadata → parameter
    assert sorted(f.name for f in consumer.inputs) == ["data.txt", "sub/more.csv"]
    assert {f.digest for f in consumer.inputs} <= {d.digest for d in first.outputs + second.outputs}
    # input → input, and an output edge into a second input
    assert sorted((f.input_name, f.name) for f in relay.inputs) == [
        ("data", "data.txt"), ("data", "sub/more.csv"), ("extra", "data.txt")]
    shown = json.loads(cli("pipeline", "show", "1", "--format", "json")[1])
    assert shown["status"] == "complete"
    assert {n["name"]: n["upstream"] for n in shown["nodes"]}["consumer"] == ["first", "second"]
    assert shown["nodes"][2]["execution"] == consumer.counter
    dot = cli("pipeline", "show", "1", "--format", "dot")[1]
    assert dot.startswith('digraph "pipeline #1 edges"') and '"first" -> "consumer"' in dot
    text = cli("pipeline", "show", "1")[1]
    assert "pipeline #1 edges" in text and "← first, second" in text
    listed = cli("pipeline", "ls")[1]
    assert "edges" in listed and "4/4" in listed


PARALLEL = """\
- pipeline:
    name: fan
    nodes:
      - {name: a, type: execution, step: nap}
      - {name: b, type: execution, step: nap}
      - {name: c, type: execution, step: nap, override: {parameters: [{name: seconds, default: 0.1}]}}
    edges:
      - [a.dependency.x, c.dependency.x]
      - [b.dependency.x, c.dependency.x]
"""


def test_independent_nodes_run_in_parallel_and_downstream_waits(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, PARALLEL)
    code, _, err = cli("pipeline", "run", "fan", "--a.seconds=1.5", "--b.seconds=1.5")
    assert code == 0, err
    a, b, c = (execution_of(pipes, n) for n in "abc")
    assert a.metrics["started"] < b.metrics["ended"] and b.metrics["started"] < a.metrics["ended"]
    assert c.metrics["started"] >= max(a.metrics["ended"], b.metrics["ended"])


ON_ERROR = """\
- pipeline:
    name: errors
    nodes:
      - {name: bad, type: execution, step: nap, on-error: ON_ERROR,
         override: {parameters: [{name: seconds, default: 0.1}]}}
      - {name: after-bad, type: execution, step: nap}
      - {name: slow, type: execution, step: nap}
      - {name: after-slow, type: execution, step: nap}
    edges:
      - [bad.dependency.x, after-bad.dependency.x]
      - [slow.dependency.x, after-slow.dependency.x]
"""


@pytest.mark.parametrize(
    ("mode", "code", "expected"),
    [
        ("stop-all", 1, {"bad": "error", "after-bad": "skipped", "slow": "stopped",
                         "after-slow": "skipped"}),
        ("stop-next", 1, {"bad": "error", "after-bad": "skipped", "slow": "complete",
                          "after-slow": "complete"}),
        ("continue", 0, {"bad": "error", "after-bad": "complete", "slow": "complete",
                         "after-slow": "complete"}),
    ],
)
def test_on_error(pipes: Path, cli, mode: str, code: int, expected: dict[str, str]) -> None:  # noqa: ANN001
    write_project(pipes, ON_ERROR.replace("ON_ERROR", mode))
    got = cli("pipeline", "run", "errors", "--bad.fail=true", "--slow.seconds=3",
              "--after-slow.seconds=0.1", "--after-bad.seconds=0.1")
    assert got[0] == code, got[2]
    assert statuses(pipes) == expected
    assert flow(pipes).status.value == ("complete" if mode == "continue" else "error")


def test_on_error_retry_runs_a_failed_node_again(pipes: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    write_project(pipes, ON_ERROR.replace("ON_ERROR", "retry"))
    marker = tmp_path / "failed-once"
    code, _, err = cli("pipeline", "run", "errors", f"--bad.flaky={marker}",
                       "--slow.seconds=0.1", "--after-slow.seconds=0.1", "--after-bad.seconds=0.1")
    assert code == 0, err
    node = flow(pipes).node("bad")
    assert node.status.value == "complete" and node.attempts == 2
    with Client(pipes) as client:
        assert [e.status.value for e in client.executions(step="nap")].count("error") == 1


ACTIONS = """\
- pipeline:
    name: gated
    nodes:
      - name: train
        type: execution
        step: make
        actions:
          - when: node-complete
            if: metadata.score < THRESHOLD
            then: THEN
      - {name: evaluate, type: execution, step: use}
    edges:
      - [train.output.data.txt, evaluate.input.data]
"""


@pytest.mark.parametrize(
    ("threshold", "then", "code", "flow_status", "evaluate"),
    [
        ("0.8", "stop-pipeline", 130, "stopped", "skipped"),
        ("0.8", "error-pipeline", 1, "error", "skipped"),
        ("0.8", "noop", 0, "complete", "complete"),
        ("0.1", "stop-pipeline", 0, "complete", "complete"),
    ],
)
def test_actions_gate_the_pipeline(  # noqa: PLR0913
    pipes: Path, cli, threshold: str, then: str, code: int, flow_status: str, evaluate: str  # noqa: ANN001
) -> None:
    write_project(pipes, ACTIONS.replace("THRESHOLD", threshold).replace("THEN", then))
    got = cli("pipeline", "run", "gated")
    assert got[0] == code, got[2]
    assert flow(pipes).status.value == flow_status
    assert statuses(pipes)["evaluate"] == evaluate
    if then != "noop" and threshold == "0.8":
        assert "metadata.score < 0.8" in flow(pipes).status_detail


CHAIN = """\
- pipeline:
    name: chain
    reuse-executions: true
    nodes:
      - {name: prepare, type: execution, step: make}
      - {name: train, type: execution, step: use}
      - {name: other, type: execution, step: make, override: {parameters: [{name: size, default: 2}]}}
    edges:
      - [prepare.output.data.txt, train.input.data]
"""


def test_reuse_invalidates_exactly_what_changed_downstream(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, CHAIN)
    assert cli("pipeline", "run", "chain")[0] == 0
    assert cli("pipeline", "run", "chain")[0] == 0
    assert statuses(pipes, 2) == {"prepare": "reused", "train": "reused", "other": "reused"}
    # one byte of code of the consumer: only it runs again
    (pipes / "use.py").write_text(USE + "#\n")
    assert cli("pipeline", "run", "chain")[0] == 0
    assert statuses(pipes, 3) == {"prepare": "reused", "train": "complete", "other": "reused"}
    # one parameter of the producer: it and its consumer run again
    assert cli("pipeline", "run", "chain", "--prepare.size=7")[0] == 0
    assert statuses(pipes, 4) == {"prepare": "complete", "train": "complete", "other": "reused"}
    # a byte of the producer's code changes its output: both run again, `other` too
    # (it runs the same make.py), and --no-reuse runs everything
    (pipes / "make.py").write_text(MAKE.replace('"x"', '"y"'))
    assert cli("pipeline", "run", "chain", "--prepare.size=7")[0] == 0
    assert statuses(pipes, 5) == {"prepare": "complete", "train": "complete",
                                  "other": "complete"}
    assert cli("pipeline", "run", "chain", "--prepare.size=7", "--no-reuse")[0] == 0
    assert set(statuses(pipes, 6).values()) == {"complete"}


def test_pipeline_errors_are_clear(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, EDGES + CHAIN)
    code, _, err = cli("pipeline", "run", "edgez")
    assert code == 4 and "edges" in err  # did you mean
    code, _, err = cli("pipeline", "run", "edges", "--nosuch.size=3")
    assert code == 2 and "no node 'nosuch'" in err
    code, _, err = cli("pipeline", "run", "edges", "--param", "sise=3")
    assert code == 2 and "no parameter 'sise'" in err
    code, _, err = cli("pipeline", "run", "edges", "--first.size=abc")
    assert code == 2 and "size" in err
    code, _, err = cli("pipeline", "run", "edges", "--consumer.lr=3")
    assert code != 0 and "also fed by the edge" in err
    assert cli("pipeline", "run", "chain")[0] == 0
    code, _, err = cli("pipeline", "resume", "1")
    assert code != 0 and "complete: there is nothing to resume" in err
    code, _, err = cli("pipeline", "show", "9")
    assert code == 4 and "no pipeline #9" in err


def test_type_mismatched_parameter_edge_is_refused(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, """\
- pipeline:
    name: mismatch
    nodes:
      - {name: a, type: execution, step: use}
      - {name: b, type: execution, step: make}
    edges:
      - [a.parameter.label, b.parameter.size]
""")
    code, _, err = cli("pipeline", "run", "mismatch")
    assert code != 0 and "feeds a string parameter into a integer one" in err


RESUME = """\
- pipeline:
    name: long
    nodes:
      - {name: quick, type: execution, step: nap, override: {parameters: [{name: seconds, default: 0.1}]}}
      - {name: slow, type: execution, step: nap, override: {parameters: [{name: seconds, default: 30}]}}
      - {name: last, type: execution, step: nap, override: {parameters: [{name: seconds, default: 0.1}]}}
    edges:
      - [quick.dependency.x, slow.dependency.x]
      - [slow.dependency.x, last.dependency.x]
"""


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(pipes: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    write_project(pipes, RESUME)
    gate = tmp_path / "gate"
    started = cairn_proc("pipeline", "run", "long", "--detach", f"--slow.gate={gate}")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: statuses(pipes).get("slow") == "running"
             and flow(pipes).node("slow").execution_id is not None
             and execution_of(pipes, "slow").status.value == "running", timeout=60,
             what="slow node running")
    driver = flow(pipes).pid
    slow_before = execution_of(pipes, "slow")
    quick_before = flow(pipes).node("quick").execution_id
    os.kill(driver, signal.SIGKILL)
    wait_for(lambda: not pid_alive(driver), what="driver gone")
    assert execution_of(pipes, "slow").status.value == "running"  # nobody has noticed yet
    shown = cli("pipeline", "ls")[1]
    assert "crashed" in shown
    gate.write_text("open")  # the re-run of `slow` ends at once
    code, out, err = cli("pipeline", "resume", "1")
    assert code == 0, err
    after = flow(pipes)
    assert after.status.value == "complete"
    assert after.node("quick").execution_id == quick_before  # kept
    assert after.node("slow").execution_id != slow_before.id  # ran again
    assert after.node("slow").attempts == 2
    with Client(pipes) as client:
        old = client.execution(slow_before.id)
        assert old.status.value == "crashed"
    assert "keeping quick" in err


def test_stop_a_detached_pipeline(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, RESUME)
    assert cairn_proc("pipeline", "run", "long", "--detach").returncode == 0
    wait_for(lambda: statuses(pipes).get("slow") == "running", timeout=60, what="slow running")
    code, _, err = cli("pipeline", "stop", "1")
    assert code == 0, err
    wait_for(lambda: flow(pipes).status.value == "stopped", timeout=30, what="stopped")
    assert statuses(pipes) == {"quick": "complete", "slow": "stopped", "last": "skipped"}
    time.sleep(0.2)


TASK_NODE = """\
- task:
    name: sizes
    step: make
    type: grid_search
    optimization-target-metric: score
    parameters:
      - name: size
        style: multiple
        rules: {items: [2, 4, 3]}
- pipeline:
    name: sweep-then-use
    nodes:
      - {name: search, type: task, task: sizes}
      - {name: use-best, type: execution, step: use}
    edges:
      - [search.output.data.txt, use-best.input.data]
      - [search.parameter.rate, use-best.parameter.lr]
"""


def test_a_task_node_sweeps_and_passes_on_its_best_trial(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, TASK_NODE)
    code, _, err = cli("pipeline", "run", "sweep-then-use", "--search.rate=0.75")
    assert code == 0, err
    node = flow(pipes).node("search")
    assert node.status.value == "complete" and node.child_flow_id
    ctx = Context.load(pipes)
    try:
        sweep = ctx.store.get_flow(ctx.project_id, "task", node.child_flow_id)
    finally:
        ctx.close()
    assert sorted(n.parameters["size"] for n in sweep.nodes) == [2, 3, 4]
    assert all(n.parameters["rate"] == 0.75 for n in sweep.nodes)  # fixed by the pipeline
    best = execution_of(pipes, "search")
    assert best.parameters["size"] == 4  # the highest score
    use = execution_of(pipes, "use-best")
    assert use.parameters["lr"] == 0.75
    assert [f.size for f in use.inputs] == [4]  # the best trial's output


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("""\
    nodes:
      - {name: a, type: execution, step: make}
      - {name: b, type: execution, step: make}
    edges:
      - [a.parameter.size, b.parameter.size]
      - [b.parameter.size, a.parameter.size]
""", "cycle"),
        ("""\
    nodes:
      - {name: a, type: execution, step: make}
    edges:
      - [nosuch.output.x, a.input.data]
""", "nosuch"),
        ("""\
    nodes:
      - {name: a, type: execution, step: make}
      - {name: b, type: execution, step: use}
    edges:
      - [a.output.data.txt, b.input.nosuch]
""", "nosuch"),
        ("""\
    nodes:
      - {name: a, type: execution, step: make}
      - {name: b, type: execution, step: use}
    edges:
      - [a.parameter.sise, b.parameter.lr]
""", "sise"),
        ("""\
    nodes:
      - name: a
        type: execution
        step: make
        actions:
          - when: node-complete
            if: metadata.score <
            then: stop-pipeline
    edges: []
""", "metadata.score <"),
    ],
    ids=["cycle", "unknown-node", "unknown-input", "unknown-parameter", "bad-expression"],
)
def test_project_file_mistakes_are_located(pipes: Path, cli, pipeline: str, message: str) -> None:  # noqa: ANN001
    write_project(pipes, "- pipeline:\n    name: broken\n" + pipeline)
    code, _, err = cli("pipeline", "run", "broken")
    assert code == 3, err
    assert "cairn.yaml:" in err and message in err
    assert flow_count(pipes) == 0  # nothing stored


def flow_count(root: Path) -> int:
    ctx = Context.load(root)
    try:
        return len(ctx.store.list_flows(ctx.project_id, "pipeline"))
    finally:
        ctx.close()


def test_node_starting_and_node_error_actions_and_command_override(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, """\
- pipeline:
    name: guarded
    nodes:
      - name: big
        type: execution
        step: make
        actions:
          - {when: node-starting, if: parameter.size > 5, then: stop-pipeline}
      - {name: after, type: execution, step: use}
    edges:
      - [big.output.data.txt, after.input.data]
- pipeline:
    name: failing
    nodes:
      - name: broken
        type: execution
        step: make
        on-error: continue
        override:
          command: python -c "import sys; print('overridden'); sys.exit(2)"
        actions:
          - {when: node-error, then: error-pipeline}
      - {name: after, type: execution, step: make}
    edges:
      - [broken.dependency.x, after.dependency.x]
""")
    code, _, err = cli("pipeline", "run", "guarded", "--big.size=3")
    assert code == 0, err
    code, _, err = cli("pipeline", "run", "guarded", "--big.size=9")
    assert code == 130, err
    second = flow(pipes, 2)
    assert second.status.value == "stopped" and "parameter.size > 5" in second.status_detail
    assert second.node("big").execution_id is None  # stopped before anything ran
    code, _, err = cli("pipeline", "run", "failing")
    assert code == 1
    third = flow(pipes, 3)
    assert third.status.value == "error" and "node-error" in third.status_detail
    assert {n.name: n.status.value for n in third.nodes} == {"broken": "error", "after": "skipped"}
    assert "overridden" in cli("logs", str(execution_of(pipes, "broken", 3).counter))[1]


def test_a_required_parameter_can_come_from_an_edge(pipes: Path, cli) -> None:  # noqa: ANN001
    write_project(pipes, """\
- step:
    name: needs
    image: python:3.11
    command: python use.py {parameters}
    parameters:
      - name: lr
        type: float
    inputs:
      - name: data
        optional: true
- pipeline:
    name: fed
    nodes:
      - {name: make, type: execution, step: make}
      - {name: needs, type: execution, step: needs}
    edges:
      - [make.metadata.score, needs.parameter.lr]
""")
    code, _, err = cli("pipeline", "run", "fed", "--make.size=4")
    assert code == 0, err
    assert execution_of(pipes, "needs").parameters == {"lr": 0.4}
    code, _, err = cli("pipeline", "run", "fed", "--make.size=nope")
    assert code == 2 and "size" in err  # static values are still checked before running
