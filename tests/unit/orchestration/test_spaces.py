"""Parameter spaces: what each variant style gives and which trials each task type plans."""

from __future__ import annotations

import pytest

from cairn.errors import ParameterError
from cairn.orchestration import spaces
from cairn.orchestration.spaces import dimension, dimensions, parse_spec, plan
from cairn.orchestration.sweeps import SweepSpec, guess_direction
from cairn.project.blueprints import VariantParameter as V


def values(style: str, **rules: object) -> list[object]:
    return list(dimension(V("x", style, dict(rules))).values or ())


def test_single_and_multiple() -> None:
    assert values("single", value=3) == [3]
    assert values("multiple", items=[0.1, "a", True]) == [0.1, "a", True]
    assert values("multiple", items=["1", "2.5", "x"], numberify=True) == [1, 2.5, "x"]


def test_linear_includes_its_end_without_float_noise() -> None:
    assert values("linear", start=0.1, end=0.5, step=0.1) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert values("linear", start=1, end=10, step=3) == [1, 4, 7, 10]
    assert values("linear", start=5, end=1, step=-2) == [5, 3, 1]
    assert values("linear", start=1, end=2, step=0.4, integerify=True) == [1, 2]


def test_logspace_is_base_to_evenly_spaced_exponents() -> None:
    assert values("logspace", start=-4, end=-1, count=4) == [0.0001, 0.001, 0.01, 0.1]
    assert values("logspace", start=1, end=3, count=3, base=2) == [2, 4, 8]
    assert values("logspace", start=2, end=5, count=1) == [100]
    assert values("logspace", start=3, end=7, count=5, base=2, integerify=True) == [
        8, 16, 32, 64, 128]


def test_random_samples_within_bounds_and_repeat_with_a_seed() -> None:
    rules = {"min": 0.001, "max": 0.1, "count": 5, "seed": 3, "distribution": "loguniform"}
    first = values("random", **rules)
    assert len(first) == 5 and all(0.001 <= v <= 0.1 for v in first)
    assert values("random", **rules) == first
    assert values("random", **{**rules, "seed": 4}) != first
    ints = values("random", min=1, max=4, count=30, seed=1, integerify=True)
    assert set(ints) <= {1, 2, 3, 4} and all(isinstance(v, int) for v in ints)
    continuous = dimension(V("lr", "random", {"min": 0, "max": 1}))
    assert continuous.values is None and continuous.continuous


@pytest.mark.parametrize(("style", "rules", "message"), [
    ("multiple", {"items": []}, "gives no values: its parameter space is empty"),
    ("linear", {"start": 1, "end": 0, "step": 0.1}, "never reaches 0"),
    ("linear", {"start": 0, "end": 1, "step": 0}, "must not be 0"),
    ("linear", {"start": 0, "end": 1}, "needs the rule 'step'"),
    ("logspace", {"start": 0, "end": 1, "count": 0}, "whole number"),
    ("random", {"min": 2, "max": 1}, "above 'max'"),
    ("random", {"min": 0, "max": 1, "distribution": "loguniform"}, "needs 'min' > 0"),
    ("random", {"min": 0, "max": 1, "distribution": "gaussian"}, "unknown distribution"),
    ("sideways", {}, "unknown style"),
    ("single", {"value": 1, "x": 2, "start": "a"}, None),
])
def test_bad_rules_say_what_is_wrong(style: str, rules: dict, message: str | None) -> None:
    if message is None:  # extra rules a style does not use are the linter's business
        assert values(style, **rules) == [1]
        return
    with pytest.raises(ParameterError, match=message):
        dimension(V("x", style, rules))


def test_grid_is_every_combination_last_varying_fastest() -> None:
    dims = dimensions([V("a", "multiple", {"items": [1, 2]}), V("b", "single", {"value": "x"}),
                       V("c", "multiple", {"items": [True, False]})])
    assert plan("grid_search", dims) == [
        {"a": 1, "b": "x", "c": True}, {"a": 1, "b": "x", "c": False},
        {"a": 2, "b": "x", "c": True}, {"a": 2, "b": "x", "c": False}]


def test_a_grid_cannot_enumerate_a_random_style_without_count() -> None:
    dims = dimensions([V("lr", "random", {"min": 0.1, "max": 1})])
    with pytest.raises(ParameterError, match="without a 'count'") as info:
        plan("grid_search", dims)
    assert "random_search" in (info.value.hint or "")


def test_random_search_draws_count_trials_reproducibly() -> None:
    dims = dimensions([V("lr", "random", {"min": 0.0001, "max": 0.1,
                                          "distribution": "loguniform"}),
                       V("width", "multiple", {"items": [8, 16, 32]})])
    trials = plan("random_search", dims, count=12, seed=5)
    assert len(trials) == 12
    assert all(0.0001 <= t["lr"] <= 0.1 and t["width"] in (8, 16, 32) for t in trials)
    assert plan("random_search", dims, count=12, seed=5) == trials
    assert len({t["lr"] for t in trials}) == 12
    with pytest.raises(ParameterError, match="needs an execution count"):
        plan("random_search", dims)


