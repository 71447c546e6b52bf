"""Sweeps (tasks): many executions of one step over a parameter space, driven to the end.

A sweep is a flow of kind ``task`` whose nodes are its trials. :func:`create_sweep`
checks everything a user can get wrong (the space, the type, the target, the stop
condition, the trials' parameters and inputs) before anything is stored, and stores the
flow with every planned trial ``pending`` (a Bayesian sweep adds its trials as it asks
for them). :func:`run_sweep` drives it: it keeps up to ``parallel`` trials running, each
supervised by a thread of this process (so if the driver dies, its trials are reaped as
crashed), and between polls it

- reads each running trial's live metrics and reports the target metric per step to an
  Optuna study whose pruner (median rule or successive halving) may prune it: the
  trial is stopped, recorded ``pruned`` with the reason, and its slot goes to the next;
- evaluates the stop condition over each trial's latest metrics: once one meets it, the
  other trials are stopped and no more are started;
- applies ``on-child-error`` when a trial fails;
- honours ``cairn task stop`` (a flag in the store) and SIGINT/SIGTERM.

At the end it picks the best trial by the target metric and records it in the flow's
``result``. A target metric that no trial reported is said there (with the names that
were reported), not raised.

Scores are "higher is better" throughout: the metric itself when maximizing, its
negation when minimizing, and minus its distance to ``optimization-target-value`` when
one is given.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cairn.entities import Execution, Flow, FlowNode, FlowStatus, NodeStatus, Status
from cairn.errors import CairnError, ConfigError, ExecutionError, ParameterError
from cairn.orchestration import spaces
from cairn.project.blueprints import ON_CHILD_ERROR, PRUNERS, VariantParameter
from cairn.store.base import NewFlow, NewFlowNode

if TYPE_CHECKING:
    from cairn.orchestration.context import Context
    from cairn.store.base import MetadataStore
    from cairn.orchestration.runs import Snapshot
    from cairn.project import Step
    from cairn.project.blueprints import Task

log = logging.getLogger(__name__)

KIND = "task"
POLL_SECONDS = 0.25
TPE_STARTUP_MAX = 20  # Valohai seeds TPE with (up to) 20 random trials
_MINIMIZED_WORDS = {"loss", "error", "err", "mse", "mae", "rmse", "perplexity", "wer", "cer",
                    "regret", "cost"}

EventCallback = Callable[[str], None]


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- what a sweep is -------------------------------------------------------------------


@dataclass
class SweepSpec:
    """Everything a sweep runs with, stored as its flow's ``definition``.

    ``name`` is the task's name (a task of the project file) or None for a sweep of a
    step described on the command line. ``direction`` None means: guessed from the
    metric's name (``loss``, ``error``... minimize; anything else maximize).
    """

    step: str
    type: str = "grid_search"
    name: str | None = None
    variants: list[VariantParameter] = field(default_factory=list)
    parameter_sets: list[dict[str, Any]] = field(default_factory=list)
    execution_count: int | None = None
    batch_size: int | None = None
    parallel: int | None = None
    target_metric: str | None = None
    target_value: float | None = None
    direction: str | None = None
    on_child_error: str = "continue-and-complete"
    stop_condition: str | None = None
    prune: str = "none"
    reuse: bool = False
    priority: int = 0  # the queue priority of its trials
    environment: str | None = None  # machine type of its trials; None: the step's
    seed: int | None = None
    inputs: dict[str, list[str]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_task(cls, task: Task) -> SweepSpec:
        """The sweep a task of the project file describes."""
        return cls(
            step=task.step,
            type=task.type or "grid_search",
            name=task.name,
            variants=list(task.parameters),
            parameter_sets=[dict(s) for s in task.parameter_sets],
            execution_count=task.execution_count,
            batch_size=task.execution_batch_size,
            parallel=task.maximum_queued_executions,
            target_metric=task.optimization_target_metric,
            target_value=task.optimization_target_value,
            on_child_error=task.on_child_error or "continue-and-complete",
            stop_condition=task.stop_condition,
            reuse=task.reuse_children,
            prune=task.prune or "none",
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["variants"] = [
            {"name": v.name, "style": v.style, "rules": dict(v.rules)} for v in self.variants]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        values = dict(data)
        values["variants"] = [VariantParameter(name=v["name"], style=v["style"],
                                               rules=dict(v.get("rules") or {}))
                              for v in values.get("variants") or []]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def title(self) -> str:
        return self.name or self.step

    @property
    def maximize(self) -> bool:
        return (self.direction or guess_direction(self.target_metric or "")) == "maximize"

    def score(self, value: float) -> float:
        """``value`` of the target metric as a score, higher is better."""
        if self.target_value is not None:
            return -abs(value - self.target_value)
        return value if self.maximize else -value

    def describe_goal(self) -> str:
        if not self.target_metric:
            return "no target metric"
        if self.target_value is not None:
            return f"{self.target_metric} closest to {self.target_value:g}"
        return f"{'maximize' if self.maximize else 'minimize'} {self.target_metric}"


def guess_direction(metric: str) -> str:
    """``minimize`` for names like loss, val_loss, error_rate, rmse; else ``maximize``."""
    words = set(re.split(r"[^a-z0-9]+", metric.lower()))
    return "minimize" if words & _MINIMIZED_WORDS else "maximize"


@dataclass
class _Checked:
    spec: SweepSpec
    step: Step
    dims: list[spaces.Dimension]
    trials: list[dict[str, Any]] | None  # None: asked from TPE as the sweep goes
    parallel: int
    total: int


def check_sweep(ctx: Context, spec: SweepSpec) -> _Checked:
    """Check ``spec`` against the project; :class:`ParameterError` etc. saying what to fix."""
    from cairn.project import resolve_parameters
    from cairn.project.expressions import ExpressionError, compile_expression

    spec.type = spaces.normalize_type(spec.type or "grid_search")
    step = ctx.config.get_step(spec.step)
    where = f"task '{spec.name}'" if spec.name else f"the sweep of step '{spec.step}'"
    if spec.on_child_error not in ON_CHILD_ERROR:
        normalized = spec.on_child_error.strip().lower().replace("_", "-")
        if normalized not in ON_CHILD_ERROR:
            raise ParameterError(f"unknown on-child-error '{spec.on_child_error}'",
                                 f"use one of {', '.join(ON_CHILD_ERROR)}")
        spec.on_child_error = normalized
    if spec.prune not in PRUNERS:
        raise ParameterError(f"unknown pruner '{spec.prune}'", f"use one of {', '.join(PRUNERS)}")
    if spec.direction is not None and spec.direction not in ("maximize", "minimize"):
        raise ParameterError(f"unknown direction '{spec.direction}'", "maximize or minimize")
    for key in ("execution_count", "parallel", "batch_size"):
        value = getattr(spec, key)
        if value is not None and value < 1:
            raise ParameterError(f"{key.replace('_', '-')} must be at least 1, got {value}")
    if spec.stop_condition is not None:
        try:
            compile_expression(spec.stop_condition)
        except ExpressionError as exc:
            raise ParameterError(
                f"the stop condition of {where} cannot be used: {exc}",
                "write it like `metadata.accuracy > 0.98` (names: metadata.KEY, parameter.NAME)",
            ) from None
    if spec.type == "bayesian_tpe" and not spec.target_metric:
        raise ParameterError(
            f"{where} is a bayesian_tpe search and needs a target metric to optimize",
            "set `optimization-target-metric` in the task, or pass --target METRIC",
        )
    if spec.prune != "none" and not spec.target_metric:
        raise ParameterError(
            f"pruning ({spec.prune}) compares trials by a metric, and {where} has none",
            "pass --target METRIC (a metric the step logs per step/epoch)",
        )
    if spec.type == "bayesian_tpe" or spec.prune != "none":
        _optuna()
    if spec.seed is None and spec.type in ("random_search", "bayesian_tpe"):
        spec.seed = random.randrange(2**31)  # recorded, so the plan can be repeated
    names = [p.name for p in step.parameters]
    for variant in spec.variants:
        if variant.name not in names:
            resolve_parameters(step, {variant.name: None})  # raises with did-you-mean
    dims = spaces.dimensions(spec.variants, where=where)
    trials = spaces.plan(spec.type, dims, parameter_sets=spec.parameter_sets,
                         count=spec.execution_count, seed=spec.seed, where=where)
    if trials is not None:
        typed = []
        for i, values in enumerate(trials, 1):
            try:
                resolved = resolve_parameters(step, values)
            except ParameterError as exc:
                raise ParameterError(f"trial {i} of {where} ({_show(values)}): {exc.message}",
                                     exc.hint) from None
            typed.append({k: resolved[k] for k in values})
        trials = typed
    else:
        for dim in dims:  # every value (or both ends of a range) must be acceptable
            probes = list(dim.values or ()) if not dim.continuous else [dim.low, dim.high]
            for probe in probes:
                if dim.integer and dim.continuous:
                    probe = int(probe)  # type: ignore[arg-type]
                resolve_parameters(step, {dim.name: probe})
    total = len(trials) if trials is not None else int(spec.execution_count or 0)
    parallel = min(spec.parallel or default_parallel(ctx, step), max(total, 1))
    return _Checked(spec, step, dims, trials, max(parallel, 1), total)


def default_parallel(ctx: Context, step: Step) -> int:
    """How many trials of ``step`` fit on this machine at once."""
    from cairn.orchestration.scheduler import local_capacity

    cap = local_capacity(ctx).resources
    declared = step.resources or {}
    cpus = float(declared.get("cpus") or 1.0)
    gpus = int(declared.get("gpus") or 0)
    fit = int(cap.cpus // cpus) if cpus > 0 else 1
    if gpus:
        fit = min(fit, cap.gpus // gpus)
    return max(fit, 1)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "Bayesian search and pruning need optuna, which is not installed",
            "pip install 'cairn[sweeps]'",
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def create_sweep(ctx: Context, spec: SweepSpec) -> tuple[Flow, Snapshot]:
    """Check ``spec``, capture the code once, and store the sweep (status ``created``).

    The first trial is prepared (nothing stored) so that a missing input or environment
    variable is reported now, not by every trial. Returns the flow and the snapshot its
    trials share (hand it to :func:`run_sweep`).
    """
    from cairn.orchestration.runs import Snapshot, prepare_execution

    checked = check_sweep(ctx, spec)
    snapshot = Snapshot.capture(ctx)
    first = checked.trials[0] if checked.trials else {
        d.name: (d.values[0] if d.values else (int(d.low) if d.integer else d.low))  # type: ignore[arg-type]
        for d in checked.dims}
    prepare_execution(ctx, _request(spec, first, title=None, tags=()), step=checked.step,
                      snapshot=snapshot)
    options = {
        "parallel": checked.parallel,
        "total": checked.total,
        "direction": "maximize" if spec.maximize else "minimize",
        "varied": [d.name for d in checked.dims if d.continuous or len(d.values or ()) > 1]
        + sorted({k for s in spec.parameter_sets for k in s}),
    }
    nodes = tuple(NewFlowNode(name=str(i), kind="trial", parameters=values)
                  for i, values in enumerate(checked.trials or (), 1))
    flow = ctx.store.create_flow(NewFlow(
        project_id=ctx.project_id, kind=KIND, name=spec.title, definition=spec.to_dict(),
        options=options, nodes=nodes))
    return flow, snapshot


def _request(spec: SweepSpec, values: Mapping[str, Any], *, title: str | None,
             tags: Sequence[str]) -> Any:
    from cairn.orchestration.runs import RunRequest

    return RunRequest(step=spec.step, parameters=dict(values), inputs=dict(spec.inputs),
                      variables=dict(spec.variables), title=title, tags=tuple(tags),
                      reuse=spec.reuse, priority=spec.priority, environment=spec.environment)


def _show(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


# -- driving a sweep -----------------------------------------------------------------


def run_sweep(
    ctx: Context,
    flow: Flow,
    *,
    snapshot: Snapshot | None = None,
    on_event: EventCallback | None = None,
) -> Flow:
    """Run the sweep ``flow`` (status ``created``) to its end in this process; the final flow.

    Blocks. SIGINT/SIGTERM (when called from the main thread) and ``cairn task stop``
    stop it: running trials are stopped, pending ones skipped.
    """
    return _Driver(ctx, flow, snapshot, on_event).run()


@dataclass
class _Trial:
    name: str
    parameters: dict[str, Any]
    execution: Execution
    optuna_trial: Any = None
    thread: threading.Thread | None = None
    final: Execution | None = None
    error: BaseException | None = None
    last_seq: int | None = None  # the seq of the last metric point read
    index: int = 0  # points of the target metric seen (the step when a point has none)
    last_step: int = -1
    latest: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    pruned: str | None = None  # why, once pruned
    stopped: str | None = None  # why the sweep stopped it


class _Driver:
    def __init__(self, ctx: Context, flow: Flow, snapshot: Snapshot | None,
                 on_event: EventCallback | None) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.flow = flow
        self.spec = SweepSpec.from_dict(flow.definition)
        self.snapshot = snapshot
        self.say = on_event or (lambda text: None)
        self.running: dict[str, _Trial] = {}
        self.pending: list[tuple[str, dict[str, Any]]] = [
            (n.name, dict(n.parameters)) for n in flow.nodes if n.status == NodeStatus.PENDING]
        self.asked = len(flow.nodes)  # Bayesian: trials asked so far
        self.batch: set[str] = set()  # Bayesian with a batch size: the batch in flight
        self.halt: tuple[FlowStatus, str] | None = None
        self.failures = 0
        self.interrupted = False
        self.study: Any = None
        self.stop_ast: Any = None
        self.bayesian = self.spec.type == "bayesian_tpe"

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> Flow:
        from cairn.orchestration.background import HOST

        if not self.store.update_flow(self.flow.id, expect=[FlowStatus.CREATED],
                                      status=FlowStatus.RUNNING, started_at=now(), host=HOST,
                                      pid=os.getpid()):
            current = self.store.get_flow(self.flow.project_id, KIND, self.flow.id)
            raise ExecutionError(f"task #{current.counter} is {current.status}, not waiting "
                                 "to start", "start a new one with `cairn task run`")
        previous = self._catch_signals()
        try:
            self._prepare()
            while True:
                self._check_stop()
                if self.halt is None:
                    self._launch()
                self._poll()
                if not self.running and (self.halt is not None or self._exhausted()):
                    break
                time.sleep(POLL_SECONDS)
            return self._finish()
        except BaseException as exc:
            self._crash(exc)
            raise
        finally:
            self._restore_signals(previous)

    def _prepare(self) -> None:
        from cairn.orchestration.runs import Snapshot
        from cairn.project.expressions import compile_expression

        self.step = self.ctx.config.get_step(self.spec.step)
        where = f"task '{self.spec.name}'" if self.spec.name else "the sweep"
        self.dims = spaces.dimensions(self.spec.variants, where=where)
        self.total = int(self.flow.options.get("total") or len(self.flow.nodes))
        self.parallel = int(self.flow.options.get("parallel") or 1)
        if self.spec.stop_condition:
            self.stop_ast = compile_expression(self.spec.stop_condition)
        if self.bayesian or self.spec.prune != "none":
            self.study = self._make_study()
        if self.snapshot is None:
            self.snapshot = Snapshot.capture(self.ctx)
        if self.flow.stop_requested:
            self._halt(FlowStatus.STOPPED, "stopped before it started")

    def _make_study(self) -> Any:
        optuna = _optuna()
        planned = self.total
        sampler: Any
        if self.bayesian:
            startup = min(TPE_STARTUP_MAX, max(1, planned // 2))
            sampler = optuna.samplers.TPESampler(seed=self.spec.seed, n_startup_trials=startup,
                                                 constant_liar=True)
        else:  # the plan is fixed; the study only judges intermediate values
            sampler = optuna.samplers.RandomSampler(seed=0)
        if self.spec.prune == "median":
            pruner: Any = optuna.pruners.MedianPruner(
                n_startup_trials=max(2, min(5, planned // 4)), n_warmup_steps=0)
        elif self.spec.prune == "halving":
            pruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=1, reduction_factor=2, min_early_stopping_rate=0)
        else:
            pruner = optuna.pruners.NopPruner()
        return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)

    def _exhausted(self) -> bool:
        if self.bayesian:
            return self.asked >= self.total
        return not self.pending

    def _catch_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            def handle(signum: int, frame: object) -> None:
                self.interrupted = True

            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handle)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _check_stop(self) -> None:
        if self.halt is not None:
            return
        if self.interrupted:
            self._halt(FlowStatus.STOPPED, "stopped by a signal (Ctrl-C or SIGTERM)")
        elif self.store.flow_stop_requested(self.flow.id):
            self._halt(FlowStatus.STOPPED, "stopped by `cairn task stop`")

    # -- starting trials ---------------------------------------------------------------
    def _active(self) -> int:
        """Trials holding a slot (a pruned or stopped one gives its slot up at once)."""
        return sum(1 for t in self.running.values() if not (t.pruned or t.stopped))

    def _launch(self) -> None:
        while self.halt is None and self._active() < self.parallel and not self._exhausted():
            if self.bayesian and self.spec.batch_size and self.batch:
                if len(self.batch) >= self.spec.batch_size:
                    if any(n in self.running for n in self.batch):
                        return  # the next batch waits for this one
                    self.batch.clear()
            self._start_next()

    def _start_next(self) -> None:
        optuna_trial = self.study.ask() if self.study is not None else None
        if self.bayesian:
            values = {d.name: spaces.suggest(optuna_trial, d) for d in self.dims}
            self.asked += 1
            name = str(self.asked)
            self.store.add_flow_nodes(self.flow.id, [NewFlowNode(name, "trial", values)])
            self.batch.add(name)
        else:
            name, values = self.pending.pop(0)
        from cairn.orchestration.runs import create_or_reuse

        request = _request(self.spec, values, title=f"{self.spec.title} trial {name}",
                           tags=(f"task-{self.flow.counter}",))
        try:
            execution, reused = create_or_reuse(self.ctx, request, step=self.step,
                                                snapshot=self.snapshot)
        except CairnError as exc:
            self._node(name, status=NodeStatus.ERROR, detail=exc.message, ended_at=now())
            self._tell(optuna_trial, None)
            self.say(f"trial {name} could not start: {exc.message}")
            self._failed(name, exc.message)
            return
        trial = _Trial(name, values, execution, optuna_trial)
        if reused:
            trial.latest = dict(execution.metrics)
            value = self._target(execution.metrics)
            self._node(name, status=NodeStatus.REUSED, execution_id=execution.id, value=value,
                       detail=f"reused #{execution.counter}", started_at=now(), ended_at=now())
            self._tell(optuna_trial, value)
            self.say(f"trial {name} reused #{execution.counter} ({_show(values)})"
                     + self._value_text(value))
            self._check_condition(trial)
            return
        self._node(name, status=NodeStatus.RUNNING, execution_id=execution.id,
                   started_at=now())
        trial.thread = threading.Thread(target=self._supervise, args=(trial,),
                                        name=f"cairn-trial-{name}", daemon=True)
        self.running[name] = trial
        trial.thread.start()
        self.say(f"trial {name} started as #{execution.counter} ({_show(values)})")

    def _supervise(self, trial: _Trial) -> None:
        from cairn.orchestration.runs import supervise

        try:
            trial.final = supervise(self.ctx, trial.execution)
        except BaseException as exc:  # noqa: BLE001 - reported by the driver's thread
            trial.error = exc

    # -- watching trials ---------------------------------------------------------------
    def _poll(self) -> None:
        for trial in list(self.running.values()):
            done = trial.thread is None or not trial.thread.is_alive()
            self._read_metrics(trial)
            if done:
                del self.running[trial.name]
                self._settle(trial)
            elif not (trial.pruned or trial.stopped):
                self._check_condition(trial)

    def _read_metrics(self, trial: _Trial) -> None:
        """Take in the trial's new metric points: report each new step of the target
        metric to the study and ask its pruner (as Optuna's ``report``/``should_prune``)."""
        if self.spec.target_metric is None and self.stop_ast is None:
            return
        new = self.store.get_metrics(trial.execution.id, after_seq=trial.last_seq)
        if new:
            trial.last_seq = new[-1].seq
        target = self.spec.target_metric
        for point in new:
            trial.latest[point.key] = point.value
            if point.key != target or trial.pruned:
                continue
            trial.index += 1
            trial.value = point.value
            step = point.step if point.step is not None else trial.index
            if (self.study is None or trial.optuna_trial is None or step <= trial.last_step
                    or math.isnan(point.value)):
                continue
            trial.optuna_trial.report(self.spec.score(point.value), step)
            trial.last_step = step
            if self.spec.prune != "none" and not (trial.stopped or trial.final):
                if trial.optuna_trial.should_prune():
                    trial.pruned = self._prune_reason(trial)
                    self._stop_execution(trial.execution)
                    self.say(f"trial {trial.name} (#{trial.execution.counter}) {trial.pruned}")
        if new and trial.value is not None:
            self._node(trial.name, value=trial.value)

    def _prune_reason(self, trial: _Trial) -> str:
        metric, step, value = self.spec.target_metric, trial.last_step, trial.value
        head = f"pruned at step {step}: {metric} {_num(value)}"
        if self.spec.prune == "median":
            optuna = _optuna()
            scores = [t.intermediate_values[step] for t in self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if step in t.intermediate_values]
            if scores:
                median = statistics.median(scores)
                if self.spec.target_value is not None:
                    return (f"{head} is {_num(-self.spec.score(value or 0))} from the target "
                            f"{_num(self.spec.target_value)}, farther than the median "
                            f"{_num(-median)} of completed trials")
                raw = median if self.spec.maximize else -median
                side = "below" if self.spec.maximize else "above"
                return f"{head} {side} the median {_num(raw)} of completed trials at that step"
            return f"{head} worse than the median of completed trials"
        return (f"{head} not in the better half of the trials that reached step {step} "
                "(successive halving)")

    def _check_condition(self, trial: _Trial) -> None:
        if self.stop_ast is None or self.halt is not None:
            return
        from cairn.project.expressions import ExpressionError, MissingValue, evaluate

        names = {"metadata": trial.latest, "parameter": trial.parameters,
                 "parameters": trial.parameters}
        try:
            met = bool(evaluate(self.stop_ast, names))
        except MissingValue:
            return
        except ExpressionError as exc:
            log.warning("stop condition of task #%s: %s", self.flow.counter, exc)
            return
        if met:
            detail = (f"stop condition `{self.spec.stop_condition}` met by trial {trial.name} "
                      f"(#{trial.execution.counter})")
            self.say(detail)
            self._halt(FlowStatus.COMPLETE, detail, keep=trial.name)

    def _settle(self, trial: _Trial) -> None:
        """Record how a finished trial ended and tell the study."""
        if trial.error is not None:
            raise trial.error
        ex = trial.final or self.store.get_execution(self.flow.project_id, trial.execution.id)
        trial.latest.update({k: v for k, v in ex.metrics.items()})
        value = self._target(ex.metrics)
        ended = {"ended_at": now(), "execution_id": ex.id}
        if trial.pruned and ex.status != Status.COMPLETE:
            self._node(trial.name, status=NodeStatus.PRUNED, detail=trial.pruned,
                       value=trial.value, **ended)
            if trial.optuna_trial is not None:
                self.study.tell(trial.optuna_trial, state=_optuna().trial.TrialState.PRUNED)
            return
        if ex.status == Status.COMPLETE:
            self._node(trial.name, status=NodeStatus.COMPLETE, value=value, **ended)
            self._tell(trial.optuna_trial, value)
            self.say(f"trial {trial.name} (#{ex.counter}) complete" + self._value_text(value))
            self._check_condition(trial)
            return
        if ex.status == Status.STOPPED:
            why = trial.stopped or "stopped (by `cairn stop`)"
            self._node(trial.name, status=NodeStatus.STOPPED, detail=why, value=trial.value,
                       **ended)
            self._tell(trial.optuna_trial, None)
            self.say(f"trial {trial.name} (#{ex.counter}) {why}")
            return
        status = NodeStatus.CRASHED if ex.status == Status.CRASHED else NodeStatus.ERROR
        detail = ex.status_detail or str(ex.status)
        self._node(trial.name, status=status, detail=detail, value=trial.value, **ended)
        self._tell(trial.optuna_trial, None)
        self.say(f"trial {trial.name} (#{ex.counter}) {status}: {detail}")
        self._failed(trial.name, detail)

    def _failed(self, name: str, detail: str) -> None:
        self.failures += 1
        if self.spec.on_child_error == "stop-all-and-error":
            self._halt(FlowStatus.ERROR, f"trial {name} failed ({detail}); on-child-error is "
                                         "stop-all-and-error")

    def _halt(self, status: FlowStatus, detail: str, *, keep: str | None = None) -> None:
        """End the sweep: no new trials, running ones (but ``keep``) stopped."""
        if self.halt is not None:
            return
        self.halt = (status, detail)
        for trial in self.running.values():
            if trial.name != keep and not trial.pruned and not trial.stopped:
                trial.stopped = ("stopped: " + detail) if status != FlowStatus.STOPPED \
                    else "stopped with the task"
                self._stop_execution(trial.execution)

    def _stop_execution(self, execution: Execution) -> None:
        """Stop a trial's execution. Its supervisor is a thread of this process, which polls
        the stop request; signalling the supervisor's pid would signal this driver."""
        from cairn.orchestration.scheduler import Scheduler

        current = self.store.get_execution(execution.project_id, execution.id)
        if current.status.is_final:
            return
        if current.pid == os.getpid():
            self.store.request_stop(current.id)
            return
        try:
            Scheduler(self.ctx).stop(current)
        except ExecutionError:
            pass  # it ended meanwhile

    # -- the end -----------------------------------------------------------------------
    def _finish(self) -> Flow:
        why = self.halt[1] if self.halt else "the sweep ended"
        for name, _ in self.pending:
            self._node(name, status=NodeStatus.SKIPPED, detail=f"not started: {why}")
        flow = self.store.get_flow(self.flow.project_id, KIND, self.flow.id)
        result = summarize(self.store, flow)
        counts = result["counts"]
        succeeded = counts.get("complete", 0) + counts.get("reused", 0)
        if self.halt is not None:
            status, detail = self.halt
        elif self.failures and self.spec.on_child_error == "continue-and-error":
            status = FlowStatus.ERROR
            detail = f"{self.failures} of {len(flow.nodes)} trials failed"
        elif succeeded == 0:
            status, detail = FlowStatus.ERROR, "no trial completed"
        else:
            status, detail = FlowStatus.COMPLETE, None
        if result.get("problem"):
            detail = f"{detail}; {result['problem']}" if detail else result["problem"]
        self.store.update_flow(self.flow.id, expect=[FlowStatus.RUNNING], status=status,
                               ended_at=now(), status_detail=detail, result=result)
        final = self.store.get_flow(self.flow.project_id, KIND, self.flow.id)
        best = result.get("best")
        if best:
            self.say(f"best: trial {best['trial']} (#{best['counter']}) "
                     f"{result['metric']}={_num(best['value'])} ({_show(best['parameters'])})")
        if result.get("problem"):
            self.say(result["problem"])
        return final

    def _crash(self, exc: BaseException) -> None:
        for name, _ in self.pending:
            try:
                self._node(name, status=NodeStatus.SKIPPED, detail="not started: the sweep's "
                           "driver failed")
            except Exception:  # noqa: BLE001 - best effort while failing
                break
        for trial in self.running.values():
            try:
                self._stop_execution(trial.execution)
            except Exception:  # noqa: BLE001 - best effort while failing
                log.exception("could not stop trial %s", trial.name)
        try:
            self.store.update_flow(self.flow.id, expect=[FlowStatus.RUNNING],
                                   status=FlowStatus.CRASHED, ended_at=now(),
                                   status_detail=f"the sweep's driver failed: {exc!r}")
        except Exception:  # noqa: BLE001
            log.exception("could not record the crash of task #%s", self.flow.counter)

    # -- helpers -----------------------------------------------------------------------
    def _node(self, name: str, **fields: Any) -> None:
        self.store.update_flow_node(self.flow.id, name, **fields)

    def _target(self, metrics: Mapping[str, Any]) -> float | None:
        metric = self.spec.target_metric
        value = metrics.get(metric) if metric else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def _tell(self, optuna_trial: Any, value: float | None) -> None:
        if optuna_trial is None or self.study is None:
            return
        if value is None:
            self.study.tell(optuna_trial, state=_optuna().trial.TrialState.FAIL)
        else:
            self.study.tell(optuna_trial, self.spec.score(value))

    def _value_text(self, value: float | None) -> str:
        if self.spec.target_metric is None or value is None:
            return ""
        return f": {self.spec.target_metric}={_num(value)}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


# -- reading sweeps --------------------------------------------------------------------


def _score_of(spec: SweepSpec, node: FlowNode) -> float:
    return spec.score(node.value) if node.value is not None else -math.inf


def ranked_trials(flow: Flow) -> list[FlowNode]:
    """The trials best first: completed ones with a value by score, then pruned ones by
    their last value, running, other completed, failed/stopped, and never-started ones."""
    spec = SweepSpec.from_dict(flow.definition)

    def key(node: FlowNode) -> tuple[int, float, int]:
        if node.status.succeeded and node.value is not None:
            group = 0
        elif node.status == NodeStatus.PRUNED:
            group = 1
        elif node.status == NodeStatus.RUNNING:
            group = 2
        elif node.status.succeeded:
            group = 3
        elif node.status in (NodeStatus.PENDING, NodeStatus.SKIPPED):
            group = 5
        else:
            group = 4
        return group, -_score_of(spec, node), node.position

    return sorted(flow.nodes, key=key)


def best_trial(flow: Flow) -> FlowNode | None:
    """The completed (or reused) trial with the best target metric, if any reported it."""
    best = ranked_trials(flow)[:1]
    if best and best[0].status.succeeded and best[0].value is not None:
        return best[0]
    return None


def summarize(store: MetadataStore, flow: Flow) -> dict[str, Any]:
    """The ``result`` a sweep ends with: counts by status, the best trial, and a problem
    sentence when no completed trial reported the target metric."""
    spec = SweepSpec.from_dict(flow.definition)
    counts: dict[str, int] = {}
    for node in flow.nodes:
        counts[node.status.value] = counts.get(node.status.value, 0) + 1
    result: dict[str, Any] = {"metric": spec.target_metric, "counts": counts,
                              "goal": spec.describe_goal(), "best": None}
    best = best_trial(flow)
    if best is not None and best.execution_id:
        ex = store.get_execution(flow.project_id, best.execution_id)
        result["best"] = {"trial": best.name, "execution_id": ex.id, "counter": ex.counter,
                          "value": best.value, "parameters": dict(best.parameters)}
    elif spec.target_metric:
        done = [n for n in flow.nodes if n.status.succeeded and n.execution_id]
        if done:
            reported: set[str] = set()
            for node in done:
                ex = store.get_execution(flow.project_id, node.execution_id or "")
                reported.update(k for k, v in ex.metrics.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool))
            result["problem"] = missing_metric_text(spec.target_metric, sorted(reported))
    return result


