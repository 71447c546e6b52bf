"""Parameter spaces of sweeps: the values each variant style gives, and the trials each
task type plans.

A task varies step parameters, each with a ``style`` and its ``rules`` (Valohai's
spellings)::

    single     value                          one value
    multiple   items                          these values
    linear     start, end, step               start, start+step, ... up to end (inclusive)
    logspace   start, end, count, base=10     base**x for count x evenly from start to end
    random     min, max, count, distribution, seed
               distribution: uniform (default) or loguniform; a grid samples ``count``
               values (with ``seed``), random and Bayesian searches draw from [min, max]

plus ``integerify`` (round values to integers) and ``numberify`` (read text items as
numbers) for any style. Task types plan their trials from these:

- ``grid_search``: every combination, in declaration order;
- ``random_search``: ``execution-count`` trials, each value drawn independently
  (a uniform pick among the values of the discrete styles);
- ``manual_search``: one trial per ``parameter-sets`` entry (or the variants' value lists
  zipped, a one-value list repeated);
- ``bayesian_tpe``: nothing planned; the sweep driver asks Optuna's TPE sampler for each
  trial through :func:`suggest`.

Nothing here imports optuna; :func:`suggest` calls the trial object it is given.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cairn.errors import ParameterError
from cairn.project.blueprints import VariantParameter

SEARCH_TYPES = ("grid_search", "random_search", "bayesian_tpe", "manual_search")
STYLES = ("single", "multiple", "linear", "logspace", "random")
_LOG_DISTRIBUTIONS = {"loguniform", "log-uniform", "log_uniform", "logarithmic", "log"}
_DISTRIBUTIONS = ("uniform", "loguniform")


def normalize_type(raw: str) -> str:
    """The task type ``raw`` names (case-insensitive, ``-`` read as ``_``), or a clear error."""
    normalized = raw.strip().lower().replace("-", "_")
    if normalized in SEARCH_TYPES:
        return normalized
    if normalized == "distributed":
        raise ParameterError(
            "distributed tasks are not supported by cairn yet",
            f"use one of {', '.join(SEARCH_TYPES)}",
        )
    import difflib

    close = difflib.get_close_matches(normalized, SEARCH_TYPES, n=1, cutoff=0.5)
    raise ParameterError(
        f"unknown task type '{raw}': it must be one of {', '.join(SEARCH_TYPES)}",
        f"did you mean '{close[0]}'?" if close else None,
    )


@dataclass(frozen=True)
class Dimension:
    """One varied parameter, ready to enumerate, sample or suggest.

    Discrete styles have ``values``; ``random`` has ``low``/``high`` (and ``values`` too
    when its rules give a ``count``, which is what a grid uses).
    """

    name: str
    style: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    seed: int | None = None

    @property
    def continuous(self) -> bool:
        return self.style == "random"


def dimension(variant: VariantParameter, *, where: str = "") -> Dimension:
    """Check ``variant``'s rules and turn it into a :class:`Dimension`.

    Raises :class:`ParameterError` for unknown styles, missing or non-numeric rules, and
    rules that give no values (an empty list, a linear range that never reaches its end).
    """
    what = f"parameter '{variant.name}'{' of ' + where if where else ''}"
    style = (variant.style or "single").strip().lower()
    rules = dict(variant.rules or {})
    if style not in STYLES:
        raise ParameterError(f"{what} has unknown style '{variant.style}'",
                             f"styles are: {', '.join(STYLES)}")
    integer = bool(rules.get("integerify"))
    numberify = bool(rules.get("numberify"))

    def number(key: str, default: float | None = None) -> float:
        value = rules.get(key, default)
        if value is None:
            raise ParameterError(f"{what} (style {style}) needs the rule '{key}'",
                                 _RULE_HINTS[style])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ParameterError(f"rule '{key}' of {what} must be a number, "
                                     f"got {value!r}") from None
        if not math.isfinite(value):
            raise ParameterError(f"rule '{key}' of {what} must be a finite number, got {value}")
        return value

    values: list[Any]
    if style == "single":
        if "value" not in rules:
            raise ParameterError(f"{what} (style single) needs the rule 'value'",
                                 _RULE_HINTS[style])
        values = [rules["value"]]
    elif style == "multiple":
        items = rules.get("items")
        if not isinstance(items, (list, tuple)):
            raise ParameterError(f"{what} (style multiple) needs 'items', a list of values",
                                 _RULE_HINTS[style])
        values = list(items)
    elif style == "linear":
        values = _linear(number("start"), number("end"), number("step"), what)
    elif style == "logspace":
        count = number("count")
        if count < 1 or count != int(count):
            raise ParameterError(f"rule 'count' of {what} must be a whole number ≥ 1, got {count:g}")
        start, end, base = number("start"), number("end"), number("base", 10)
        if base <= 0:
            raise ParameterError(f"rule 'base' of {what} must be positive, got {base:g}")
        n = int(count)
        exponents = [start + (end - start) * i / (n - 1) for i in range(n)] if n > 1 else [start]
        values = [_tidy(base**e) for e in exponents]
    else:  # random
        low, high = number("min"), number("max")
        if low > high:
            raise ParameterError(f"{what}: 'min' {low:g} is above 'max' {high:g}")
        distribution = str(rules.get("distribution") or "uniform").strip().lower()
        log = distribution in _LOG_DISTRIBUTIONS
        if not log and distribution != "uniform":
            raise ParameterError(
                f"{what} has unknown distribution '{rules.get('distribution')}'",
                f"distributions are: {', '.join(_DISTRIBUTIONS)}",
            )
        if log and low <= 0:
            raise ParameterError(f"{what}: a loguniform distribution needs 'min' > 0, "
                                 f"got {low:g}")
        seed = rules.get("seed")
        seed = int(number("seed")) if seed is not None else None
        grid_values: tuple[Any, ...] | None = None
        if rules.get("count") is not None:
            count = number("count")
            if count < 1 or count != int(count):
                raise ParameterError(
                    f"rule 'count' of {what} must be a whole number ≥ 1, got {count:g}")
            rng = random.Random(seed)
            dim = Dimension(variant.name, style, None, low, high, log, integer, seed)
            grid_values = tuple(_dedupe(sample(dim, rng) for _ in range(int(count))))
        return Dimension(variant.name, style, grid_values, low, high, log, integer, seed)
    if numberify:
        values = [_to_number(v) for v in values]
    if integer:
        values = _dedupe(int(round(v)) if _is_number(v) else v for v in values)
    if not values:
        raise ParameterError(f"{what} gives no values: its parameter space is empty",
                             _RULE_HINTS[style])
    return Dimension(variant.name, style, tuple(values), integer=integer)


_RULE_HINTS = {
    "single": "e.g. {name: epochs, style: single, rules: {value: 3}}",
    "multiple": "e.g. {name: width, style: multiple, rules: {items: [8, 16, 32]}}",
    "linear": "e.g. {name: dropout, style: linear, rules: {start: 0.1, end: 0.5, step: 0.1}}",
    "logspace": "e.g. {name: lr, style: logspace, rules: {start: -4, end: -1, count: 4}} "
                "(gives 0.0001 ... 0.1)",
    "random": "e.g. {name: lr, style: random, rules: {min: 0.0001, max: 0.1, "
              "distribution: loguniform}}",
}


def _linear(start: float, end: float, step: float, what: str) -> list[Any]:
    if step == 0:
        raise ParameterError(f"rule 'step' of {what} must not be 0")
    if (end - start) * step < 0:
        raise ParameterError(
            f"{what} gives no values: a linear range from {start:g} with step {step:g} "
            f"never reaches {end:g}",
            "swap 'start' and 'end', or change the sign of 'step'",
        )
    count = int(math.floor((end - start) / step + 1e-9)) + 1
    if count > 100_000:
        raise ParameterError(f"{what} gives {count} values; that is too many for a sweep",
                             "use a larger 'step'")
    whole = all(float(x).is_integer() for x in (start, end, step))
    return [int(start + i * step) if whole else _tidy(start + i * step) for i in range(count)]


def _tidy(value: float) -> float:
    """``value`` without float noise (0.30000000000000004 → 0.3)."""
    return float(f"{value:.12g}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _dedupe(values: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def sample(dim: Dimension, rng: random.Random) -> Any:
    """One value of ``dim`` drawn with ``rng``: uniform over its values, or its range."""
    if not dim.continuous:
        assert dim.values is not None
        return dim.values[rng.randrange(len(dim.values))]
    assert dim.low is not None and dim.high is not None
    if dim.integer:
        if dim.log:
            value = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high + 1)))
            return min(int(math.floor(value)), int(math.floor(dim.high)))
        return rng.randint(math.ceil(dim.low), math.floor(dim.high))
    if dim.log:
        return _tidy(math.exp(rng.uniform(math.log(dim.low), math.log(dim.high))))
    return _tidy(rng.uniform(dim.low, dim.high))


def suggest(trial: Any, dim: Dimension) -> Any:
    """Ask an Optuna trial for ``dim``'s value (``single`` needs no asking)."""
    if not dim.continuous:
        assert dim.values is not None
        if len(dim.values) == 1:
            return dim.values[0]
        return trial.suggest_categorical(dim.name, list(dim.values))
    assert dim.low is not None and dim.high is not None
    if dim.integer:
        return trial.suggest_int(dim.name, math.ceil(dim.low), math.floor(dim.high), log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)


