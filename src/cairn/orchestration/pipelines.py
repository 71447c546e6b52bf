"""Running pipelines: a DAG of nodes whose edges carry outputs, inputs, parameters and metadata.

A pipeline run is a *flow* in the metadata store (``kind="pipeline"``) with one flow node per
pipeline node. :func:`create_pipeline` checks everything that can be checked before anything
runs (unknown nodes and parameters, parameter edges whose types disagree, features cairn
cannot run) and stores the blueprint as it is now, so that :func:`resume_pipeline` runs the
same thing later. :class:`PipelineRunner` drives it: a node starts as soon as every node
upstream of it has succeeded; each node's execution is supervised in a thread of the driver,
and the scheduler's allocation decides how many run at once. If the driver dies (even
``kill -9``), its executions' supervisor is gone, so the scheduler's reaper marks them
crashed; resuming keeps completed nodes and runs the others again.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cairn.entities import Execution, Flow, FlowNode, FlowStatus, NodeStatus, Status
from cairn.errors import CairnError, ExecutionError, NotFoundError, ParameterError
from cairn.orchestration.background import HOST, dead_drivers, process_alive
from cairn.orchestration.scheduler import Scheduler, StopSignals
from cairn.store.base import NewFlow, NewFlowNode

if TYPE_CHECKING:
    from cairn.orchestration.context import Context
    from cairn.orchestration.runs import Snapshot
    from cairn.project import Step
    from cairn.project.blueprints import Edge, Pipeline, PipelineNode

KIND = "pipeline"

DATA_EDGES = {("output", "input"), ("input", "input")}
VALUE_EDGES = {("parameter", "parameter"), ("metadata", "parameter")}
ORDER_EDGES = {("dependency", "dependency")}

# Which parameter types an edge may feed into which (an integer is a fine float).
_COMPATIBLE = {
    ("integer", "float"),
    ("integer", "integer"),
    ("float", "float"),
    ("string", "string"),
    ("flag", "flag"),
}

Event = Callable[[str], None]


def _now() -> datetime:
    return datetime.now(UTC)


class PipelineError(ExecutionError):
    """A pipeline that cannot run as asked."""


@dataclass(frozen=True)
class PipelineRequest:
    """What a user asks for: a pipeline and the values they set."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)  # pipeline parameters
    node_parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reuse: bool | None = None  # None: the pipeline's reuse-executions
    retries: int = 1  # attempts after the first for nodes with on-error: retry
    priority: int = 0  # the queue priority of its executions


# -- creating ------------------------------------------------------------------------
def create_pipeline(ctx: Context, request: PipelineRequest) -> Flow:
    """Check the request against the project file and store a new pipeline run."""
    from cairn.project.blueprints import Pipeline

    pipeline: Pipeline = ctx.config.get_pipeline(request.name)
    steps: dict[str, dict[str, Any]] = {}
    tasks: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for node in pipeline.nodes:
        if node.commit:
            problems.append(f"node '{node.name}' pins commit {node.commit!r}; cairn runs the "
                            "working tree's code only")
        step = _node_step(ctx, node, problems)
        if step is not None:
            steps[node.name] = step.to_dict()
        if node.type == "task":
            task = _node_task(ctx, node, problems)
            if task is not None:
                tasks[node.name] = task
        for action in node.actions:
            if "require-approval" in action.then:
                problems.append(f"node '{node.name}': `then: require-approval` needs a human "
                                "approval gate, which cairn does not have yet")
    for edge in pipeline.edges:
        kinds = (edge.source.type, edge.target.type)
        if kinds not in DATA_EDGES | VALUE_EDGES | ORDER_EDGES:
            problems.append(f"edge {edge.source} → {edge.target}: {kinds[0]} → {kinds[1]} edges "
                            "are not supported by cairn yet")
    if problems:
        raise PipelineError(f"pipeline '{pipeline.name}' cannot run: " + "; ".join(problems),
                            "change the pipeline in the project file")
    node_values = _static_parameters(pipeline, request, steps)
    _check_edges(pipeline, steps, request.node_parameters)
    for name, values in node_values.items():
        if name in steps and pipeline.get_node(name).type == "execution":  # type: ignore[union-attr]
            _check_values(steps[name], values, edge_fed=_edge_fed(pipeline, name))
    reuse = pipeline.reuse_executions if request.reuse is None else request.reuse
    return ctx.store.create_flow(NewFlow(
        project_id=ctx.project_id,
        kind=KIND,
        name=pipeline.name,
        definition={"pipeline": pipeline.to_dict(), "steps": steps, "tasks": tasks},
        parameters={"pipeline": dict(request.parameters), "nodes": node_values},
        options={"reuse": bool(reuse), "retries": max(0, int(request.retries)),
                 "priority": int(request.priority)},
        nodes=tuple(NewFlowNode(n.name, n.type) for n in pipeline.nodes),
    ))