def missing_metric_text(metric: str, reported: Sequence[str]) -> str:
    """Says that no completed trial reported ``metric``, and what they did report."""
    import difflib

    text = f"no completed trial reported the target metric '{metric}'"
    close = difflib.get_close_matches(metric, reported, n=1, cutoff=0.6)
    if close:
        return f"{text}; did you mean '{close[0]}'?"
    if reported:
        return f"{text}; they reported: {', '.join(reported)}"
    return f"{text}; they reported no numeric metrics"


def stop_sweep(ctx: Context, ref: str | int) -> Flow:
    """Ask the driver of sweep ``ref`` to stop it (running trials stopped, pending skipped)."""
    reap_sweeps(ctx)
    flow = ctx.store.get_flow(ctx.project_id, KIND, ref)
    if flow.status.is_final:
        raise ExecutionError(f"task #{flow.counter} already ended ({flow.status})",
                             "only a created or running task can be stopped")
    ctx.store.request_flow_stop(flow.id)
    return ctx.store.get_flow(ctx.project_id, KIND, flow.id)


def reap_sweeps(ctx: Context) -> int:
    """Mark running sweeps of this host whose driver process died as crashed."""
    from cairn.orchestration.background import dead_drivers
    from cairn.orchestration.scheduler import Scheduler

    count = 0
    for flow in dead_drivers(ctx, KIND):
        Scheduler(ctx).reap()  # its trials' executions, supervised by the dead driver
        if not ctx.store.update_flow(
                flow.id, expect=[FlowStatus.RUNNING], status=FlowStatus.CRASHED, ended_at=now(),
                status_detail=f"its driver (pid {flow.pid}) ended unexpectedly"):
            continue
        for node in ctx.store.get_flow(ctx.project_id, KIND, flow.id).nodes:
            if node.status == NodeStatus.RUNNING:
                ctx.store.update_flow_node(flow.id, node.name, status=NodeStatus.CRASHED,
                                           ended_at=now(), detail="the task's driver died")
            elif node.status == NodeStatus.PENDING:
                ctx.store.update_flow_node(flow.id, node.name, status=NodeStatus.SKIPPED,
                                           detail="not started: the task's driver died")
        count += 1
    return count


def start_detached(ctx: Context, flow: Flow) -> int:
    """Drive the sweep from a background process (logging to the logs folder); its pid."""
    from cairn.orchestration.background import start_background

    return start_background(ctx, "cairn.orchestration.sweeps", flow.id, f"task-{flow.id}.log")


def main(argv: list[str]) -> int:
    """``python -m cairn.orchestration.sweeps ROOT FLOW_ID``: a detached sweep's driver."""
    from cairn.orchestration.context import Context

    root, flow_id = argv
    ctx = Context.load(root)
    try:
        flow = ctx.store.get_flow(ctx.project_id, KIND, flow_id)
        final = run_sweep(ctx, flow, on_event=lambda text: print(text, flush=True))
    finally:
        ctx.close()
    return 0 if final.status == FlowStatus.COMPLETE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