def dimensions(variants: Sequence[VariantParameter], *, where: str = "") -> list[Dimension]:
    """The dimensions of ``variants``; a parameter named twice is an error."""
    seen: set[str] = set()
    out = []
    for variant in variants:
        if variant.name in seen:
            raise ParameterError(f"parameter '{variant.name}' is varied twice"
                                 f"{' in ' + where if where else ''}",
                                 "give each parameter one style and its rules")
        seen.add(variant.name)
        out.append(dimension(variant, where=where))
    return out


def grid(dims: Sequence[Dimension]) -> list[dict[str, Any]]:
    """Every combination of the dimensions' values (the last one varies fastest)."""
    for dim in dims:
        if dim.values is None:
            raise ParameterError(
                f"parameter '{dim.name}' has style random without a 'count', so a grid "
                "cannot enumerate it",
                "give it a 'count' (how many values to sample for the grid), or use "
                "type random_search or bayesian_tpe",
            )
    names = [d.name for d in dims]
    return [dict(zip(names, combo))
            for combo in itertools.product(*(d.values or () for d in dims))]


def random_trials(dims: Sequence[Dimension], count: int, seed: int | None) -> list[dict[str, Any]]:
    """``count`` trials, each value drawn independently (reproducible for a seed)."""
    rng = random.Random(seed)
    return [{d.name: sample(d, rng) for d in dims} for _ in range(count)]