def _node_step(ctx: Context, node: PipelineNode, problems: list[str]) -> Step | None:
    if node.type == "deployment":
        return None
    step_name = node.step
    if step_name is None and node.task is not None:
        try:
            step_name = ctx.config.get_task(node.task).step
        except NotFoundError as exc:
            problems.append(f"node '{node.name}': {exc.message}")
            return None
    if step_name is None:
        problems.append(f"node '{node.name}' names no step")
        return None
    try:
        step = ctx.config.get_step(step_name)
    except NotFoundError as exc:
        problems.append(f"node '{node.name}': {exc.message}")
        return None
    return node.override.apply(step) if node.override is not None else step


def _node_task(ctx: Context, node: PipelineNode, problems: list[str]) -> dict[str, Any] | None:
    if node.task is None:
        return {"name": node.name, "step": node.step, "type": "grid_search"}
    try:
        return ctx.config.get_task(node.task).to_dict()
    except NotFoundError as exc:
        problems.append(f"node '{node.name}': {exc.message}")
        return None


def _static_parameters(
    pipeline: Pipeline, request: PipelineRequest, steps: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Parameter values of each node from pipeline parameters and ``--NODE.PARAM``."""
    from cairn.project._check import did_you_mean

    known = {p.name: p for p in pipeline.parameters}
    errors: list[str] = []
    values: dict[str, dict[str, Any]] = {n.name: {} for n in pipeline.nodes}
    for name in request.parameters:
        if name not in known:
            guess = did_you_mean(name, list(known))
            errors.append(f"pipeline '{pipeline.name}' has no parameter '{name}'"
                          + (f" ({guess})" if guess else ""))
    for param in pipeline.parameters:
        value = request.parameters.get(param.name, param.default)
        if value is None:
            continue
        for target in param.targets:
            node, _, rest = target.partition(".")
            kind, _, key = rest.partition(".")
            if node in values and kind == "parameter":
                values[node][key] = value
    for node, given in request.node_parameters.items():
        if node not in values:
            guess = did_you_mean(node, list(values))
            errors.append(f"pipeline '{pipeline.name}' has no node '{node}'"
                          + (f" ({guess})" if guess else ""))
            continue
        values[node].update(given)
    if errors:
        raise ParameterError("; ".join(errors),
                             f"see `cairn pipeline run {pipeline.name} --help`")
    return values


def _edge_fed(pipeline: Pipeline, node: str) -> set[str]:
    return {e.target.key for e in pipeline.edges
            if e.target.node == node and e.target.type == "parameter"}


def _check_values(step_dict: dict[str, Any], values: Mapping[str, Any], *, edge_fed: set[str]) -> None:
    """Type-check the static values of a node now (edge-fed ones are checked when known)."""
    from cairn.project import Step, resolve_parameters

    # A parameter an edge will provide may have no value yet: optional for this check.
    data = dict(step_dict)
    data["parameters"] = [dict(p, optional=True) if p.get("name") in edge_fed else p
                          for p in step_dict.get("parameters", [])]
    static = {k: v for k, v in values.items() if k not in edge_fed}
    resolve_parameters(Step.from_dict(data), static)


def _check_edges(
    pipeline: Pipeline,
    steps: Mapping[str, dict[str, Any]],
    node_parameters: Mapping[str, Mapping[str, Any]],
) -> None:
    from cairn.project import Step

    problems: list[str] = []
    by_node = {n: Step.from_dict(d) for n, d in steps.items()}
    for edge in pipeline.edges:
        src, dst = edge.source, edge.target
        if (src.type, dst.type) == ("parameter", "parameter"):
            a, b = by_node.get(src.node), by_node.get(dst.node)
            pa = next((p for p in a.parameters if p.name == src.key), None) if a else None
            pb = next((p for p in b.parameters if p.name == dst.key), None) if b else None
            if pa is not None and pb is not None and (pa.type, pb.type) not in _COMPATIBLE:
                problems.append(f"edge {src} → {dst} feeds a {pa.type} parameter into a "
                                f"{pb.type} one")
        if dst.type == "parameter" and dst.key in node_parameters.get(dst.node, {}):
            problems.append(f"{dst.node}.{dst.key} is set on the command line and also fed by "
                            f"the edge {src} → {dst}")
    if problems:
        raise PipelineError("; ".join(problems),
                            "fix the edge in the project file or drop the value you set")


# -- querying ------------------------------------------------------------------------
def get_pipeline(ctx: Context, ref: str | int) -> Flow:
    reap_pipelines(ctx)
    return ctx.store.get_flow(ctx.project_id, KIND, ref)


def list_pipelines(ctx: Context, *, limit: int | None = None) -> list[Flow]:
    reap_pipelines(ctx)
    return ctx.store.list_flows(ctx.project_id, KIND, limit=limit)


def reap_pipelines(ctx: Context) -> int:
    """Mark pipelines of this host whose driving process died as crashed."""
    count = 0
    for flow in dead_drivers(ctx, KIND):
        if ctx.store.update_flow(flow.id, expect=[FlowStatus.RUNNING],
                                 status=FlowStatus.CRASHED, ended_at=_now(),
                                 status_detail=f"its driver (pid {flow.pid}) ended "
                                 "unexpectedly; `cairn pipeline resume` continues it"):
            count += 1
    return count


def upstream_of(pipeline: dict[str, Any]) -> dict[str, set[str]]:
    """Each node's direct upstream nodes, from a stored pipeline definition."""
    ups: dict[str, set[str]] = {n["name"]: set() for n in pipeline.get("nodes", [])}
    for edge in _edges(pipeline):
        ups.setdefault(edge.target.node, set()).add(edge.source.node)
    return ups


def _edges(pipeline: dict[str, Any]) -> list[Edge]:
    from cairn.project.blueprints import Pipeline

    return Pipeline.from_dict(pipeline).edges


# -- stopping, resuming, detaching ---------------------------------------------------
def stop_pipeline(ctx: Context, ref: str | int) -> Flow:
    """Ask the driver to stop; stop the node executions now, in case the driver is gone."""
    flow = get_pipeline(ctx, ref)
    if flow.status.is_final:
        raise PipelineError(f"pipeline #{flow.counter} already ended ({flow.status})",
                            "only a running pipeline can be stopped")
    ctx.store.request_flow_stop(flow.id)
    scheduler = Scheduler(ctx)
    for node in flow.nodes:
        if node.status == NodeStatus.RUNNING and node.child_flow_id:
            ctx.store.request_flow_stop(node.child_flow_id)
        elif node.status == NodeStatus.RUNNING and node.execution_id:
            execution = ctx.store.get_execution(ctx.project_id, node.execution_id)
            if not execution.status.is_final:
                scheduler.stop(execution)
    if flow.status == FlowStatus.CREATED or not (flow.host == HOST and flow.pid and process_alive(flow.pid)):
        _finish_without_driver(ctx, flow, FlowStatus.STOPPED, "stopped")
    return ctx.store.get_flow(ctx.project_id, KIND, flow.id)


def _finish_without_driver(ctx: Context, flow: Flow, status: FlowStatus, detail: str) -> None:
    for node in flow.nodes:
        if not node.status.is_final:
            ctx.store.update_flow_node(flow.id, node.name, status=NodeStatus.SKIPPED,
                                       detail=detail, ended_at=_now())
    ctx.store.update_flow(flow.id, expect=[FlowStatus.CREATED, FlowStatus.RUNNING],
                          status=status, ended_at=_now(), status_detail=detail)


def prepare_resume(ctx: Context, ref: str | int) -> Flow:
    """Make a crashed, failed or stopped pipeline runnable again; keep what succeeded."""
    Scheduler(ctx).reap()  # executions whose supervisor (the dead driver) is gone: crashed
    flow = get_pipeline(ctx, ref)
    if flow.status == FlowStatus.COMPLETE:
        raise PipelineError(f"pipeline #{flow.counter} is complete: there is nothing to resume",
                            f"run it again with `cairn pipeline run {flow.name}`")
    if flow.status == FlowStatus.RUNNING:
        raise PipelineError(
            f"pipeline #{flow.counter} is still running (driven by pid {flow.pid} on {flow.host})",
            f"stop it first with `cairn pipeline stop {flow.counter}`")
    for node in flow.nodes:
        if node.status.succeeded:
            continue
        detail = node.detail
        if node.status == NodeStatus.RUNNING:
            detail = "its execution crashed with the pipeline's driver; run again on resume"
            if node.execution_id:
                ctx.store.get_execution(ctx.project_id, node.execution_id)  # exists
        ctx.store.update_flow_node(flow.id, node.name, status=NodeStatus.PENDING,
                                   detail=detail, ended_at=None)
    ctx.store.update_flow(flow.id, status=FlowStatus.CREATED, ended_at=None,
                          status_detail=f"resumed after: {flow.status_detail or flow.status}")
    return ctx.store.get_flow(ctx.project_id, KIND, flow.id)


def start_detached(ctx: Context, flow: Flow) -> int:
    """Drive the pipeline from a background process; returns its pid."""
    from cairn.orchestration.background import start_background

    return start_background(ctx, "cairn.orchestration.pipeline_driver", flow.id,
                            f"pipeline-{flow.id}.log")


# -- driving -------------------------------------------------------------------------
@dataclass
class _Done:
    node: str
    execution: Execution | None
    reused: bool = False
    error: str | None = None
    halt: tuple[FlowStatus, str] | None = None  # a node-starting action stopped the pipeline


class PipelineRunner:
    """Drives one pipeline run to its end from this process."""

    def __init__(self, ctx: Context, flow: Flow, *, on_event: Event | None = None) -> None:
        from cairn.project.blueprints import Pipeline

        self.ctx = ctx
        self.store = ctx.store
        self.flow = flow
        self.pipeline = Pipeline.from_dict(flow.definition["pipeline"])
        self.nodes = {n.name: n for n in self.pipeline.nodes}
        self.upstream = upstream_of(flow.definition["pipeline"])
        self.downstream: dict[str, set[str]] = {n: set() for n in self.nodes}
        for node, ups in self.upstream.items():
            for up in ups:
                self.downstream[up].add(node)
        self.on_event = on_event or (lambda _text: None)
        self.done: queue.Queue[_Done] = queue.Queue()
        self.running: dict[str, threading.Thread] = {}
        self.snapshot: Snapshot | None = None
        self.halted: tuple[FlowStatus, str] | None = None
        self.failures: list[str] = []
        self.attempts: dict[str, int] = {}
        self.slots: dict[str, threading.Semaphore] = {}  # by environment
        self.lock = threading.Lock()
        self.executions: dict[str, Execution] = {}  # final executions of this run's nodes
        self.outputs: dict[str, list[Any]] = {}  # their outputs (datums), by execution id
        self.nodes_state = {n.name: n for n in flow.nodes}
        self.stop_checked = 0.0

    # state ---------------------------------------------------------------------------
    # The driver is the only writer of its nodes while it runs, so it keeps them in memory
    # and writes each change through; the database is read again only for a stop request.
    def _state(self) -> dict[str, FlowNode]:
        with self.lock:
            return dict(self.nodes_state)

    def _set(self, name: str, **fields: Any) -> None:
        self.store.update_flow_node(self.flow.id, name, **fields)
        with self.lock:
            self.nodes_state[name] = replace(self.nodes_state[name], **fields)

    def _stop_requested(self) -> bool:
        now = time.monotonic()
        if now - self.stop_checked < 0.2:
            return False
        self.stop_checked = now
        return self.store.flow_stop_requested(self.flow.id)

    def run(self) -> Flow:
        from cairn.orchestration.runs import Snapshot

        if not self.store.update_flow(self.flow.id, expect=[FlowStatus.CREATED],
                                      status=FlowStatus.RUNNING, host=HOST, pid=os.getpid(),
                                      started_at=self.flow.started_at or _now()):
            raise PipelineError(f"pipeline #{self.flow.counter} is {self.flow.status}, not ready "
                                "to run", "`cairn pipeline resume` continues a stopped one")
        self.on_event(f"pipeline #{self.flow.counter} {self.flow.name} started")
        try:
            self.snapshot = Snapshot.capture(self.ctx)
            with StopSignals() as signals:
                self._loop(lambda: signals.requested)
        except BaseException as exc:
            self._stop_running()
            self.store.update_flow(self.flow.id, status=FlowStatus.CRASHED, ended_at=_now(),
                                   status_detail=f"cairn failed while driving it: {exc!r}")
            raise
        return self._finish()

    def _loop(self, interrupted: Callable[[], bool]) -> None:
        stopping = False
        while True:
            state = self._state()
            if not stopping and (interrupted() or self._stop_requested()):
                stopping = True
                self.halted = self.halted or (FlowStatus.STOPPED, "stopped on request")
                self._stop_running()
            if self.halted is None:
                for name in self._ready(state):
                    self._launch(name, state[name])
            if not self.running:
                break
            try:
                item = self.done.get(timeout=0.2)
            except queue.Empty:
                continue
            self._settle(item)
            while True:  # take every other finished node before looking again
                try:
                    self._settle(self.done.get_nowait())
                except queue.Empty:
                    break
        for name, node in self._state().items():
            if not node.status.is_final:
                reason = self.halted[1] if self.halted else "an upstream node did not succeed"
                self._set(name, status=NodeStatus.SKIPPED, detail=reason, ended_at=_now())

    def _ready(self, state: Mapping[str, FlowNode]) -> list[str]:
        ready = []
        for name, node in state.items():
            if node.status != NodeStatus.PENDING or name in self.running:
                continue
            ups = [state[u] for u in self.upstream.get(name, ())]
            if all(u.status.succeeded or (u.status.is_final and u.status != NodeStatus.SKIPPED
                                          and self.nodes[u.name].on_error == "continue")
                   for u in ups):
                if any(u.status == NodeStatus.SKIPPED for u in ups):
                    continue
                ready.append(name)
        return ready

    def _launch(self, name: str, node: FlowNode) -> None:
        self.attempts[name] = node.attempts + 1
        thread = threading.Thread(target=self._run_node, args=(name,), daemon=True,
                                  name=f"pipeline-node-{name}")
        self.running[name] = thread
        thread.start()

    def _run_node(self, name: str) -> None:
        from cairn.orchestration.runs import RunRequest, create_or_reuse, supervise
        from cairn.project import Step

        node = self.nodes[name]
        try:
            if node.type == "deployment":
                self.done.put(_Done(name, None, error="deployment nodes cannot run yet: cairn "
                                    "does not serve models yet"))
                return
            if node.type == "task":
                self.done.put(self._run_task_node(name))
                return
            step = Step.from_dict(self.flow.definition["steps"][name])
            parameters, inputs = self._values_for(name, step)
            from cairn.project import resolve_parameters

            typed = resolve_parameters(step, parameters)  # as the execution will see them
            halt = self._actions(name, "node-starting", {"parameter": typed, "metadata": {}})
            if halt is not None:
                self.done.put(_Done(name, None, halt=halt))
                return
            request = RunRequest(step=step.name, parameters=parameters, inputs=inputs,
                                 reuse=bool(self.flow.options.get("reuse")),
                                 priority=int(self.flow.options.get("priority") or 0),
                                 title=f"pipeline #{self.flow.counter} {self.flow.name}: {name}")
            execution, reused = create_or_reuse(self.ctx, request, step=step,
                                                snapshot=self.snapshot, enqueue=False)
            if not reused:  # a reused one is written once, when settled
                self._set(name, status=NodeStatus.RUNNING, attempts=self.attempts[name],
                          started_at=_now(), detail=None, execution_id=execution.id)
            self.on_event(f"{name}: " + (f"reused #{execution.counter}" if reused
                                         else f"#{execution.counter} started"))
            if not reused:
                # At most as many supervisors wait for a slot as this machine has: the
                # others wait here (created, not yet queued), not polling the database.
                with self._slots_of(execution):
                    execution = supervise(self.ctx, Scheduler(self.ctx).enqueue(execution))
            self.done.put(_Done(name, execution, reused=reused))
        except CairnError as exc:
            self.done.put(_Done(name, None, error=exc.message))
        except Exception as exc:  # noqa: BLE001 - a node's failure must not kill the driver
            self.done.put(_Done(name, None, error=f"cairn failed to run it: {exc!r}"))

    def _slots_of(self, execution: Execution) -> threading.Semaphore:
        """How many of its nodes the driver lets wait for a start at once in the
        execution's environment: this machine's CPUs for the local backend; a cluster's
        max-parallel (else 64) for Ray, which places them itself."""
        from cairn.orchestration.environments import load_environments
        from cairn.orchestration.scheduler import local_capacity

        name = execution.machine_environment
        with self.lock:
            if name not in self.slots:
                if execution.backend == "local":
                    size = int(local_capacity(self.ctx).resources.cpus)
                else:
                    env = load_environments(self.ctx.settings).get(name)
                    size = env.max_parallel if env and env.max_parallel else 64
                self.slots[name] = threading.Semaphore(max(1, size))
            return self.slots[name]

    def _run_task_node(self, name: str) -> _Done:
        """A sweep over the node's step; its best trial stands for the node downstream.

        Values the node gets (pipeline parameters, edges) are fixed in the sweep; a list
        (say, list-valued metadata) becomes a ``multiple`` variant: one trial per item.
        """
        from cairn.orchestration import sweeps
        from cairn.project import Step
        from cairn.project.blueprints import Task, VariantParameter

        step = Step.from_dict(self.flow.definition["steps"][name])
        parameters, inputs = self._values_for(name, step)
        task = Task.from_dict(self.flow.definition["tasks"][name])
        spec = sweeps.SweepSpec.from_task(task)
        fixed = [VariantParameter(k, "multiple", {"items": list(v)}) if isinstance(v, list)
                 else VariantParameter(k, "single", {"value": v}) for k, v in parameters.items()]
        spec.variants = [v for v in spec.variants if v.name not in parameters] + fixed
        spec.inputs = {**spec.inputs, **inputs}
        spec.reuse = spec.reuse or bool(self.flow.options.get("reuse"))
        spec.priority = spec.priority or int(self.flow.options.get("priority") or 0)
        child, snapshot = sweeps.create_sweep(self.ctx, spec)
        self._set(name, status=NodeStatus.RUNNING, attempts=self.attempts[name],
                  started_at=_now(), detail=None, child_flow_id=child.id)
        self.on_event(f"{name}: task #{child.counter} started")
        final = sweeps.run_sweep(self.ctx, child, snapshot=snapshot)
        best = (final.result or {}).get("best") or {}
        execution = (self.store.get_execution(self.flow.project_id, best["execution_id"])
                     if best.get("execution_id") else None)
        if execution is not None:
            self._set(name, execution_id=execution.id)
        if final.status != FlowStatus.COMPLETE or execution is None:
            return _Done(name, None, error=f"task #{final.counter} {final.status}"
                         + (f": {final.status_detail}" if final.status_detail else ""))
        return _Done(name, execution)

    def _values_for(self, name: str, step: Step) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The node's parameters and inputs, with what its edges carry from upstream."""
        node = self.nodes[name]
        parameters = dict(self.flow.parameters.get("nodes", {}).get(name, {}))
        edge_inputs: dict[str, list[str]] = {}
        for edge in self.pipeline.edges:
            if edge.target.node != name:
                continue
            source = self._source_execution(edge.source.node)
            kinds = (edge.source.type, edge.target.type)
            if kinds == ("parameter", "parameter"):
                if source is None or edge.source.key not in source.parameters:
                    raise PipelineError(f"edge {edge.source} → {edge.target}: node "
                                        f"'{edge.source.node}' has no parameter "
                                        f"'{edge.source.key}'")
                parameters[edge.target.key] = source.parameters[edge.source.key]
            elif kinds == ("metadata", "parameter"):
                if source is None or edge.source.key not in source.metrics:
                    raise PipelineError(f"edge {edge.source} → {edge.target}: node "
                                        f"'{edge.source.node}' logged no '{edge.source.key}'")
                parameters[edge.target.key] = source.metrics[edge.source.key]
            elif kinds == ("output", "input"):
                if source is None:
                    continue
                uris = self._output_uris(source, edge.source.key)
                if not uris:
                    raise PipelineError(
                        f"edge {edge.source} → {edge.target}: execution #{source.counter} has "
                        f"no outputs matching '{edge.source.key}'")
                edge_inputs.setdefault(edge.target.key, []).extend(uris)
            elif kinds == ("input", "input"):
                if source is None:
                    continue
                uris = [f.uri if f.datum_id is None else f"datum://{f.datum_id}"
                        for f in source.inputs if fnmatch.fnmatchcase(f.input_name, edge.source.key)]
                edge_inputs.setdefault(edge.target.key, []).extend(dict.fromkeys(uris))
        inputs: dict[str, list[str]] = {}
        for spec in step.inputs:
            if spec.name not in edge_inputs:
                continue
            fed = edge_inputs[spec.name]
            inputs[spec.name] = (list(spec.default or []) + fed
                                 if node.edge_merge_mode == "append" else fed)
        unknown = sorted(set(edge_inputs) - {s.name for s in step.inputs})
        if unknown:
            raise PipelineError(f"node '{name}': step '{step.name}' has no input '{unknown[0]}'")
        return parameters, inputs

    def _source_execution(self, node: str) -> Execution | None:
        state = self._state()[node]
        if state.execution_id is None:
            return None
        with self.lock:
            cached = self.executions.get(state.execution_id)
        if cached is None:  # from before a resume
            cached = self.store.get_execution(self.flow.project_id, state.execution_id)
            with self.lock:
                self.executions[cached.id] = cached
        return cached

    def _output_uris(self, execution: Execution, pattern: str) -> list[str]:
        """Outputs whose name matches: ``*`` matches across folders here, as in Valohai."""
        with self.lock:
            datums = self.outputs.get(execution.id)
        if datums is None:
            datums = sorted(self.store.list_datums(execution.project_id,
                                                   execution_id=execution.id),
                            key=lambda d: d.name)
            with self.lock:
                self.outputs[execution.id] = datums
        return [f"datum://{d.id}" for d in datums if fnmatch.fnmatchcase(d.name, pattern)]

    def _actions(self, name: str, when: str, names: dict[str, Any]) -> tuple[FlowStatus, str] | None:
        from cairn.project.expressions import ExpressionError, MissingValue, evaluate

        for action in self.nodes[name].actions:
            if when not in action.when:
                continue
            try:
                met = all(bool(evaluate(cond, names)) for cond in action.condition)
            except MissingValue:
                met = False
            except ExpressionError as exc:
                raise PipelineError(f"node '{name}': action `if` {exc}") from exc
            if not met:
                continue
            why = f"node '{name}' {when}: " + (" and ".join(action.condition) or "always")
            for then in action.then:
                self.on_event(f"{name}: action {then} ({why})")
                if then == "stop-pipeline":
                    return FlowStatus.STOPPED, f"{why} → stop-pipeline"
                if then == "error-pipeline":
                    return FlowStatus.ERROR, f"{why} → error-pipeline"
        return None

    def _settle(self, item: _Done) -> None:
        name = item.node
        self.running.pop(name, None)
        node = self.nodes[name]
        execution = item.execution
        if execution is not None and execution.status.is_final:
            with self.lock:  # final: what downstream edges read from it never changes
                self.executions[execution.id] = execution
        if item.halt is not None:
            self._set(name, status=NodeStatus.SKIPPED, detail=item.halt[1], ended_at=_now())
            self._halt(*item.halt)
            return
        if execution is not None and execution.status == Status.COMPLETE:
            status = NodeStatus.REUSED if item.reused else NodeStatus.COMPLETE
            if item.reused:
                at = _now()
                self._set(name, status=status, attempts=self.attempts[name], started_at=at,
                          ended_at=at, execution_id=execution.id,
                          detail=f"reused #{execution.counter}")
            else:
                self._set(name, status=status, ended_at=_now(), detail=None)
            if not item.reused:
                self.on_event(f"{name}: {status} (#{execution.counter})")
            halt = self._actions(name, "node-complete", {"parameter": execution.parameters,
                                                         "metadata": execution.metrics})
            if halt is not None:
                self._halt(*halt)
            return
        if execution is not None:
            status = {Status.STOPPED: NodeStatus.STOPPED,
                      Status.CRASHED: NodeStatus.CRASHED}.get(execution.status, NodeStatus.ERROR)
            detail = f"#{execution.counter} {execution.status}: {execution.status_detail or ''}".rstrip(": ")
        else:
            status, detail = NodeStatus.ERROR, item.error or "it failed"
        state = self._state()[name]
        attempts = self.attempts.get(name, state.attempts)
        self.on_event(f"{name}: {status} ({detail})")
        if self.halted is not None:  # stopping anyway: record and move on
            self._set(name, status=status, detail=detail, ended_at=_now(), attempts=attempts)
            return
        names = {"parameter": execution.parameters if execution else {},
                 "metadata": execution.metrics if execution else {}}
        if node.on_error == "retry" and attempts <= int(self.flow.options.get("retries", 1)):
            self._set(name, status=NodeStatus.PENDING, attempts=attempts,
                      detail=f"retrying after: {detail}")
            self.on_event(f"{name}: retrying (attempt {attempts + 1})")
            return
        self._set(name, status=status, detail=detail, ended_at=_now(), attempts=attempts)
        halt = self._actions(name, "node-error", names)
        if halt is not None:
            self._halt(*halt)
            return
        self.failures.append(name)
        if node.on_error == "continue":
            return
        if node.on_error == "stop-next":
            for down in self._all_downstream(name):
                self._set(down, status=NodeStatus.SKIPPED, ended_at=_now(),
                          detail=f"upstream node '{name}' failed (on-error: stop-next)")
            return
        self._halt(FlowStatus.ERROR, f"node '{name}' failed: {detail}")

    def _all_downstream(self, name: str) -> list[str]:
        seen: list[str] = []
        todo = list(self.downstream.get(name, ()))
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.append(node)
                todo.extend(self.downstream.get(node, ()))
        return seen

    def _halt(self, status: FlowStatus, reason: str) -> None:
        if self.halted is None:
            self.halted = (status, reason)
            self._stop_running()

    def _stop_running(self) -> None:
        scheduler = Scheduler(self.ctx)
        for node in self._state().values():
            if node.status == NodeStatus.RUNNING and node.child_flow_id:
                self.store.request_flow_stop(node.child_flow_id)  # a sweep: its driver stops
                continue
            if node.status == NodeStatus.RUNNING and node.execution_id:
                execution = self.store.get_execution(self.flow.project_id, node.execution_id)
                if not execution.status.is_final:
                    try:
                        scheduler.stop(execution)
                    except ExecutionError:
                        pass  # it ended meanwhile

    def _finish(self) -> Flow:
        state = self._state()
        if self.halted is not None:
            status, detail = self.halted
        else:
            failed = [n for n, s in state.items() if not s.status.succeeded]
            tolerated = [n for n in failed if self.nodes[n].on_error == "continue"
                         and state[n].status != NodeStatus.SKIPPED]
            if not failed:
                status, detail = FlowStatus.COMPLETE, None
            elif set(failed) == set(tolerated):
                status = FlowStatus.COMPLETE
                detail = f"{len(failed)} node(s) failed with on-error: continue: {', '.join(failed)}"
            else:
                status = FlowStatus.ERROR
                detail = "node(s) did not succeed: " + ", ".join(failed)
        self.store.update_flow(self.flow.id, status=status, ended_at=_now(), status_detail=detail)
        final = self.store.get_flow(self.flow.project_id, KIND, self.flow.id)
        self.on_event(f"pipeline #{final.counter} {final.status}"
                      + (f": {final.status_detail}" if final.status_detail else ""))
        return final


def run_pipeline(ctx: Context, flow: Flow, *, on_event: Event | None = None) -> Flow:
    """Drive ``flow`` (created or prepared for resuming) to its end in this process."""
    return PipelineRunner(ctx, flow, on_event=on_event).run()


def exit_code_for(flow: Flow) -> int:
    return {FlowStatus.COMPLETE: 0, FlowStatus.STOPPED: 130, FlowStatus.CRASHED: 70}.get(
        flow.status, 1)


def layers(flow: Flow) -> list[list[str]]:
    """The nodes in rows: each node one row below its deepest upstream node."""
    ups = upstream_of(flow.definition["pipeline"])
    depth: dict[str, int] = {}

    def visit(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((visit(u) for u in ups.get(node, ())), default=-1)
        return depth[node]

    order = [n.name for n in flow.nodes]
    for name in order:
        visit(name)
    rows: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in order:
        rows[depth[name]].append(name)
    return rows


__all__ = [
    "PipelineError",
    "PipelineRequest",
    "PipelineRunner",
    "create_pipeline",
    "exit_code_for",
    "get_pipeline",
    "layers",
    "list_pipelines",
    "prepare_resume",
    "run_pipeline",
    "start_detached",
    "stop_pipeline",
    "upstream_of",
]