def test_manual_search_sets_or_zipped_values() -> None:
    dims = dimensions([V("epochs", "single", {"value": 3})])
    assert plan("manual_search", dims, parameter_sets=[{"lr": 0.1}, {"lr": 0.2, "epochs": 5}]) \
        == [{"epochs": 3, "lr": 0.1}, {"epochs": 5, "lr": 0.2}]
    zipped = dimensions([V("a", "multiple", {"items": [1, 2]}),
                         V("b", "multiple", {"items": ["x", "y"]}), V("c", "single", {"value": 0})])
    assert plan("manual_search", zipped) == [{"a": 1, "b": "x", "c": 0}, {"a": 2, "b": "y", "c": 0}]
    uneven = dimensions([V("a", "multiple", {"items": [1, 2]}),
                         V("b", "multiple", {"items": [1, 2, 3]})])
    with pytest.raises(ParameterError, match="different numbers of values"):
        plan("manual_search", uneven)


def test_an_empty_space_is_an_error() -> None:
    with pytest.raises(ParameterError, match="varies no parameters: its parameter space is empty"):
        plan("grid_search", [], where="task 'sweep'")
    with pytest.raises(ParameterError, match="varied twice"):
        dimensions([V("a", "single", {"value": 1}), V("a", "single", {"value": 2})])


def test_bayesian_plans_nothing_ahead_and_suggests_through_optuna() -> None:
    import optuna  # part of the test extra: `make test` installs it
    dims = dimensions([V("lr", "random", {"min": 0.001, "max": 0.1,
                                          "distribution": "loguniform"}),
                       V("layers", "random", {"min": 1, "max": 4, "integerify": True}),
                       V("act", "multiple", {"items": ["relu", "tanh"]}),
                       V("epochs", "single", {"value": 2})])
    assert plan("bayesian_tpe", dims, count=4) is None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        got = {d.name: spaces.suggest(trial, d) for d in dims}
        assert 0.001 <= got["lr"] <= 0.1 and got["layers"] in (1, 2, 3, 4)
        assert got["act"] in ("relu", "tanh") and got["epochs"] == 2
        assert set(trial.params) == {"lr", "layers", "act"}  # a single value is not asked


@pytest.mark.parametrize(("text", "style", "rules"), [
    ("lr=0.1,0.01", "multiple", {"items": [0.1, 0.01]}),
    ("opt=adam,sgd", "multiple", {"items": ["adam", "sgd"]}),
    ("epochs=3", "single", {"value": 3}),
    ("name=a:b", "single", {"value": "a:b"}),
    ("lr=logspace:-3:-1:3", "logspace", {"start": -3.0, "end": -1.0, "count": 3}),
    ("b=logspace:1:3:3:2", "logspace", {"start": 1.0, "end": 3.0, "count": 3, "base": 2.0}),
    ("d=linear:0.1:0.5:0.1", "linear", {"start": 0.1, "end": 0.5, "step": 0.1}),
    ("lr=loguniform:1e-4:1e-1", "random",
     {"min": 0.0001, "max": 0.1, "distribution": "loguniform"}),
    ("m=uniform:0:1:4", "random", {"min": 0, "max": 1, "distribution": "uniform", "count": 4}),
    ("w=int:8:64", "random", {"min": 8, "max": 64, "distribution": "uniform",
                              "integerify": True}),
])
def test_command_line_specs(text: str, style: str, rules: dict) -> None:
    variant = parse_spec(text)
    assert (variant.style, variant.rules) == (style, rules)


@pytest.mark.parametrize(("text", "message"), [
    ("lr", "expected NAME=SPEC"),
    ("lr=linear:0:1", "linear:START:END:STEP"),
    ("lr=uniform:a:b", "must be numbers"),
    ("lr=0.1,,0.2", "an empty value"),
])
def test_command_line_spec_errors(text: str, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_spec(text)
    assert message in f"{info.value.message} {info.value.hint}"


def test_task_types_are_normalized_and_unknown_ones_refused() -> None:
    assert spaces.normalize_type("Random-Search") == "random_search"
    with pytest.raises(ParameterError, match="unknown task type 'grid'") as info:
        spaces.normalize_type("grid")
    assert info.value.hint == "did you mean 'grid_search'?"
    with pytest.raises(ParameterError, match="not supported"):
        spaces.normalize_type("distributed")


def test_direction_and_scores() -> None:
    assert guess_direction("val_loss") == "minimize"
    assert guess_direction("error-rate") == "minimize"
    assert guess_direction("val_accuracy") == "maximize"
    assert guess_direction("lossless_ratio") == "maximize"  # words, not substrings
    spec = SweepSpec(step="s", target_metric="val_loss")
    assert spec.score(0.2) > spec.score(0.3)
    spec = SweepSpec(step="s", target_metric="acc", target_value=0.9)
    assert spec.score(0.89) > spec.score(0.95) > spec.score(0.5)
    spec = SweepSpec(step="s", target_metric="acc", direction="minimize")
    assert spec.score(0.1) > spec.score(0.2)
    assert SweepSpec.from_dict(spec.to_dict()) == spec


def test_without_optuna_bayesian_search_and_pruning_name_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from cairn.errors import ConfigError
    from cairn.orchestration import sweeps

    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    with pytest.raises(ConfigError) as info:
        sweeps._optuna()
    assert info.value.hint == "pip install 'cairn[sweeps]'"