def manual_trials(
    dims: Sequence[Dimension], parameter_sets: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One trial per parameter set (over the one-value dimensions), or the dimensions'
    value lists zipped when there are no sets."""
    fixed = {d.name: d.values[0] for d in dims if d.values is not None and len(d.values) == 1}
    if parameter_sets:
        return [{**fixed, **dict(s)} for s in parameter_sets]
    lengths = {d.name: len(d.values) for d in dims if d.values is not None and len(d.values) > 1}
    for d in dims:
        if d.values is None:
            raise ParameterError(
                f"parameter '{d.name}' has style random without a 'count'; manual_search "
                "needs explicit values", "use parameter-sets, or style multiple")
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ParameterError(
            f"manual_search pairs the parameters' values trial by trial, but they have "
            f"different numbers of values ({listed})",
            "give every varied parameter the same number of values, or use parameter-sets",
        )
    n = next(iter(lengths.values()), 1)
    return [{d.name: (d.values[i] if len(d.values) > 1 else d.values[0])  # type: ignore[index,arg-type]
             for d in dims} for i in range(n)]


def plan(
    task_type: str,
    dims: Sequence[Dimension],
    *,
    parameter_sets: Sequence[Mapping[str, Any]] = (),
    count: int | None = None,
    seed: int | None = None,
    where: str = "the task",
) -> list[dict[str, Any]] | None:
    """The trials a task type runs, in order; None for ``bayesian_tpe`` (asked as it goes).

    Raises :class:`ParameterError` for an empty space and for a missing execution count.
    """
    if not dims and not parameter_sets:
        raise ParameterError(
            f"{where} varies no parameters: its parameter space is empty",
            "give it parameters with a style and rules (in cairn.yaml) or "
            "`-p NAME=VALUES` on the command line, e.g. -p lr=0.1,0.01",
        )
    if task_type in ("random_search", "bayesian_tpe") and not count:
        raise ParameterError(
            f"{where} is a {task_type} and needs an execution count",
            "set `execution-count` in the task, or pass --execution-count N",
        )
    if task_type == "grid_search":
        trials = grid(dims)
    elif task_type == "random_search":
        trials = random_trials(dims, int(count or 0), seed)
    elif task_type == "manual_search":
        trials = manual_trials(dims, parameter_sets)
    else:
        return None
    if not trials:
        raise ParameterError(f"{where} has no trials: its parameter space is empty")
    return trials


# -- the command line's way to describe a space ---------------------------------------


SPEC_HELP = """\
NAME=SPEC, repeatable. SPEC is one of:
  v1,v2,v3                    these values (style multiple; one value: style single)
  linear:START:END:STEP       START, START+STEP, ... up to END
  logspace:START:END:COUNT[:BASE]   BASE**x for COUNT x from START to END (BASE 10)
  uniform:MIN:MAX[:COUNT]     drawn uniformly from [MIN, MAX] (style random)
  loguniform:MIN:MAX[:COUNT]  drawn log-uniformly (for learning rates)
  int:MIN:MAX[:COUNT]         a whole number drawn from [MIN, MAX]
A grid needs COUNT for the drawn styles (how many values to sample)."""


def parse_spec(text: str) -> VariantParameter:
    """A :class:`VariantParameter` from the command line's ``NAME=SPEC`` (see SPEC_HELP)."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ParameterError(f"expected NAME=SPEC, got {text!r}", "e.g. -p lr=0.1,0.01")
    kind, colon, rest = spec.partition(":")
    kind = kind.strip().lower()
    parts = rest.split(":") if colon else []

    def numbers(least: int, most: int, usage: str) -> list[float]:
        if not least <= len(parts) <= most:
            raise ParameterError(f"cannot read {text!r}", f"expected {name}={usage}")
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise ParameterError(f"cannot read {text!r}: the fields after '{kind}:' must be "
                                 "numbers", f"expected {name}={usage}") from None

    def as_int(v: float) -> int | float:
        return int(v) if v.is_integer() else v

    if colon and kind == "linear":
        start, end, step = numbers(3, 3, "linear:START:END:STEP")
        return VariantParameter(name, "linear",
                                {"start": as_int(start), "end": as_int(end), "step": as_int(step)})
    if colon and kind == "logspace":
        got = numbers(3, 4, "logspace:START:END:COUNT[:BASE]")
        rules: dict[str, Any] = {"start": got[0], "end": got[1], "count": as_int(got[2])}
        if len(got) == 4:
            rules["base"] = got[3]
        return VariantParameter(name, "logspace", rules)
    if colon and kind in ("uniform", "loguniform", "log-uniform", "int", "random"):
        usage = f"{kind}:MIN:MAX[:COUNT]"
        got = numbers(2, 3, usage)
        rules = {"min": as_int(got[0]), "max": as_int(got[1]),
                 "distribution": "loguniform" if kind in ("loguniform", "log-uniform")
                 else "uniform"}
        if kind == "int":
            rules["integerify"] = True
        if len(got) == 3:
            rules["count"] = as_int(got[2])
        return VariantParameter(name, "random", rules)
    items = [_to_number(v.strip()) for v in spec.split(",")]
    if any(v == "" for v in items):
        raise ParameterError(f"cannot read {text!r}: an empty value in the list",
                             f"expected {name}=v1,v2,...")
    if len(items) == 1:
        return VariantParameter(name, "single", {"value": items[0]})
    return VariantParameter(name, "multiple", {"items": items})
