"""Resolving supplied parameter values against a step's declarations."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.errors import ParameterError
from cairn.project import Parameter, Step, resolve_parameters

STEP = Step(
    name="train",
    image="python:3.11",
    command=["python train.py {parameters}"],
    parameters=[
        Parameter("epochs", type="integer", default=10, min=1, max=100),
        Parameter("lr", type="float", default=0.01, min=0.0),
        Parameter("optimizer", default="adam", choices=["adam", "sgd"]),
        Parameter("augment", type="flag"),
        Parameter("shuffle", type="flag", default=True),
        Parameter("note", optional=True),
        Parameter("seeds", type="integer", multiple="repeat", optional=True),
    ],
)


def resolve(**supplied: Any) -> dict[str, Any]:
    return resolve_parameters(STEP, supplied)


def error_of(step: Step = STEP, **supplied: Any) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(step, supplied)
    return info.value


def test_defaults_fill_in_everything() -> None:
    assert resolve() == {
        "epochs": 10,
        "lr": 0.01,
        "optimizer": "adam",
        "augment": False,
        "shuffle": True,
        "note": None,
        "seeds": None,
    }


def test_cli_strings_are_coerced() -> None:
    values = resolve(epochs="5", lr="0.1", augment="yes", shuffle="0", note=42, seeds=["1", 2])
    assert values["epochs"] == 5 and isinstance(values["epochs"], int)
    assert values["lr"] == 0.1
    assert values["augment"] is True and values["shuffle"] is False
    assert values["note"] == "42"
    assert values["seeds"] == [1, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("False", False), ("1", True), ("0", False), ("YES", True), ("no", False)],
)
def test_flag_words(text: str, expected: bool) -> None:
    assert resolve(augment=text)["augment"] is expected


def test_single_value_for_multiple_parameter_becomes_a_list() -> None:
    assert resolve(seeds="7")["seeds"] == [7]


def test_integral_float_is_an_integer_but_fractions_are_not() -> None:
    assert resolve(epochs=5.0)["epochs"] == 5
    assert resolve(epochs="5.0")["epochs"] == 5
    err = error_of(epochs="5.5")
    assert str(err.message) == "parameter 'epochs' of step 'train': expected an integer, got '5.5'"


def test_none_means_not_supplied() -> None:
    assert resolve(epochs=None)["epochs"] == 10


def test_range_errors_name_the_allowed_range() -> None:
    err = error_of(epochs=0)
    assert err.message == (
        "parameter 'epochs' of step 'train': 0 is below the minimum; allowed range is 1 to 100"
    )
    err = error_of(lr=-1)
    assert "-1.0 is below the minimum; it must be at least 0.0" in err.message


def test_choice_errors_list_the_choices() -> None:
    err = error_of(optimizer="adamw")
    assert err.message == (
        "parameter 'optimizer' of step 'train': 'adamw' is not one of the choices: "
        "'adam', 'sgd' (did you mean 'adam'?)"
    )


def test_bad_flag_value() -> None:
    err = error_of(augment="maybe")
    assert "parameter 'augment' of step 'train': expected true or false" in err.message


def test_required_parameter_without_value() -> None:
    step = Step(name="s", parameters=[Parameter("dataset"), Parameter("n", type="integer")])
    err = error_of(step)
    assert err.message.splitlines() == [
        "parameter 'dataset' of step 's' needs a value: it has no default and is not optional",
        "parameter 'n' of step 's' needs a value: it has no default and is not optional",
    ]


def test_unknown_parameter_with_did_you_mean() -> None:
    err = error_of(epoch=3)
    assert err.message == "unknown parameter 'epoch' for step 'train' (did you mean 'epochs'?)"
    assert err.hint and "step 'train' has parameters: epochs, lr, optimizer" in err.hint


def test_all_errors_are_reported_together_one_line_each() -> None:
    err = error_of(epochs="many", lr="-2", optimizer="rmsprop", bogus=1)
    lines = err.message.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("unknown parameter 'bogus'")
    assert any("'epochs'" in line and "expected an integer, got 'many'" in line for line in lines)
    assert any("'lr'" in line and "below the minimum" in line for line in lines)
    assert any(
        "'optimizer'" in line and "'rmsprop' is not one of the choices" in line for line in lines
    )


def test_list_for_single_valued_parameter() -> None:
    err = error_of(epochs=[1, 2])
    assert "takes one value, got 2: 1, 2" in err.message
    assert err.hint and "multiple: repeat" in err.hint
    assert resolve(epochs=[3])["epochs"] == 3


def test_each_value_of_a_multiple_parameter_is_checked() -> None:
    step = Step(name="s", parameters=[Parameter("ks", type="integer", multiple="separate", min=1)])
    assert resolve_parameters(step, {"ks": [1, "2"]}) == {"ks": [1, 2]}
    err = error_of(step, ks=[1, 0])
    assert "parameter 'ks' of step 's': 0 is below the minimum" in err.message


def test_numeric_choices_compare_after_coercion() -> None:
    step = Step(name="s", parameters=[Parameter("size", type="integer", choices=[16, 32])])
    assert resolve_parameters(step, {"size": "32"}) == {"size": 32}
    assert "not one of the choices: 16, 32" in error_of(step, size="64").message
